"""The operator sees a node as full exactly when the real scheduler does: another team's pod there holds
room for its largest init container and for its RuntimeClass's overhead, not only for its app containers.

Each case fills a node of the preferred type so that one replica still fits there and a second does
not. The first replica must land on the preferred type (the operator does not count the pod as larger
than the scheduler does); the second must go to the other type at once, with no replica left
Unschedulable on the full node and no fallback (the unschedulable timeout is far longer than the test):
the operator did not count the pod as smaller than the scheduler does either.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from falapp_operator.api.names import deployment_name
from tests.builders import POOL_LABEL
from tests.cluster.builders import PrivatePools, falapp
from tests.cluster.conftest import OperatorProcess
from tests.cluster.helpers import app_pods, events_for, wait_condition, wait_placement
from tests.kube import Kubectl, condition, wait_until

GPU = "nvidia.com/gpu"


def container(name: str, requests: dict[str, str], **extra: Any) -> dict[str, Any]:
    limits = {k: v for k, v in requests.items() if k == GPU}  # extended resources need limit == request
    return {"name": name, "image": "registry.example.com/tool:1",
            "resources": {"requests": requests, **({"limits": limits} if limits else {})}, **extra}


def other_teams_pod(name: str, pool: str, containers: list[dict[str, Any]],
                    init: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    """Not the operator's: no FalApp labels; the scheduler puts it on the pool's node."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeSelector": {POOL_LABEL: pool}, "containers": containers, "initContainers": init or [],
                     "tolerations": [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}], **spec}}


@pytest.fixture
def runtime_class(kubectl: Kubectl, pools: PrivatePools) -> Iterator[str]:
    """A RuntimeClass whose pods carry 58 CPUs of overhead (the API server sets it on each pod)."""
    name = f"{pools.prefix}-heavy"
    kubectl.apply({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": name},
                   "handler": "runc", "overhead": {"podFixed": {"cpu": "58"}}})
    yield name
    kubectl.run("delete", "runtimeclass", name, "--wait=false", check=False)


def fill_and_place(kctl: Kubectl, pools: PrivatePools, app: str, pod: dict[str, Any]) -> None:
    """Replicas of 2 GPUs, 2 CPUs (1 per GPU) and 2Gi: the first fits beside `pod`, the second does not."""
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    pools.add_node("fast", gpus=8)
    pools.add_node("slow", gpus=8)
    kctl.apply(pod)
    wait_until(lambda: kctl.get("pod", pod["metadata"]["name"])["spec"].get("nodeName"), timeout=30,
               message="the other team's pod bound")
    kctl.apply(falapp(app, [fast, slow], gpus=2, replicas=1, timeout="10m"))
    first = wait_placement(kctl, app, {fast.lower(): 1})
    kctl.run("scale", f"falapp/{app}", "--replicas=2")
    pods = wait_placement(kctl, app, {fast.lower(): 1, slow.lower(): 1}, timeout=60)
    assert {p["metadata"]["uid"] for p in first} <= {p["metadata"]["uid"] for p in pods}
    assert not events_for(kctl, app, "FellBack"), "a replica was sent to the full node and had to fall back"
    unschedulable = [p["metadata"]["name"] for p in app_pods(kctl, app)
                     if (c := condition(p, "PodScheduled")) and c.get("reason") == "Unschedulable"]
    assert not unschedulable


def test_an_init_container_holds_gpus_on_its_node(kctl: Kubectl, running_operator: OperatorProcess,
                                                  pools: PrivatePools) -> None:
    # the scheduler takes max(6 of the init container, 1 of the app container) = 6 GPUs: 2 of 8 left,
    # room for one 2-GPU replica (summing both would leave room for none)
    pod = other_teams_pod("trainer", f"{pools.prefix}-fast", [container("app", {"cpu": "100m", GPU: "1"})],
                          init=[container("warm-cache", {"cpu": "100m", GPU: "6"})])
    fill_and_place(kctl, pools, "initfull", pod)


