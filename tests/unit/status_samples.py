"""Sample FalApp objects whose status comes from the real planner (`reconcile.app.plan` / `invalid`).

Shared by the GitOps health tests (kstatus rules, Argo CD Lua): each sample is the object a GitOps tool
would read, built from a small snapshot of the app (pods, Deployment sizes, free room).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import yaml

from falapp_operator.api import DEFAULT_CATALOG, FalAppSpec, FalAppStatus
from falapp_operator.placement import NodeFree, PodView, Surge
from falapp_operator.placement.eligibility import resolve
from falapp_operator.reconcile.app import AppSnapshot, invalid, plan
from falapp_operator.reconcile.children import AppRef, pod_template, template_hash
from tests.builders import GI, NOW, falapp_spec, free, replica

REPO = Path(__file__).resolve().parents[2]
H100, A100 = "gpu-h100", "gpu-a100"
REF = AppRef("sdxl", "team-a", "0b7f1c1e-0000-4000-8000-000000000001")


def spec(machine_types: list[str] | None = None, replicas: int = 2, gpus: int = 1) -> FalAppSpec:
    return falapp_spec(image="registry.example.com/sdxl:1.2", machineTypes=machine_types or ["GPU-H100", "GPU-A100"],
                       numGpus=gpus, replicas=replicas)


def room(nodes: int = 1) -> list[NodeFree]:
    return [free(8, 96_000, 896 * GI)] * nodes


def pod(name: str, machine_type: str = H100, *, ready: bool = False, bound: bool | None = None,
        unschedulable_for: float | None = None) -> PodView:
    since = NOW - timedelta(seconds=unschedulable_for) if unschedulable_for is not None else None
    return replica(name, machine_type, ready=ready, bound=bound, since=since)


def current_templates(app_spec: FalAppSpec) -> dict[str, str]:
    """The template hash of each listed type: the pods the Deployments create now carry it."""
    resolution = resolve(app_spec, DEFAULT_CATALOG)
    return {o.name: template_hash(pod_template(REF, app_spec, o, resolution.types[o.name]))
            for o in resolution.options}


def snapshot(app_spec: FalAppSpec, *, status: FalAppStatus | dict | None = None, counts: dict[str, int] | None = None,
             pods: list[PodView] = (), free: dict[str, list[NodeFree]] | None = None,
             generation: int = 1, old_pods: list[PodView] = (), surge: Surge | None = None,
             replica_failures: dict[str, str] | None = None, cover: Surge | None = None) -> AppSnapshot:
    """`pods` run the current spec; `old_pods` an earlier one (a rollout under way); `status` as read
    (a dict: the object's status as the API returns it)."""
    templates = current_templates(app_spec)
    pods = [replace(p, template=templates.get(p.machine_type, "")) for p in pods]
    pods += [replace(p, template="an-earlier-template") for p in old_pods]
    if not isinstance(status, FalAppStatus):
        status = FalAppStatus.model_validate(status or {})
    return AppSnapshot(ref=REF, generation=generation, spec=app_spec, status=status,
                       catalogue=list(DEFAULT_CATALOG), counts=counts or {}, surge=surge, pods=list(pods),
                       free=free if free is not None else {H100: room(), A100: room()}, now=NOW,
                       replica_failures=replica_failures or {}, cover=cover)


def falapp(status: FalAppStatus | dict, generation: int = 1, app_spec: FalAppSpec | None = None) -> dict:
    """The FalApp as `kubectl get -o json` returns it, with the planner's status (the patch written)."""
    if isinstance(status, FalAppStatus):
        status = status.to_patch()
    wire = (app_spec or spec()).model_dump(mode="json", by_alias=True, exclude_none=True)
    return {"apiVersion": "fal.ai/v1alpha1", "kind": "FalApp",
            "metadata": {"name": REF.name, "namespace": REF.namespace, "uid": REF.uid,
                         "generation": generation},
            "spec": wire, "status": copy.deepcopy(status)}


# --- the samples ---------------------------------------------------------------------------------------
def created() -> dict:
    """Just created, the operator has not looked yet: the status is the CRD's default."""
    crd = yaml.safe_load((REPO / "crds" / "fal.ai_falapps.yaml").read_text())
    return falapp(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["default"])


def new_app() -> dict:
    """First reconcile: Deployments just created, no pod yet."""
    return falapp(plan(snapshot(spec())).status)


def replicas_starting() -> dict:
    """Both replicas bound on GPU-H100, one Ready."""
    first = plan(snapshot(spec())).status
    pods = [pod("sdxl-h-1", ready=True), pod("sdxl-h-2", bound=True)]
    return falapp(plan(snapshot(spec(), status=first, counts={H100: 2}, pods=pods)).status)


def ready_app() -> dict:
    """Both replicas Ready on the preferred type."""
    pods = [pod("sdxl-h-1", ready=True), pod("sdxl-h-2", ready=True)]
    status = plan(snapshot(spec(), status=plan(snapshot(spec())).status, counts={H100: 2}, pods=pods)).status
    return falapp(status)


def ready_after_fallback() -> dict:
    """One replica on GPU-H100, one fell back to GPU-A100: both Ready (FallbackActive=True)."""
    pods = [pod("sdxl-h-1", ready=True), pod("sdxl-a-1", A100, ready=True)]
    status = plan(snapshot(spec(), counts={H100: 1, A100: 1}, pods=pods,
                           free={H100: [], A100: room()})).status
    return falapp(status)


def returning() -> dict:
    """Back to GPU-H100 make-before-break: the extra replica is starting, the wanted two are Ready.
    Ready stays True: nothing was lost, and kstatus tools must not flap."""
    pods = [pod("sdxl-h-1", ready=True), pod("sdxl-a-1", A100, ready=True),
            replace(pod("sdxl-h-2", bound=True), created=NOW - timedelta(seconds=5))]
    status = plan(snapshot(spec(), counts={H100: 2, A100: 1}, pods=pods, free={H100: [], A100: []},
                           surge=Surge(H100, A100, NOW - timedelta(seconds=10)))).status
    return falapp(status)


def rolling_out() -> dict:
    """A new image: one replica runs it, one still runs the old one (Ready=False RollingOut)."""
    status = plan(snapshot(spec(), counts={H100: 2}, pods=[pod("sdxl-h-new", ready=True)],
                           old_pods=[pod("sdxl-h-old", ready=True)])).status
    return falapp(status)


def gpu_quota() -> dict:
    """The ReplicaSet cannot create the second pod: a GPU quota (Stalled=True ReplicaFailure)."""
    status = plan(snapshot(spec(), counts={H100: 2}, pods=[pod("sdxl-h-1", ready=True)],
                           replica_failures={H100: 'pods "sdxl-h-x" is forbidden: exceeded quota: gpus'})).status
    return falapp(status)


def request_rejected() -> dict:
    """The API refused a write (here a quota on Deployments): what the controller writes."""
    message = "Deployment team-a/sdxl-gpu-h100: 403 Forbidden: exceeded quota: no-deployments"
    return falapp(invalid(REF, 1, FalAppStatus(), message, NOW, reason="RequestRejected").status)


def no_capacity() -> dict:
    """Nothing fits anywhere: the replica stays pending (Ready=False, InsufficientCapacity), not Stalled."""
    pending = [pod("sdxl-a-1", A100, unschedulable_for=300)]
    status = plan(snapshot(spec(replicas=1), counts={A100: 1}, pods=pending, free={H100: [], A100: []})).status
    return falapp(status, app_spec=spec(replicas=1))


def invalid_spec() -> dict:
    """An unknown machine type: Stalled=True, reason InvalidSpec (the planner refuses it)."""
    bad = spec(["GPU-H100", "GPU-NOPE"])
    return falapp(plan(snapshot(bad)).status, app_spec=bad)


def invalid_spec_from_validation() -> dict:
    """What the controller writes when the stored spec fails model validation."""
    status = invalid(REF, 1, FalAppStatus(), "spec.numGpus: Input should be greater than or equal to 0", NOW).status
    return falapp(status)


def spec_changed_not_observed() -> dict:
    """A Ready app whose spec the user just changed (generation 2, status still for 1)."""
    return falapp(ready_app()["status"], generation=2)


def fixed_after_invalid() -> dict:
    """Was Stalled; the user fixed the spec (generation 2) and the operator has not reconciled yet."""
    return falapp(invalid_spec()["status"], generation=2)


def deleting() -> dict:
    app = ready_app()
    app["metadata"]["deletionTimestamp"] = "2025-01-01T12:05:00Z"
    return app


# name -> (object, kstatus status, Argo CD health status)
SAMPLES = {
    "created": (created, "InProgress", "Progressing"),
    "new-app": (new_app, "InProgress", "Progressing"),
    "replicas-starting": (replicas_starting, "InProgress", "Progressing"),
    "ready": (ready_app, "Current", "Healthy"),
    "ready-after-fallback": (ready_after_fallback, "Current", "Healthy"),
    "returning": (returning, "Current", "Healthy"),
    "rolling-out": (rolling_out, "InProgress", "Progressing"),
    "gpu-quota": (gpu_quota, "Failed", "Degraded"),
    "request-rejected": (request_rejected, "Failed", "Degraded"),
    "no-capacity": (no_capacity, "InProgress", "Progressing"),
    "invalid-spec": (invalid_spec, "Failed", "Degraded"),
    "invalid-spec-validation": (invalid_spec_from_validation, "Failed", "Degraded"),
    "generation-not-observed": (spec_changed_not_observed, "InProgress", "Progressing"),
    "fixed-after-invalid": (fixed_after_invalid, "InProgress", "Progressing"),
    "deleting": (deleting, "Terminating", "Progressing"),
}