def test_a_sidecar_and_overhead_hold_cpu_on_their_node(kctl: Kubectl, running_operator: OperatorProcess,
                                                       pools: PrivatePools, runtime_class: str) -> None:
    # 2 CPUs app + 2 CPUs sidecar (it runs beside the app: summed) + 58 CPUs of overhead: 2 of 64 CPUs
    # left, room for one replica asking 2. Leaving out the overhead, or the sidecar, or taking the
    # sidecar as an ordinary init container (the larger of 2 and 2) would leave room for two or more.
    pod = other_teams_pod("batch", f"{pools.prefix}-fast", [container("app", {"cpu": "2"})],
                          init=[container("proxy", {"cpu": "2"}, restartPolicy="Always")],
                          runtimeClassName=runtime_class)
    fill_and_place(kctl, pools, "overheadfull", pod)


@pytest.mark.parametrize("waiting", [{"schedulingGates": [{"name": "example.com/admission"}]},
                                     {"schedulerName": "nobody"}], ids=["gated", "another-scheduler"])
def test_a_pod_no_scheduler_looks_at_holds_no_room_in_the_operators_view(
        kctl: Kubectl, running_operator: OperatorProcess, pools: PrivatePools, waiting: dict[str, Any]) -> None:
    """A pending pod labelled as an app's replica on a type is counted as room about to be taken; one
    with scheduling gates is not looked at by the scheduler until they go, and one for a scheduler not in
    FALAPP_SCHEDULER_NAMES perhaps never (either may wait for ever): it must not send other apps
    elsewhere. Here a tenant's such pod claims the whole fast node."""
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    pools.add_node("fast", gpus=8)
    pools.add_node("slow", gpus=16)
    kctl.apply(falapp("holder", [slow], gpus=8, replicas=1))
    wait_placement(kctl, "holder", {slow.lower(): 1})
    gated = other_teams_pod("held", f"{pools.prefix}-fast", [container("app", {"cpu": "100m", GPU: "8"})],
                            **waiting)
    gated["metadata"]["labels"] = {"fal.ai/app": "holder", "fal.ai/machine-type": fast.lower()}
    kctl.apply(gated)
    wait_until(lambda: (kctl.get("machinetype", fast.lower()).get("status") or {}).get("pendingReplicas") == 1,
               timeout=30, message="the operator sees the gated pod")
    pools.operator_sees("fast", 1)
    kctl.apply(falapp("newcomer", [fast, slow], gpus=8, replicas=1, timeout="10m"))
    wait_placement(kctl, "newcomer", {fast.lower(): 1})
    assert all(p["metadata"]["labels"]["fal.ai/machine-type"] == fast.lower() for p in app_pods(kctl, "newcomer"))


@pytest.fixture
def quota_tenant(kubectl: Kubectl) -> Iterator[Kubectl]:
    """Another tenant's namespace, whose ResourceQuota allows no GPU at all."""
    name = f"t-quota-{uuid.uuid4().hex[:6]}"
    kubectl.run("create", "namespace", name)
    tenant = kubectl.in_namespace(name)
    tenant.apply({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "gpus"},
                  "spec": {"hard": {f"requests.{GPU}": "0"}}})
    # until the controller manager has counted the namespace, the quota refuses with "status unknown"
    wait_until(lambda: (tenant.get("resourcequota", "gpus").get("status") or {}).get("hard"), timeout=30,
               message="the quota in force")
    yield tenant
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.parametrize("refusal", ["exceeded quota", "service account"])
def test_replicas_refused_for_good_hold_no_room_in_the_operators_view(
        kctl: Kubectl, running_operator: OperatorProcess, pools: PrivatePools, request: pytest.FixtureRequest,
        refusal: str) -> None:
    """A tenant's app asks for the whole fast node beyond its namespace's GPU quota, or naming a
    ServiceAccount that is not there: the operator asked for the replica, so it counted the room as
    taken until its pod came. The API server refuses the pod; once the refusal and the ask have lasted
    REFUSAL_LASTING (12 s: a tight quota refuses an app's own fallback for a moment) the room is free
    again in the operator's view, and another tenant's app that went to the slow type meanwhile moves up,
    before the ask would have expired (30 s; nothing wakes the app then)."""
    asked = time.monotonic()
    tenant, greedy, fast, slow = refused_greedy(request, pools, refusal)
    kctl.apply(falapp("newcomer", [fast, slow], gpus=8, replicas=1, timeout="10m"))
    wait_placement(kctl, "newcomer", {fast.lower(): 1}, timeout=60)
    assert time.monotonic() - asked < 28, "on the fast type only once the refused ask had expired"
    assert not app_pods(tenant, "greedy")


def refused_greedy(request: pytest.FixtureRequest, pools: PrivatePools,
                   refusal: str) -> tuple[Kubectl, dict[str, str], str, str]:
    """A fast and a slow 8-GPU node, and another tenant's app "greedy" asking for the whole fast one, its
    pod refused for good: beyond its namespace's GPU quota ("exceeded quota"), or naming a ServiceAccount
    that is not there ("service account"); once the refusal shows on the app. Returns the tenant, what
    greedy's spec adds, and the fast and slow types."""
    quota = refusal == "exceeded quota"
    tenant: Kubectl = request.getfixturevalue("quota_tenant" if quota else "tenant")
    greedy = {} if quota else {"serviceAccountName": "nobody"}
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    pools.add_node("fast", gpus=8)
    pools.add_node("slow", gpus=8)
    pools.operator_sees("fast", 1)
    tenant.apply(falapp("greedy", [fast], gpus=8, replicas=1, **greedy))
    stalled = wait_condition(tenant, "falapp", "greedy", "Stalled", "True", "ReplicaFailure", timeout=30)
    assert refusal in stalled["message"], stalled
    return tenant, greedy, fast, slow


@pytest.fixture
def tenant(kubectl: Kubectl) -> Iterator[Kubectl]:
    """Another tenant's namespace, with no quota."""
    name = f"t-{uuid.uuid4().hex[:6]}"
    kubectl.run("create", "namespace", name)
    yield kubectl.in_namespace(name)
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.mark.parametrize("refusal", ["exceeded quota", "service account"])
def test_a_tenant_whose_pods_are_refused_hides_no_room_by_scaling_to_zero_and_back(
        kctl: Kubectl, running_operator: OperatorProcess, pools: PrivatePools, request: pytest.FixtureRequest,
        refusal: str) -> None:
    """A tenant's pods are refused for good (its namespace's GPU quota; a ServiceAccount that is not
    there), as the app's Deployment says; it goes with the app's last replica: scaled to zero and back,
    the app asks again on a new Deployment that reports no refusal yet. The namespace's refusal is
    remembered, so that ask claims no room, and another tenant's app created right after it goes straight
    to the fast type. (Without: the fresh ask claimed the whole fast node for 12 s or more, so the
    newcomer went to the slow type first and moved up later, and a tenant toggling its replicas could
    hide the room from everyone.)"""
    tenant, greedy, fast, slow = refused_greedy(request, pools, refusal)
    deployment = deployment_name("greedy", fast.lower())

    def greedy_deployments() -> list[dict]:
        return [d for d in tenant.get("deployments")["items"] if d["metadata"]["name"] == deployment]
    tenant.apply(falapp("greedy", [fast], gpus=8, replicas=0, **greedy))
    wait_until(lambda: not greedy_deployments(), timeout=30, message="greedy's Deployment gone with its replicas")
    tenant.apply(falapp("greedy", [fast], gpus=8, replicas=1, **greedy))
    wait_until(greedy_deployments, timeout=30, message="greedy asking again on a new Deployment")
    kctl.apply(falapp("newcomer", [fast, slow], gpus=8, replicas=1, timeout="10m"))
    wait_placement(kctl, "newcomer", {fast.lower(): 1}, timeout=60)
    # a stay on the slow type is in the status's history (written before the move up) and in its events
    detours = [a for a in kctl.get("falapp", "newcomer")["status"].get("attempts") or []
               if a["machineType"].lower() == slow.lower()]
    detours += [e["message"] for e in events_for(kctl, "newcomer") if slow.lower() in e["message"].lower()]
    assert not detours, f"the newcomer went to the slow type first: {detours}"
    assert not app_pods(tenant, "greedy")
