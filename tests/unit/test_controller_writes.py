"""What one reconcile writes, in which order, and what it does with the API's refusals: the controller
with the operator's real client, against a fake API server on loopback (tests/unit/fake_api.py).
The stores are fed as the watches would feed them; no watch runs.

Order: a new Deployment before the old one shrinks or goes (make-before-break: the replacement starts
sooner), the pods to go marked in between, the app's status last (it never claims what was not
written). Refusals: transient ones (409, 429, 5xx, no answer) are raised for the worker to retry with
a growing back-off; the others are shown on the FalApp (Stalled, with the API's message) and in a
Warning event, and retried at the slowest rate."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Hashable
from datetime import datetime, timedelta

import pytest
import pytest_asyncio
from prometheus_client import REGISTRY

from falapp_operator.api import DEFAULT_CATALOG, GPU_PRODUCT_LABEL, FalAppSpec, FalAppStatus, format_time
from falapp_operator.api.names import APP_LABEL, MOVES_ANNOTATION, SURGE_ANNOTATION, TYPE_LABEL
from falapp_operator.k8s import asks as asks_module
from falapp_operator.k8s import controller as controller_module
from falapp_operator.k8s.claims import RefusedCreates
from falapp_operator.k8s.client import APPLY, MERGE, ApiError, KubeApi
from falapp_operator.k8s.controller import Controller
from falapp_operator.k8s.gate import Priority, RequestGate
from falapp_operator.placement.snapshot import FreeOnRead
from falapp_operator.reconcile.app import AppPlan, AppSnapshot
from falapp_operator.reconcile.children import AppRef, deployment_name
from falapp_operator.reconcile.observe import refused_for_good
from falapp_operator.reconcile.writes import counts_only, first_sight
from falapp_operator.settings import OperatorSettings
from tests.unit.fake_api import FakeApiServer, serving

NS = "team-a"
APP = (NS, "llm")
OTHER = (NS, "other")  # another app of the namespace, whose view of free room the tests read
KEY = ("app", NS, "llm")
FALAPP = f"/apis/fal.ai/v1alpha1/namespaces/{NS}/falapps/llm"
STATUS = f"PATCH {FALAPP}/status"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
REPLICASETS = f"/apis/apps/v1/namespaces/{NS}/replicasets"
PODS = f"/api/v1/namespaces/{NS}/pods"
MACHINETYPES = "/apis/fal.ai/v1alpha1/machinetypes"
H100, A100 = deployment_name("llm", "gpu-h100"), deployment_name("llm", "gpu-a100")
EVENTS = f"POST /api/v1/namespaces/{NS}/events"
PRODUCTS = {"h": "NVIDIA-H100-80GB-HBM3", "a": "NVIDIA-A100-SXM4-40GB"}


def node(name: str) -> dict:
    return {"metadata": {"name": name, "labels": {GPU_PRODUCT_LABEL: PRODUCTS[name[0]]}},
            "spec": {}, "status": {"allocatable": {"nvidia.com/gpu": "8", "cpu": "64", "memory": "512Gi"},
                                   "conditions": [{"type": "Ready", "status": "True"}]}}


def falapp(replicas: int = 1, ports: bool = False) -> dict:
    spec: dict = {"image": "img:1", "replicas": replicas, "machineTypes": ["GPU-H100", "GPU-A100"], "numGpus": 1}
    if ports:
        spec["ports"] = [{"containerPort": 8080}]
    return {"apiVersion": "fal.ai/v1alpha1", "kind": "FalApp",
            "metadata": {"name": "llm", "namespace": NS, "uid": "app-1", "generation": 1}, "spec": spec}


def free_for(controller: Controller, spec: FalAppSpec, app: tuple[str, str]) -> FreeOnRead:
    """What a reconcile of `app` reads: free room per candidate type, less other apps' claims."""
    return controller.asks.free_for(spec, app, controller.types.declared.values())


class Rig:
    """A controller whose client talks to the fake API; the stores hear of objects as a watch would."""

    def __init__(self, fake: FakeApiServer, api: KubeApi) -> None:
        self.fake, self.api = fake, api
        self.controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
        for machine_type in DEFAULT_CATALOG:
            stored = fake.put(f"{MACHINETYPES}/{machine_type.metadata.name}",
                              machine_type.model_dump(by_alias=True, exclude_none=True, mode="json"))
            self.controller.machinetype_event(stored, deleted=False)
        for name in ("h1", "a1"):
            self.controller.node_event(node(name), deleted=False)

    def create_app(self, body: dict) -> None:
        self.controller.falapp_watched("ADDED", self.fake.put(FALAPP, body))

    def pod_of(self, deployment: str, name: str, node_name: str | None) -> dict:
        """A pod the Deployment's ReplicaSet made: running on `node_name`, else unschedulable since long ago."""
        template = self.fake.objects[f"{DEPLOYMENTS}/{deployment}"]["spec"]["template"]
        scheduled = ({"type": "PodScheduled", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}
                     if node_name else {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                        "lastTransitionTime": "2025-01-01T00:00:00Z", "message": "0/2 nodes fit"})
        body = {"metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}",
                             "creationTimestamp": "2025-01-01T00:00:00Z",
                             "labels": {**template["metadata"]["labels"], "pod-template-hash": "r1"},
                             "annotations": template["metadata"]["annotations"],
                             "ownerReferences": [{"kind": "ReplicaSet", "name": f"{deployment}-r1", "uid": "rs-1",
                                                  "controller": True}]},
                "spec": {"nodeName": node_name, "containers": template["spec"]["containers"]},
                "status": {"phase": "Running" if node_name else "Pending", "conditions": [scheduled]}}
        stored = self.fake.put(f"/api/v1/namespaces/{NS}/pods/{name}", body)
        self.controller.pod_event(stored, deleted=False)
        return stored

    def pending_pod(self, name: str) -> dict:
        """A pod of the H100 Deployment's template (its ReplicaSet's, as pod_of), just created: not scheduled yet."""
        template = self.fake.objects[f"{DEPLOYMENTS}/{H100}"]["spec"]["template"]
        return {"metadata": {"name": name, "uid": name, "namespace": NS,
                             "labels": {**template["metadata"]["labels"], "pod-template-hash": "r1"},
                             "ownerReferences": [{"kind": "ReplicaSet", "name": f"{H100}-r1", "uid": "rs-1",
                                                  "controller": True}]},
                "spec": {"containers": template["spec"]["containers"]}, "status": {"phase": "Pending"}}

    def nodes_in_api(self) -> None:
        """The nodes the controller heard of, stored in the fake for a re-list to find."""
        for name in ("h1", "a1"):
            self.fake.put(f"/api/v1/nodes/{name}", node(name))

    def other_app_sees(self) -> list[int]:
        """Free GPUs of each H100 node as another one-GPU app of the namespace (OTHER) sees them."""
        spec = FalAppSpec.model_validate(falapp()["spec"])
        return [n.gpus for n in free_for(self.controller, spec, OTHER)["gpu-h100"]]

    async def reconcile(self) -> list[str]:
        """One reconcile of the app; the requests it made (events posted in the background included)."""
        self.fake.requests.clear()
        queue = self.controller.queue
        taken = [await queue.get() for _ in range(len(queue))]  # as a worker takes the app first
        try:
            await self.controller.reconcile_app(*APP)
        finally:
            for key in taken:
                queue.done(key)
            await asyncio.gather(*self.controller.events.pending, return_exceptions=True)
        return [str(r) for r in self.fake.requests]

    def status(self) -> dict:
        return self.controller.falapps.get(APP).get("status") or {}

    def stalled(self) -> dict | None:
        return next((c for c in self.status().get("conditions", []) if c["type"] == "Stalled"
                     and c["status"] == "True"), None)


@pytest_asyncio.fixture(loop_scope="function")
async def rig() -> AsyncIterator[Rig]:
    async with serving() as (fake, api):
        rig = Rig(fake, api)
        yield rig
        await rig.controller.stop()
        # the gauges are the process's: none left to the next test
        for app in list(rig.controller.app_metrics.replicas):
            rig.controller.app_metrics.forget(app)


async def test_a_new_app_gets_its_deployment_and_service_then_its_status(rig: Rig) -> None:
    rig.create_app(falapp(ports=True))
    assert await rig.reconcile() == [f"PATCH {DEPLOYMENTS}/{H100}", f"PATCH /api/v1/namespaces/{NS}/services/llm",
                                     STATUS]
    deployment, service, status = rig.fake.requests
    assert deployment.content_type == service.content_type == APPLY and status.content_type == MERGE
    assert not deployment.force and not service.force, "an object absent a moment ago was taken over by force"
    assert status.body["status"]["machines"] == "GPU-H100x1"
    assert await rig.reconcile() == [], "a settled app is written again"


async def test_a_replica_falls_back_make_before_break_and_the_status_comes_last(rig: Rig) -> None:
    rig.create_app(falapp(replicas=2))
    await rig.reconcile()
    rig.pod_of(H100, "running", "h1")
    rig.pod_of(H100, "stuck", None)  # unschedulable for longer than the app's timeout
    writes = await rig.reconcile()
    assert writes == [
        f"PATCH {DEPLOYMENTS}/{A100}",  # the new home grows, the move's history on it (a crash forgets none)
        f"PATCH /api/v1/namespaces/{NS}/pods/stuck",  # the replica that goes is the stuck one
        f"PATCH {DEPLOYMENTS}/{H100}",  # then the old type shrinks
        STATUS,
        EVENTS,
    ]
    grow, mark, shrink, status, event = rig.fake.requests
    recorded = json.loads(grow.body["metadata"]["annotations"][MOVES_ANNOTATION])
    assert [a["outcome"] for a in recorded["attempts"]] == ["FellBack"]
    assert [a["outcome"] for a in status.body["status"]["attempts"]] == ["FellBack"]
    assert MOVES_ANNOTATION not in shrink.body["metadata"]["annotations"], "a shrink records the move again"
    assert grow.body["spec"]["replicas"] == 1 and not grow.force
    assert shrink.body["spec"]["replicas"] == 1 and shrink.force
    assert mark.content_type == MERGE
    assert status.body["status"]["machines"] == "GPU-H100x1,GPU-A100x1"
    assert event.body["reason"] == "FellBack" and "0/2 nodes fit" in event.body["message"]
    # the pods as the controller manager leaves them: the history carried on, nothing written again
    rig.controller.pod_event(rig.fake.objects.pop(f"/api/v1/namespaces/{NS}/pods/stuck"), deleted=True)
    rig.pod_of(A100, "moved", "a1")
    sent = await rig.reconcile() + await rig.reconcile()
    assert not [w for w in sent if DEPLOYMENTS in w], sent


async def test_a_move_half_written_when_a_write_is_refused_is_in_the_history_the_refusal_writes(rig: Rig) -> None:
    """The new home grew (the move's history on it), then the old type's shrink is refused: the Stalled
    status tells the move too, as it happened."""
    rig.create_app(falapp(replicas=2))
    await rig.reconcile()
    rig.pod_of(H100, "running", "h1")
    rig.pod_of(H100, "stuck", None)
    rig.fake.fail("PATCH", f"/deployments/{H100}", 403, 'deployments.apps "x" is forbidden: by policy')
    sent = await rig.reconcile()
    assert sent[:3] == [f"PATCH {DEPLOYMENTS}/{A100}", f"PATCH /api/v1/namespaces/{NS}/pods/stuck",
                        f"PATCH {DEPLOYMENTS}/{H100}"] and STATUS in sent[3:], sent
    assert rig.stalled() is not None and "by policy" in rig.stalled()["message"]
    assert [a["outcome"] for a in rig.status()["attempts"]] == ["FellBack"]


async def test_the_last_replica_of_a_type_moves_before_its_deployment_goes(rig: Rig) -> None:
    rig.create_app(falapp(replicas=1))
    await rig.reconcile()
    rig.pod_of(H100, "stuck", None)
    stranger = rig.pending_pod("stranger")  # the app's labels, made by hand: no replica of it
    stranger["metadata"]["ownerReferences"] = []
    rig.controller.pod_event(rig.fake.put(f"{PODS}/stranger", stranger), deleted=False)
    rig.fake.put(f"{REPLICASETS}/{H100}-r1", {"metadata": {"name": f"{H100}-r1", "namespace": NS, "uid": "rs-1"}})
    # the stuck pod is not marked to go first: its Deployment keeps no replica, every pod of it goes; the
    # stuck one at once, its ReplicaSet first (it would replace it), not left to the garbage collector
    assert await rig.reconcile() == [f"PATCH {DEPLOYMENTS}/{A100}", f"DELETE {DEPLOYMENTS}/{H100}",
                                     f"DELETE {REPLICASETS}/{H100}-r1", f"DELETE {PODS}/stuck", STATUS, EVENTS]
    assert f"{DEPLOYMENTS}/{H100}" not in rig.fake.objects and f"{PODS}/stranger" in rig.fake.objects
    for deleted in rig.fake.requests[2:4]:
        assert deleted.body == {"preconditions": {"uid": "rs-1" if "replicasets" in deleted.path else "uid-stuck"},
                                "propagationPolicy": "Background"}, deleted.body


@pytest.mark.parametrize("refused", ["replicasets", "pods"])
async def test_a_refused_deletion_of_what_a_deleted_deployment_left_waiting_is_told_and_stalls_nothing(
        rig: Rig, refused: str) -> None:
    """Best effort: a pod bound meanwhile (the operator's policy refuses it), or an older chart's RBAC, leaves
    it to the garbage collector; the move's status and events still go out, and the app is not Stalled.
    A refused ReplicaSet stops the pods' deletion (it would replace them): the garbage collector takes
    over."""
    rig.create_app(falapp(replicas=1))
    await rig.reconcile()
    rig.pod_of(H100, "stuck", None)
    message = f'{refused} "x" is forbidden: User "system:serviceaccount:ops:falapp-operator" cannot delete resource'
    rig.fake.fail("DELETE", f"/replicasets/{H100}-r1" if refused == "replicasets" else "/pods/stuck", 403, message)
    sent = await rig.reconcile()
    deletes = [f"DELETE {REPLICASETS}/{H100}-r1"] + ([f"DELETE {PODS}/stuck"] if refused == "pods" else [])
    assert sorted(sent) == sorted([f"PATCH {DEPLOYMENTS}/{A100}", f"DELETE {DEPLOYMENTS}/{H100}", *deletes,
                                   STATUS, EVENTS, EVENTS])
    assert rig.stalled() is None
    assert [c["status"] for c in rig.status()["conditions"] if c["type"] == "FallbackActive"] == ["True"]
    events = [r.body for r in rig.fake.requests if str(r) == EVENTS]
    warning = next(e for e in events if e["reason"] == "CleanupRefused")
    assert warning["type"] == "Warning" and message in warning["message"] and "garbage collector" in warning["message"]
    assert any(e["reason"] == "FellBack" for e in events)


async def test_a_transient_error_clearing_what_a_deleted_deployment_left_is_only_logged(rig: Rig) -> None:
    """An overloaded API server answering 503 to a best-effort deletion posts no Warning (on-call would look
    for a refusal), stalls nothing, and raises nothing: the garbage collector takes over."""
    rig.create_app(falapp(replicas=1))
    await rig.reconcile()
    rig.pod_of(H100, "stuck", None)
    rig.fake.fail("DELETE", f"/replicasets/{H100}-r1", 503, "the server is currently unable to handle the request")
    sent = await rig.reconcile()
    assert sent == [f"PATCH {DEPLOYMENTS}/{A100}", f"DELETE {DEPLOYMENTS}/{H100}",
                    f"DELETE {REPLICASETS}/{H100}-r1", STATUS, EVENTS]
    assert [r.body["reason"] for r in rig.fake.requests if str(r) == EVENTS] == ["FellBack"]
    assert rig.stalled() is None


async def test_the_same_refusal_clearing_what_deleted_deployments_left_is_told_once(rig: Rig) -> None:
    """A Deployment deleted again (say a finalizer held it and it came back on a fresh read) meeting the same
    refusal tells it once."""
    rig.create_app(falapp(replicas=1))
    await rig.reconcile()
    rig.pod_of(H100, "stuck", None)
    message = 'replicasets.apps "x" is forbidden: cannot delete resource'
    rig.fake.fail("DELETE", f"/replicasets/{H100}-r1", 403, message, times=2)
    app = AppRef(name="llm", namespace=NS, uid="app-1")
    rig.fake.requests.clear()
    for _ in range(2):  # the pod held in the store: each pass tries its ReplicaSet again
        await rig.controller.writer.delete_waiting(app, H100)
    await asyncio.gather(*rig.controller.events.pending, return_exceptions=True)
    warnings = [r.body for r in rig.fake.requests if str(r) == EVENTS]
    assert [w["reason"] for w in warnings] == ["CleanupRefused"] and message in warnings[0]["message"]


@pytest.mark.parametrize(("status", "reason", "message"), [
    (422, "Invalid", 'Deployment.apps "llm" is invalid: spec.template.spec.containers[0].image: Required value'),
    (403, "Forbidden", 'deployments.apps "llm" is forbidden: exceeded quota: gpus, requested: 1, limited: 0'),
])
async def test_a_refused_write_is_shown_on_the_app_and_in_an_event(rig: Rig, status: int, reason: str,
                                                                   message: str) -> None:
    rig.create_app(falapp())
    rig.fake.fail("PATCH", f"/deployments/{H100}", status, message, reason)
    assert await rig.reconcile() == [f"PATCH {DEPLOYMENTS}/{H100}", STATUS, EVENTS]  # no raise: nothing to retry soon
    shown = f"Deployment {NS}/{H100}: {status} {reason}: {message}"
    stalled = rig.stalled()
    assert stalled is not None and stalled["reason"] == "RequestRejected" and stalled["message"] == shown
    event = rig.fake.requests[-1].body
    assert (event["type"], event["reason"], event["message"]) == ("Warning", "RequestRejected", shown)
    rig.controller.queue.add(KEY)  # its watch events do not retry it sooner than the slowest rate
    assert len(rig.controller.queue) == 0
    rig.controller.queue.add(KEY, urgent=True)  # the user changed the spec
    assert len(rig.controller.queue) == 1


@pytest.mark.parametrize(("status", "reason", "message"), [
    (422, "Invalid", 'FalApp.fal.ai "llm" is invalid: status.machines: Too long: may not be longer than 1024'),
    (403, "Forbidden", 'falapps.fal.ai "llm" is forbidden: User "system:serviceaccount:ops:falapp-operator" '
                       'cannot patch resource "falapps/status"'),
])
async def test_a_refused_status_write_is_shown_in_an_event(rig: Rig, status: int, reason: str, message: str) -> None:
    """The condition cannot be written where the status itself is refused: the Warning event still says so."""
    rig.create_app(falapp())
    rig.fake.fail("PATCH", "/falapps/llm/status", status, message, reason, times=2)
    with pytest.raises(ApiError):  # retried with back-off by the worker
        await rig.reconcile()
    assert rig.fake.writes() == [f"PATCH {DEPLOYMENTS}/{H100}", STATUS, STATUS, EVENTS]
    event = rig.fake.requests[-1].body
    assert (event["type"], event["reason"]) == ("Warning", "RequestRejected")
    assert event["message"] == f"FalApp {NS}/llm status: {status} {reason}: {message}"


async def test_a_status_refused_again_for_the_same_problem_posts_no_second_event(rig: Rig) -> None:
    """Retried at the slowest rate for as long as the status is refused: one Warning per problem, not one per
    retry; a different problem is posted again, and so is the old one once the app reconciled in between."""
    def refuse(message: str) -> None:
        rig.fake.fail("PATCH", "/falapps/llm/status", 422, message, "Invalid", times=2)

    rig.controller.settings.status_counts_rate = 1e6  # turns of status writes are not what this is about
    rig.create_app(falapp())
    refuse("status.machines: Too long")
    with pytest.raises(ApiError):
        await rig.reconcile()
    assert rig.fake.writes().count(EVENTS) == 1
    refuse("status.machines: Too long")
    with pytest.raises(ApiError):
        await rig.reconcile()
    assert rig.fake.writes() == [STATUS, STATUS], "the same refusal posted again"
    refuse("status.conditions: Too long")
    with pytest.raises(ApiError):
        await rig.reconcile()
    assert rig.fake.writes() == [STATUS, STATUS, EVENTS]
    assert rig.fake.requests[-1].body["message"].endswith("422 Invalid: status.conditions: Too long")
    assert STATUS in await rig.reconcile()  # the status written: the app reconciled
    changed = falapp()
    changed["metadata"]["generation"] = 2
    rig.create_app(changed)  # a new generation: a status to write
    refuse("status.conditions: Too long")
    with pytest.raises(ApiError):
        await rig.reconcile()
    assert rig.fake.writes() == [STATUS, STATUS, EVENTS]


@pytest.mark.parametrize(("status", "reads_fresh"), [
    (409, False),  # a conflict: the next attempt decides again from the stores (the watch brings the news)
    (429, False),
    (500, True),  # the write may have happened: the next attempt reads the app from the API
    (503, True),
])
async def test_a_transient_refusal_is_raised_for_a_retry_and_not_shown(rig: Rig, status: int,
                                                                       reads_fresh: bool) -> None:
    rig.create_app(falapp())
    rig.fake.fail("PATCH", f"/deployments/{H100}", status)
    with pytest.raises(ApiError) as raised:
        await rig.reconcile()
    assert raised.value.status == status and raised.value.transient
    assert rig.fake.writes() == [f"PATCH {DEPLOYMENTS}/{H100}"], "written on after a refusal, or shown"
    assert rig.stalled() is None
    writes = await rig.reconcile()
    reads = [(r.path, r.query.get("labelSelector")) for r in rig.fake.requests if r.method == "GET"]
    assert reads == ([(FALAPP, None), (f"/api/v1/namespaces/{NS}/services/llm", None),
                      (DEPLOYMENTS, "fal.ai/app=llm"), (f"/api/v1/namespaces/{NS}/pods", "fal.ai/app=llm")]
                     if reads_fresh else [])
    assert [w for w in writes if not w.startswith("GET")] == [f"PATCH {DEPLOYMENTS}/{H100}", STATUS]


async def test_a_name_taken_meanwhile_conflicts_then_is_shown_once_the_watch_reports_it(rig: Rig) -> None:
    """The Deployment's name was free in the store, but someone made it just before the create: the apply
    without force conflicts (409, retried); once the watch reports the object, the app says whose it is."""
    rig.create_app(falapp())
    squatter = rig.fake.put(f"{DEPLOYMENTS}/{H100}", {"metadata": {
        "name": H100, "namespace": NS, "ownerReferences": [{"kind": "Rollout", "name": "x", "uid": "r",
                                                             "controller": True}]}, "spec": {"replicas": 3}})
    rig.fake.fail("PATCH", f"/deployments/{H100}", 409, 'Apply failed with 1 conflict: conflict with "kubectl": '
                  '.spec.replicas')
    with pytest.raises(ApiError, match="409 Conflict"):
        await rig.reconcile()
    rig.controller.child_watched(rig.controller.deployments, "ADDED", squatter)
    assert await rig.reconcile() == [STATUS, EVENTS]
    stalled = rig.stalled()
    assert stalled is not None and stalled["reason"] == "NameConflict"
    assert rig.fake.objects[f"{DEPLOYMENTS}/{H100}"]["spec"]["replicas"] == 3


async def test_a_status_write_for_an_app_deleted_meanwhile_is_no_error(rig: Rig) -> None:
    rig.create_app(falapp())
    del rig.fake.objects[FALAPP]
    assert await rig.reconcile() == [f"PATCH {DEPLOYMENTS}/{H100}", STATUS, f"GET {FALAPP}"]
    # gone before its watch said so: forgotten, and the events that come still change nothing
    assert rig.controller.falapps.get(APP) is None and APP not in rig.controller.apps
    rig.pod_of(H100, "p1", "h1")
    assert await rig.reconcile() == []


def replica_samples() -> dict[tuple[str, str], float]:
    return {(s.labels["machine_type"], s.labels["state"]): s.value for m in REGISTRY.collect()
            if m.name == "falapp_replicas" for s in m.samples if s.labels.get("namespace") == NS}


async def test_an_app_deleted_before_its_move_is_written_is_forgotten_and_its_metrics_go(rig: Rig) -> None:
    """The move's Deployment writes may go out (their owner reference hands what they make to the garbage
    collector); the status write finds the app gone: nothing more is written for it."""
    rig.create_app(falapp(replicas=2))
    await rig.reconcile()
    rig.pod_of(H100, "running", "h1")
    rig.pod_of(H100, "stuck", None)  # unschedulable for longer than the app's timeout
    await rig.reconcile()  # FellBack
    assert any(replica_samples().values())
    rig.pod_of(A100, "moved", None)  # the replica on A100 is stuck too: it falls back again (to nowhere)
    del rig.fake.objects[FALAPP]
    sent = await rig.reconcile()
    assert sent[0] == f"PATCH {DEPLOYMENTS}/{H100}" and sent[-2:] == [STATUS, f"GET {FALAPP}"], sent
    assert EVENTS not in sent
    assert rig.controller.falapps.get(APP) is None and APP not in rig.controller.apps
    # no series left at zero: a platform making a namespace per customer would keep every one it ever had
    assert replica_samples() == {}
    assert not [s for m in REGISTRY.collect() if m.name == "falapp_insufficient_capacity_apps"
                for s in m.samples if s.labels.get("namespace") == NS]
    assert rig.controller.app_metrics._totals == Counter()


async def test_a_replica_gauge_at_zero_stays_while_its_namespace_has_replicas(rig: Rig) -> None:
    """`falapp_replicas{state="ready"} == 0` is what an alert looks for: the series stays at zero while the
    namespace has replicas, and goes only with its last one."""
    rig.create_app(falapp())
    await rig.reconcile()
    running = rig.pod_of(H100, "p1", "h1")
    ready = {"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T00:00:01Z"}
    rig.controller.pod_event(rig.fake.put(f"/api/v1/namespaces/{NS}/pods/p1", {
        **running, "status": {**running["status"], "conditions": [*running["status"]["conditions"], ready]}}),
        deleted=False)
    await rig.reconcile()
    assert replica_samples() == {("GPU-H100", "ready"): 1.0}
    not_ready = rig.fake.put(f"/api/v1/namespaces/{NS}/pods/p1", running)
    rig.controller.pod_event(not_ready, deleted=False)
    await rig.reconcile()
    assert replica_samples() == {("GPU-H100", "ready"): 0.0, ("GPU-H100", "not_ready"): 1.0}
    gone = rig.fake.put(f"/api/v1/namespaces/{NS}/pods/p1", not_ready)  # (a deletion's newer version)
    rig.controller.pod_event(gone, deleted=True)
    await rig.reconcile()
    assert replica_samples() == {}


async def test_a_status_answering_404_for_an_app_that_is_there_is_shown_and_the_app_kept(rig: Rig) -> None:
    """A CRD without its status subresource: every status write answers 404 while the app is there."""
    rig.create_app(falapp())
    rig.fake.fail("PATCH", "/falapps/llm/status", 404, 'falapps.fal.ai "llm" not found', "NotFound", times=4)
    with pytest.raises(ApiError):  # retried with back-off by the worker
        await rig.reconcile()
    assert rig.controller.falapps.get(APP) is not None and APP in rig.controller.apps
    event = rig.fake.requests[-1].body
    assert (event["type"], event["reason"]) == ("Warning", "RequestRejected")
    assert "status subresource" in event["message"]


async def test_an_app_recreated_under_its_name_while_the_old_ones_write_was_refused_is_kept(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig.create_app(falapp())
    written = rig.api.patch_falapp_status

    async def deleted_and_recreated_meanwhile(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        old = rig.fake.objects.pop(FALAPP)
        old["metadata"]["resourceVersion"] = "999998"
        rig.controller.falapp_watched("DELETED", old)
        answer = await written(*args, **kwargs)
        new = falapp()
        new["metadata"]["uid"] = "app-2"
        rig.controller.falapp_watched("ADDED", rig.fake.put(FALAPP, new))
        return answer
    monkeypatch.setattr(rig.api, "patch_falapp_status", deleted_and_recreated_meanwhile)
    await rig.reconcile()
    stored = rig.controller.falapps.get(APP)
    assert stored is not None and stored["metadata"]["uid"] == "app-2"
    assert len(rig.controller.queue) == 1  # the new one is reconciled


async def test_an_app_whose_namespace_went_before_its_watch_said_so_is_forgotten_without_an_event(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """An operator starting while a namespace is deleted may list apps whose namespace is gone by its
    first writes: each write answers 404, and posting the Warning would fail too (at every reconcile).
    The app is read again; gone, it is forgotten: no refusal, no event, no warning in the log."""
    rig.create_app(falapp())
    del rig.fake.objects[FALAPP]
    gone = f'namespaces "{NS}" not found'
    rig.fake.fail("PATCH", f"/deployments/{H100}", 404, gone, "NotFound", kind="namespaces")
    rig.fake.fail("POST", "/events", 404, gone, "NotFound", times=5, kind="namespaces")
    assert await rig.reconcile() == [f"PATCH {DEPLOYMENTS}/{H100}", f"GET {FALAPP}"]
    assert rig.controller.falapps.get(APP) is None and APP not in rig.controller.apps
    assert await rig.reconcile() == []
    assert "could not post" not in caplog.text and "RequestRejected" not in caplog.text


NAMESPACE = f"/api/v1/namespaces/{NS}"
NAMESPACE_GONE = f'namespaces "{NS}" not found'


def warnings_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


async def test_an_app_that_outlived_its_namespace_is_told_once_and_left_alone_until_the_namespace_is_back(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """The app is stored, its namespace is not (a namespace's deletion the API server did not finish: it
    restarted meanwhile): every write there answers 404 about the namespace. The app and the namespace
    are read fresh (both answers decide); one warning with the API's message, no retry, no refusal to
    write; it is placed again once a namespace of that name is seen, though the operator knew the name
    (a watch that listed again after the restart never said DELETED)."""
    rig.controller.namespace_event({"metadata": {"name": NS}}, deleted=False)  # known before, never DELETED
    rig.create_app(falapp())
    rig.fake.fail("PATCH", f"/deployments/{H100}", 404, NAMESPACE_GONE, "NotFound", kind="namespaces")
    # no error: not retried
    assert await rig.reconcile() == [f"PATCH {DEPLOYMENTS}/{H100}", f"GET {FALAPP}", f"GET {NAMESPACE}"]
    assert APP in rig.controller.namespaces.orphans and rig.controller.falapps.get(APP) is not None
    assert REGISTRY.get_sample_value("falapp_apps_left_behind") == 1
    told = warnings_logged(caplog)
    assert len(told) == 1 and "namespace no longer exists" in told[0] and NAMESPACE_GONE in told[0], told
    rig.controller.falapp_watched("MODIFIED", rig.fake.put(FALAPP, falapp(replicas=2)))  # edited meanwhile
    assert len(rig.controller.queue) == 1
    assert await rig.reconcile() == []  # nothing tried, nothing told again
    assert warnings_logged(caplog) == told
    rig.fake.put(NAMESPACE, {"metadata": {"name": NS}})
    rig.controller.namespace_event({"metadata": {"name": NS}}, deleted=False)  # created again, same labels
    assert APP not in rig.controller.namespaces.orphans and len(rig.controller.queue) == 1
    assert REGISTRY.get_sample_value("falapp_apps_left_behind") == 0
    assert await rig.reconcile() == [f"PATCH {DEPLOYMENTS}/{H100}", STATUS]
    assert rig.status()["machines"] == "GPU-H100x2"


async def test_an_app_seen_before_its_namespace_is_placed_again_once_the_namespace_is_seen(rig: Rig) -> None:
    """Its namespace's labels unknown, types that select namespaces refuse it meanwhile: they decide."""
    rig.create_app(falapp())
    await rig.reconcile()
    rig.controller.namespace_event({"metadata": {"name": NS, "labels": {"team": "a"}}}, deleted=False)
    assert len(rig.controller.queue) == 1


async def test_an_event_of_its_namespace_being_deleted_releases_nothing(rig: Rig) -> None:
    rig.create_app(falapp())
    rig.fake.fail("PATCH", f"/deployments/{H100}", 404, NAMESPACE_GONE, "NotFound", kind="namespaces")
    await rig.reconcile()
    rig.controller.namespace_event({"metadata": {"name": NS, "deletionTimestamp": "2026-01-01T00:00:00Z"}},
                                   deleted=False)  # a stale event of the old one
    assert await rig.reconcile() == [] and APP in rig.controller.namespaces.orphans


async def test_a_404_about_a_namespace_that_is_there_is_retried_not_left_alone(rig: Rig) -> None:
    """The namespace was made again between the write and the check, or the answer was not the API
    server's own (an admission webhook may answer anything): the app is not left behind, the error goes
    to the worker's back-off."""
    rig.fake.put(NAMESPACE, {"metadata": {"name": NS}})
    rig.create_app(falapp())
    rig.fake.fail("PATCH", f"/deployments/{H100}", 404, NAMESPACE_GONE, "NotFound", kind="namespaces")
    with pytest.raises(ApiError) as raised:
        await rig.reconcile()
    assert raised.value.namespace_gone and APP not in rig.controller.namespaces.orphans
    assert [str(r) for r in rig.fake.requests] == [f"PATCH {DEPLOYMENTS}/{H100}", f"GET {FALAPP}",
                                                    f"GET {NAMESPACE}"]


async def test_a_status_write_answering_that_the_namespace_is_gone_leaves_the_app_alone(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """The status write (the only write an app whose Deployment is applied may need) tells it too; a
    FalApp deleted by hand then is forgotten (and counted no more), and a new one of that name told
    about again."""
    rig.create_app(falapp())
    assert await rig.reconcile() == [f"PATCH {DEPLOYMENTS}/{H100}", STATUS]
    rig.controller.falapp_watched("MODIFIED", rig.fake.put(FALAPP, {**falapp(), "status": {}}))
    rig.fake.fail("PATCH", "/falapps/llm/status", 404, NAMESPACE_GONE, "NotFound", kind="namespaces")
    assert await rig.reconcile() == [STATUS, f"GET {FALAPP}", f"GET {NAMESPACE}"]
    assert APP in rig.controller.namespaces.orphans
    assert len(told := warnings_logged(caplog)) == 1 and told[0].count(NAMESPACE_GONE) == 1, told
    del rig.fake.objects[FALAPP]  # deleted (by hand): forgotten
    rig.controller.falapp_watched("DELETED", {**falapp(), "metadata": {**falapp()["metadata"],
                                                                        "resourceVersion": "999999"}})
    assert await rig.reconcile() == []
    assert APP not in rig.controller.namespaces.orphans and APP not in rig.controller.apps
    assert REGISTRY.get_sample_value("falapp_apps_left_behind") == 0
    again = falapp()
    again["metadata"]["uid"] = "app-2"
    rig.create_app(again)  # another one stored there the same way (the old one's Deployment there): news again
    rig.fake.fail("PATCH", "/falapps/llm/status", 404, NAMESPACE_GONE, "NotFound", kind="namespaces")
    assert await rig.reconcile() == [STATUS, f"GET {FALAPP}", f"GET {NAMESPACE}"]
    assert APP in rig.controller.namespaces.orphans and len(warnings_logged(caplog)) == 2


async def test_another_app_of_that_name_is_not_taken_for_the_one_parked(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.create_app(falapp())
    rig.fake.fail("PATCH", f"/deployments/{H100}", 404, NAMESPACE_GONE, "NotFound", kind="namespaces")
    await rig.reconcile()
    assert APP in rig.controller.namespaces.orphans
    again = falapp()
    again["metadata"]["uid"] = "app-2"
    rig.controller.falapp_watched("ADDED", rig.fake.put(FALAPP, again))  # the old one's DELETED never told
    rig.fake.fail("PATCH", f"/deployments/{H100}", 404, NAMESPACE_GONE, "NotFound", kind="namespaces")
    assert await rig.reconcile() == [f"PATCH {DEPLOYMENTS}/{H100}", f"GET {FALAPP}", f"GET {NAMESPACE}"]
    assert rig.controller.namespaces.orphans == {APP: "app-2"} and len(warnings_logged(caplog)) == 2  # told: it is news


async def test_an_invalid_app_left_behind_is_left_alone_too(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """Its refusal (InvalidSpec) is a status write outside the writes that place it: that one tells too."""
    invalid = falapp()
    invalid["spec"]["machineTypes"] = ["GPU-NOPE"]
    rig.create_app(invalid)
    rig.fake.fail("PATCH", "/falapps/llm/status", 404, NAMESPACE_GONE, "NotFound", kind="namespaces")
    assert await rig.reconcile() == [STATUS, f"GET {FALAPP}", f"GET {NAMESPACE}"]
    assert APP in rig.controller.namespaces.orphans and len(warnings_logged(caplog)) == 1


async def test_a_namespace_seen_while_it_is_checked_leaves_the_app_to_be_looked_at_again(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Made again between the API server's answer (not there) and the check's end, its event handled
    first: the app is not parked (nothing would release it), it is looked at again shortly."""
    rig.create_app(falapp())
    rig.fake.fail("PATCH", f"/deployments/{H100}", 404, NAMESPACE_GONE, "NotFound", kind="namespaces")
    read = rig.api.get_namespace

    async def made_again_meanwhile(name: str) -> dict | None:
        answer = await read(name)
        rig.controller.namespace_event({"metadata": {"name": NS}}, deleted=False)
        return answer
    monkeypatch.setattr(rig.api, "get_namespace", made_again_meanwhile)
    await rig.reconcile()
    assert APP not in rig.controller.namespaces.orphans
    key = await asyncio.wait_for(rig.controller.queue.get(), timeout=5)  # looked at again, shortly
    rig.controller.queue.done(key)
    assert key == ("app", *APP)


async def test_another_namespaces_event_during_the_check_changes_nothing(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    rig.create_app(falapp())
    rig.fake.fail("PATCH", f"/deployments/{H100}", 404, NAMESPACE_GONE, "NotFound", kind="namespaces")
    read = rig.api.get_namespace

    async def another_changed_meanwhile(name: str) -> dict | None:
        answer = await read(name)
        rig.controller.namespace_event({"metadata": {"name": "team-b"}}, deleted=False)
        return answer
    monkeypatch.setattr(rig.api, "get_namespace", another_changed_meanwhile)
    await rig.reconcile()
    assert APP in rig.controller.namespaces.orphans and not rig.controller.namespaces.checking


async def test_an_app_its_namespace_deletion_held_is_looked_at_when_the_namespace_goes_or_is_there_again(
        rig: Rig) -> None:
    """While its namespace is being deleted the app is left alone (nothing can be created there). A
    deletion that left it behind: the namespace's DELETED (or its absence from a resync's LIST) has it
    looked at, and parked; the namespace there again without a DELETED ever told (the watch listed again
    after an API server restart): it is placed."""
    rig.controller.namespace_event({"metadata": {"name": NS}}, deleted=False)
    terminating = {"metadata": {"name": NS, "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    rig.controller.namespace_event(terminating, deleted=False)
    rig.create_app(falapp())
    assert await rig.reconcile() == []  # held
    rig.controller.namespace_event({"metadata": {"name": NS}}, deleted=False)  # there again, same labels
    assert len(rig.controller.queue) == 1
    assert await rig.reconcile() == [f"PATCH {DEPLOYMENTS}/{H100}", STATUS]
    rig.controller.namespace_event(terminating, deleted=False)
    rig.controller.namespace_event(terminating, deleted=True)
    assert len(rig.controller.queue) == 1
    # nothing to write (placed, its status as it is): the namespace is read to know
    assert await rig.reconcile() == [f"GET {NAMESPACE}", f"GET {FALAPP}", f"GET {NAMESPACE}"]
    assert APP in rig.controller.namespaces.orphans
    assert REGISTRY.get_sample_value("falapp_apps_left_behind") == 1
    rig.controller.namespace_event({"metadata": {"name": NS}}, deleted=False)  # one of that name, new to it
    assert APP not in rig.controller.namespaces.orphans and len(rig.controller.queue) == 1
    assert await rig.reconcile() == []  # placed already, its status as it is: nothing to write, nothing read


async def test_a_404_for_an_app_still_there_is_shown_on_it(rig: Rig) -> None:
    """A 404 of another object (a Deployment deleted meanwhile): the app is there, so the refusal is news."""
    rig.create_app(falapp())
    rig.fake.fail("PATCH", f"/deployments/{H100}", 404, f'deployments.apps "{H100}" not found', "NotFound")
    assert await rig.reconcile() == [f"PATCH {DEPLOYMENTS}/{H100}", f"GET {FALAPP}", STATUS, EVENTS]
    stalled = rig.stalled()
    assert stalled is not None and stalled["reason"] == "RequestRejected"


async def test_an_event_of_a_namespace_gone_is_no_warning(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.create_app(falapp())
    rig.fake.fail("PATCH", f"/deployments/{H100}", 422, "spec.template: Invalid value")
    rig.fake.fail("POST", "/events", 404, f'namespaces "{NS}" not found', "NotFound", kind="namespaces")
    assert await rig.reconcile() == [f"PATCH {DEPLOYMENTS}/{H100}", STATUS, EVENTS]
    assert "could not post an event" not in caplog.text


async def test_failures_back_off_exponentially_and_a_success_resets_it(rig: Rig,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's back-off per key: 0.5 s doubling up to error_backoff_max, from the start again once a
    reconcile succeeds. (Waited out here a hundred times faster.)"""
    queue = rig.controller.queue
    delays: list[float] = []
    retry_after = queue.retry_after

    def recorded(key: Hashable, delay: float) -> None:
        delays.append(delay)
        retry_after(key, delay / 100)
    monkeypatch.setattr(queue, "retry_after", recorded)
    rig.controller.settings.error_backoff_max = 4.0
    rig.create_app(falapp())
    rig.fake.fail("PATCH", f"/deployments/{H100}", 429, times=5)
    rig.controller.lead()
    await wait_for(lambda: rig.fake.writes().count(STATUS) == 1)
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert KEY not in rig.controller.failures
    rig.fake.fail("PATCH", "/falapps/llm/status", 503)
    rig.controller.falapp_watched("MODIFIED", rig.fake.put(FALAPP, {**falapp(replicas=2), "metadata": {
        **falapp()["metadata"], "generation": 2}}))
    await wait_for(lambda: rig.fake.writes().count(STATUS) == 3)
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 0.5]


async def test_a_key_failing_for_days_keeps_its_worker_and_its_back_off(rig: Rig) -> None:
    """The 1025th failure in a row (a webhook down for 17 hours at the longest back-off): the delay is still
    a number. (Was: 0.5 * 2 ** 1024 raised OverflowError inside the worker, which ended it silently and left
    the key never retried; a key failing on every pass took every worker within minutes.)"""
    rig.controller.failures[KEY] = 1024
    rig.create_app(falapp())
    rig.fake.fail("PATCH", f"/deployments/{H100}", 503)
    rig.controller.lead()
    await wait_for(lambda: rig.controller.failures[KEY] == 1025)
    await wait_for(lambda: rig.controller.queue.backing_off(KEY))
    assert not any(worker.done() for worker in rig.controller._workers)


async def wait_for(condition: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + 5.0
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_machine_type_status_is_written_when_it_changed_only(rig: Rig) -> None:
    rig.create_app(falapp(replicas=2))
    await rig.reconcile()
    rig.pod_of(H100, "running", "h1")
    rig.pod_of(H100, "waiting", None)
    rig.fake.requests.clear()
    await rig.controller.reconcile_machinetypes()
    written = {r.path.removeprefix(f"{MACHINETYPES}/").removesuffix("/status"): r.body["status"]
               for r in rig.fake.requests}
    assert all(r.method == "PATCH" and r.content_type == MERGE for r in rig.fake.requests)
    assert len(written) == len(DEFAULT_CATALOG), "the status of a type never written before"
    h100 = {k: v for k, v in written["gpu-h100"].items() if k != "observedAt"}
    assert h100 == {"nodes": 1, "allocatableGpus": 8, "freeGpus": 7, "placedReplicas": 1, "pendingReplicas": 1,
                    "autoscaled": False}
    assert written["gpu-a100"]["freeGpus"] == 8 and written["gpu-b200"]["nodes"] == 0
    rig.fake.requests.clear()
    await rig.controller.reconcile_machinetypes()
    assert rig.fake.requests == [], "an unchanged status written again"
    rig.pod_of(H100, "waiting", "h1")  # bound now
    await rig.controller.reconcile_machinetypes()
    # the H100's only: CPU types may land on h1 too, but count no GPUs, and their other numbers stay
    assert {r.path for r in rig.fake.requests} == {f"{MACHINETYPES}/gpu-h100/status"}
    assert rig.fake.objects[f"{MACHINETYPES}/gpu-h100"]["status"]["freeGpus"] == 6
    # its own write coming back on the watch changes nothing, queues nothing
    while len(rig.controller.queue):
        rig.controller.queue.done(await rig.controller.queue.get())
    rig.controller.machinetype_event(rig.fake.objects[f"{MACHINETYPES}/gpu-h100"], deleted=False)
    rig.fake.requests.clear()
    await rig.controller.reconcile_machinetypes()
    assert rig.fake.requests == [] and len(rig.controller.queue) == 0


async def test_a_controller_reads_the_cluster_at_start_and_writes_only_once_it_leads() -> None:
    async with serving() as (fake, api):
        for machine_type in DEFAULT_CATALOG:
            fake.put(f"{MACHINETYPES}/{machine_type.metadata.name}",
                     machine_type.model_dump(by_alias=True, exclude_none=True, mode="json"))
        fake.put(f"/api/v1/namespaces/{NS}", {"metadata": {"name": NS, "labels": {"team": "a"}}})
        fake.put("/api/v1/nodes/h1", node("h1"))
        fake.put(FALAPP, falapp())
        fake.put(f"{PODS}/waiting", {
            "metadata": {"name": "waiting", "namespace": NS, "uid": "uid-waiting", "labels": {
                APP_LABEL: "llm", TYPE_LABEL: "gpu-h100"}},
            "spec": {"containers": [{"name": "app", "resources": {"requests": {"nvidia.com/gpu": "1"}}}]},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}})
        controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
        try:
            await controller.start()
            assert fake.writes() == [], "written before leading"
            assert controller.falapps.get(APP) is not None and "h1" in controller.cache.nodes
            assert controller.namespaces.labels[NS] == {"team": "a"} and len(controller.types.declared) == len(
                DEFAULT_CATALOG)
            event_lists = sorted(r.query.get("fieldSelector", "") for r in fake.requests
                                 if r.path == "/api/v1/events" and r.query.get("watch") is None)
            # the autoscalers' Events read before the first reconcile, as a replica waits unschedulable
            assert event_lists == ["reason=FailedScheduling,reportingComponent=karpenter",
                                   "reason=FailedScheduling,source=karpenter", "reason=Nominated",
                                   "reason=NotTriggerScaleUp", "reason=TriggeredScaleUp"]
            controller.lead()
            await wait_for(lambda: STATUS in fake.writes())
            assert fake.writes()[:2] == [f"PATCH {DEPLOYMENTS}/{H100}", STATUS]
        finally:
            await controller.stop()


async def test_an_event_the_api_refuses_fails_nothing_and_is_logged(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.create_app(falapp())
    rig.fake.fail("PATCH", f"/deployments/{H100}", 422, "spec.template: Invalid value")
    rig.fake.fail("POST", "/events", 403, 'events is forbidden: User "op" cannot create resource "events"')
    assert await rig.reconcile() == [f"PATCH {DEPLOYMENTS}/{H100}", STATUS, EVENTS]
    assert rig.stalled() is not None
    assert "could not post an event" in caplog.text and "events is forbidden" in caplog.text


async def test_other_apps_pending_replicas_take_room_and_an_apps_own_do_not(rig: Rig) -> None:
    """The room an app sees on a type is less the replicas other apps have pending there (about to be
    bound), not its own; an app gone (its reconcile found no FalApp) claims nothing."""
    controller = rig.controller
    spec = FalAppSpec.model_validate(falapp()["spec"])
    labels = {"app.kubernetes.io/managed-by": "falapp-operator"}

    def pending(name: str, app: str, gpus: int) -> None:
        controller.pod_event({"metadata": {"name": name, "uid": name, "namespace": NS, "labels": {
            **labels, APP_LABEL: app, TYPE_LABEL: "gpu-h100"}}, "spec": {"containers": [{"resources": {
                "requests": {"nvidia.com/gpu": str(gpus)}}}]}, "status": {"phase": "Pending"}}, deleted=False)

    for app in ("llm", "other"):
        controller.app_event(NS, app)
    pending("o1", "other", 3)
    pending("o2", "other", 3)
    pending("l1", "llm", 1)
    assert [n.gpus for n in free_for(controller, spec, APP)["gpu-h100"]] == [2], "other's two pending replicas"
    assert [n.gpus for n in free_for(controller, spec, (NS, "other"))["gpu-h100"]] == [7], "llm's one"
    await controller.reconcile_app(NS, "other")  # no such FalApp: forgotten, its pods claim nothing
    assert [n.gpus for n in free_for(controller, spec, APP)["gpu-h100"]] == [8]


async def test_room_freed_on_a_node_of_a_type_wakes_the_apps_waiting_for_room(rig: Rig) -> None:
    controller = rig.controller
    tainted = node("h9")
    tainted["spec"]["taints"] = [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]  # no type's
    controller.node_event(tainted, deleted=False)
    for name, where in (("on-h1", "h1"), ("on-h9", "h9")):
        controller.pod_event({"metadata": {"name": name, "uid": name, "namespace": "batch"},
                              "spec": {"nodeName": where, "containers": [{"resources": {"requests": {"cpu": "1"}}}]},
                              "status": {"phase": "Running"}}, deleted=False)
    controller.apps.add(APP)
    controller.waiting.add(APP)
    while len(controller.queue):
        controller.queue.done(await controller.queue.get())
    controller.pod_event({"metadata": {"uid": "on-h9", "namespace": "batch"}}, deleted=True)
    assert len(controller.queue) == 0, "room on a node no type can use woke an app"
    controller.pod_event({"metadata": {"uid": "on-h1", "namespace": "batch"}}, deleted=True)
    assert await controller.queue.get() == KEY


async def reconcile_writing(rig: Rig, deployment: str) -> asyncio.Task[None]:
    """The app's reconcile, under way: its write of `deployment` is in flight (the API answers in 0.3 s)."""
    rig.fake.slow("PATCH", f"deployments/{deployment}", 0.3)
    reconcile = asyncio.create_task(rig.controller.reconcile_app(*APP))
    deadline = time.monotonic() + 5
    while f"PATCH {DEPLOYMENTS}/{deployment}" not in map(str, rig.fake.requests):
        assert time.monotonic() < deadline, rig.fake.requests
        await asyncio.sleep(0.01)
    return reconcile


async def test_room_that_comes_while_an_app_is_reconciled_wakes_it_once_more(rig: Rig) -> None:
    """The app's reconcile read the view before the room came, and until it ends the app is not known to
    wait for room (a new app here; in the cluster tests a catalogue edit made its type a worse one): the
    room wakes it again once the reconcile is done, not only at the next unrelated event."""
    controller, queue = rig.controller, rig.controller.queue
    cordoned = node("h1")
    cordoned["spec"]["unschedulable"] = True
    controller.node_event(cordoned, deleted=False)
    rig.create_app(falapp())
    while len(queue):
        queue.done(await queue.get())
    queue.add(KEY)
    assert await queue.get() == KEY  # a worker takes the app
    reconcile = await reconcile_writing(rig, A100)  # H100 has no room: it is placed on A100
    controller.node_event(node("h1"), deleted=False)  # uncordoned while the reconcile writes
    await reconcile
    assert APP in controller.waiting
    queue.done(KEY)
    assert len(queue) == 1 and await queue.get() == KEY, "room that came during the reconcile woke nobody"


async def test_an_app_that_never_returns_is_not_woken_by_room_on_the_type_it_prefers(rig: Rig) -> None:
    """returnToPreferred: false: placed on its second type, the app has nothing to do when room comes
    back on the first, so that room wakes nobody (it used to queue every such app for a no-op pass)."""
    controller, queue = rig.controller, rig.controller.queue
    cordoned = node("h1")
    cordoned["spec"]["unschedulable"] = True
    controller.node_event(cordoned, deleted=False)
    body = falapp()
    body["spec"]["fallback"] = {"returnToPreferred": False}
    rig.create_app(body)
    await rig.reconcile()
    assert rig.fake.objects[f"{DEPLOYMENTS}/{A100}"]["spec"]["replicas"] == 1  # H100 had no room
    assert f"{DEPLOYMENTS}/{H100}" not in rig.fake.objects
    await drained(controller)
    assert APP not in controller.off_preferred and APP not in controller.waiting
    controller.node_event(node("h1"), deleted=False)  # room on the type it prefers
    assert len(queue) == 0 and not woken(controller), "an app that never returns was woken by room"


async def test_room_that_comes_while_an_app_is_placed_where_it_prefers_does_not_wake_it(rig: Rig) -> None:
    controller, queue = rig.controller, rig.controller.queue
    rig.create_app(falapp())
    assert await queue.get() == KEY
    reconcile = await reconcile_writing(rig, H100)
    controller.node_event(node("h2"), deleted=False)  # more room on H100, while the reconcile writes
    await reconcile
    queue.done(KEY)
    assert APP not in controller.waiting and len(queue) == 0, "an app where it prefers was reconciled again"


async def drained(controller: Controller) -> None:
    while len(controller.queue):
        controller.queue.done(await controller.queue.get())


def off_preferred_other(controller: Controller) -> None:
    """Another app of the namespace runs replicas off its preferred type and would move up to H100 (that
    move is the operator's call on free room); a third would move up only to A100; a fourth merely has
    replicas pending (the scheduler's to place)."""
    for app in (OTHER, (NS, "elsewhere"), (NS, "pending")):
        controller.apps.add(app)
        controller.waiting.add(app)
    controller.off_preferred[OTHER] = frozenset({"gpu-h100"})
    controller.off_preferred[(NS, "elsewhere")] = frozenset({"gpu-a100"})


def only_other_woken(controller: Controller) -> bool:
    apps = woken(controller)
    return OTHER in apps and not apps & {(NS, "elsewhere"), (NS, "pending")}


def woken(controller: Controller) -> set[tuple[str, str]]:
    """Apps queued, or to be within CLAIMS_WAKE_WINDOW (one pass for however many claims went)."""
    return {key[1:] for key in (*controller.queue._queued, *controller.queue._batches) if key[0] == "app"}


async def test_room_a_pending_pod_claimed_wakes_the_apps_waiting_for_room_when_the_pod_goes(rig: Rig) -> None:
    """A replica about to be bound claims room on the view; deleted before it was (its app scaled down,
    or deleted), the room is free again, and the apps waiting for it look, as when a pod leaves a node."""
    controller = rig.controller
    rig.create_app(falapp())
    await rig.reconcile()
    pending = rig.pending_pod("p1")
    controller.pod_event(pending, deleted=False)
    assert rig.other_app_sees() == [7], "the pending replica claims a GPU"
    off_preferred_other(controller)
    await drained(controller)
    controller.pod_event(pending, deleted=True)
    assert rig.other_app_sees() == [8]
    assert only_other_woken(controller), woken(controller)


async def test_replicas_no_longer_wanted_free_their_room_for_the_apps_that_would_move_there(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replicas an app asked for claim room until their pods come; scaled down before they did, the room
    is free again and the apps that would move up there look. Replicas whose pods are merely late free
    their room after EXPECTATION_TTL without waking anyone (in a burst of thousands, that is every
    second): the next event or reconcile sees it."""
    monkeypatch.setattr(asks_module, "EXPECTATION_TTL", 0.3)
    controller = rig.controller
    rig.create_app(falapp(replicas=2))
    await rig.reconcile()  # asks for two replicas on H100; their pods have not come
    assert rig.other_app_sees() == [6]
    off_preferred_other(controller)
    await drained(controller)
    controller.falapp_watched("MODIFIED", rig.fake.put(FALAPP, {**falapp(replicas=1), "metadata": {
        **falapp()["metadata"], "generation": 2}}))
    await rig.reconcile()
    assert rig.other_app_sees() == [7]
    assert only_other_woken(controller), woken(controller)
    controller.queue._batches.clear()
    await asyncio.sleep(0.4)
    assert rig.other_app_sees() == [8], "the replica whose pod never came still claims room"
    assert not woken(controller) - {APP}, "a late pod's room woke apps"


def hog(name: str = "hog") -> dict:
    """Another app's replica about to be bound, asking for all eight GPUs of an H100 node."""
    return {"metadata": {"name": name, "uid": name, "namespace": NS,
                         "labels": {APP_LABEL: "other", TYPE_LABEL: "gpu-h100"}},
            "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"nvidia.com/gpu": "8"}}}]},
            "status": {"phase": "Pending"}}


async def test_an_app_that_fell_back_for_want_of_room_another_claimed_looks_again_when_the_claim_goes(
        rig: Rig) -> None:
    controller = rig.controller
    controller.pod_event(hog(), deleted=False)
    rig.create_app(falapp())
    assert f"PATCH {DEPLOYMENTS}/{A100}" in await rig.reconcile()  # H100 spoken for: placed on A100
    assert controller.off_preferred[APP] == {"gpu-h100"}
    await drained(controller)
    controller.pod_event(hog(), deleted=True)
    assert APP in woken(controller), "the app off its preferred type slept through the room given up"


async def test_a_claim_given_up_on_a_type_without_nodes_wakes_nobody(rig: Rig) -> None:
    """A lost pool's replacements go (their Deployment deleted in the move) before the scheduler judged
    them: with no node of the type left, their claims held no room, so the apps that would move there
    are not woken for it, a hundred at a time; once a node is back, a claim going wakes them again."""
    controller = rig.controller
    controller.pod_event(hog(), deleted=False)
    rig.create_app(falapp())
    assert f"PATCH {DEPLOYMENTS}/{A100}" in await rig.reconcile()  # H100 spoken for: placed on A100
    assert controller.off_preferred[APP] == {"gpu-h100"}
    controller.node_event(node("h1"), deleted=True)
    await drained(controller)
    controller.pod_event(hog(), deleted=True)
    assert APP not in woken(controller), "a claim on a type without nodes woke the app"
    controller.node_event(node("h1"), deleted=False)
    assert APP in woken(controller), "the node back is what wakes the app"
    await drained(controller)
    controller.pod_event(hog("hog-2"), deleted=False)
    controller.pod_event(hog("hog-2"), deleted=True)
    assert APP in woken(controller)


@pytest.mark.parametrize("replica", ["running", "pending"])
async def test_an_app_that_never_returns_looks_again_when_room_is_given_up_only_for_a_pending_replica(
        rig: Rig, replica: str) -> None:
    """returnToPreferred: false: a replica running on the second type stays there, so room given up
    on the first wakes nobody; a replica pending there still moves up, so it does."""
    controller = rig.controller
    controller.pod_event(hog(), deleted=False)
    body = falapp()
    body["spec"]["fallback"] = {"returnToPreferred": False}
    rig.create_app(body)
    assert f"PATCH {DEPLOYMENTS}/{A100}" in await rig.reconcile()  # H100 spoken for: placed on A100
    rig.pod_of(A100, "llm-1", "a1" if replica == "running" else None)
    await rig.reconcile()
    await drained(controller)
    for batch in controller.queue._batches.values():  # the pod's own event: seen by the reconcile above
        batch.cancel()
    controller.queue._batches.clear()
    controller.pod_event(hog(), deleted=True)
    assert (APP in woken(controller)) == (replica == "pending"), woken(controller)


@pytest.mark.parametrize("relabelled", ["other", None])
@pytest.mark.parametrize("seen_by", ["watch", "resync"])
async def test_a_pod_relabelled_away_from_an_app_wakes_the_app_it_left(rig: Rig, relabelled: str | None,
                                                                        seen_by: str) -> None:
    """Someone takes a replica out of its app (its app label changed or removed, e.g. to keep it for
    debugging): the app it left counts it no more, so it is reconciled, and so is the app it joined;
    whether the watch tells it or a resync finds it (the watch away meanwhile)."""
    controller = rig.controller
    rig.create_app(falapp())
    await rig.reconcile()
    pod = rig.pod_of(H100, "llm-1", "h1")
    await drained(controller)
    for batch in controller.queue._batches.values():
        batch.cancel()
    controller.queue._batches.clear()
    labels = {k: v for k, v in pod["metadata"]["labels"].items() if k != APP_LABEL}
    if relabelled:
        labels[APP_LABEL] = relabelled
    relabelled_pod = {**pod, "metadata": {**pod["metadata"], "labels": labels, "resourceVersion": "999"}}
    if seen_by == "watch":
        controller.pod_event(relabelled_pod, deleted=False)
    else:
        rig.fake.put(f"/api/v1/namespaces/{NS}/pods/llm-1", relabelled_pod)
        rig.nodes_in_api()
        await controller.resync()
    assert woken(controller) == {APP} | ({(NS, relabelled)} if relabelled else set())
    assert controller.app_pods.of_app(*APP) == []


@pytest.mark.parametrize("h100_nodes", [True, False])
async def test_room_given_up_while_an_app_is_reconciled_wakes_it_once_more(rig: Rig, h100_nodes: bool) -> None:
    """A claim on H100 given up while the app goes to A100 wakes it again once the reconcile is done;
    on an H100 type without nodes the claim held no room, and it does not."""
    controller, queue = rig.controller, rig.controller.queue
    if not h100_nodes:
        controller.node_event(node("h1"), deleted=True)
    controller.pod_event(hog(), deleted=False)
    rig.create_app(falapp())
    await drained(controller)
    queue.add(KEY)
    assert await queue.get() == KEY
    reconcile = await reconcile_writing(rig, A100)
    controller.pod_event(hog(), deleted=True)  # the claim on H100 given up while the app goes to A100
    await reconcile
    queue.done(KEY)
    if h100_nodes:
        assert KEY in queue._batches or KEY in queue._queued, "room given up during the reconcile woke nobody"
    else:
        assert controller.off_preferred[APP] == {"gpu-h100"}
        assert KEY not in queue._batches and KEY not in queue._queued, "a claim that held no room woke the app"


async def test_claims_given_up_on_a_type_with_nodes_and_one_without_wake_only_the_apps_of_the_first(
        rig: Rig) -> None:
    controller = rig.controller
    pods = [hog("on-h100"), hog("on-a100")]  # a third app's, about to be bound
    for pod, machine_type in zip(pods, ("gpu-h100", "gpu-a100"), strict=True):
        pod["metadata"]["labels"] = {APP_LABEL: "third", TYPE_LABEL: machine_type}
        controller.pod_event(pod, deleted=False)
    off_preferred_other(controller)  # OTHER would move up to H100, "elsewhere" to A100
    controller.node_event(node("h1"), deleted=True)
    await drained(controller)
    for pod in pods:
        controller.pod_event(pod, deleted=True)
    assert woken(controller) - {(NS, "third")} == {(NS, "elsewhere")}, woken(controller)


QUOTA_REFUSAL = 'pods "x" is forbidden: exceeded quota: gpus, requested: requests.nvidia.com/gpu=1'
WEBHOOK_TIMEOUT = 'Internal error occurred: failed calling webhook "gpu.example": context deadline exceeded'


def deployment_failing(rig: Rig, reason: str, message: str = WEBHOOK_TIMEOUT, lasted: float = 0) -> None:
    """The H100 Deployment as the controller manager reports a ReplicaFailure of `reason`, first reported
    `lasted` seconds ago by the API server's clock."""
    refused = copy.deepcopy(rig.fake.objects[f"{DEPLOYMENTS}/{H100}"])
    since = format_time(rig.api.clock.now() - timedelta(seconds=lasted))
    refused["status"] = {"replicas": 0, "observedGeneration": 1, "conditions": [{
        "type": "ReplicaFailure", "status": "True", "reason": reason, "message": message,
        "lastTransitionTime": since}]}
    rig.controller.child_watched(rig.controller.deployments, "MODIFIED", rig.fake.put(f"{DEPLOYMENTS}/{H100}", refused))


def scale(rig: Rig, replicas: int, generation: int) -> None:
    rig.controller.falapp_watched("MODIFIED", rig.fake.put(FALAPP, {**falapp(replicas=replicas), "metadata": {
        **falapp()["metadata"], "generation": generation}}))


async def test_replicas_asked_for_where_the_replicaset_cannot_create_pods_claim_no_room(rig: Rig) -> None:
    """The ReplicaSet's creates fail (a webhook timing out). Replicas asked for before that claim room
    until they expire (the failure may last seconds only), but further asks claim nothing while creates
    fail, however often the app is scaled."""
    rig.create_app(falapp(replicas=1))
    await rig.reconcile()
    assert rig.other_app_sees() == [7]
    deployment_failing(rig, "FailedCreate")
    scale(rig, 2, 2)
    await rig.reconcile()
    assert rig.fake.objects[f"{DEPLOYMENTS}/{H100}"]["spec"]["replicas"] == 2
    assert rig.other_app_sees() == [7], "a replica asked for while creates fail claimed room"
    deployment_failing(rig, "FailedDelete")  # deleting failed, creating did not
    scale(rig, 3, 3)
    await rig.reconcile()
    assert rig.other_app_sees() == [6]


def asked_earlier(controller: Controller, seconds: float) -> None:
    """The app's replicas expected on H100 as if asked for `seconds` earlier."""
    by_type = controller.cache.claims._expected[APP]
    by_type["gpu-h100"] = deque((at - seconds, shape) for at, shape in by_type["gpu-h100"])


SERVICE_ACCOUNT_MISSING = ('pods "x" is forbidden: error looking up service account team-a/nobody: '
                           'serviceaccount "nobody" not found')


@pytest.mark.parametrize("refusal", [QUOTA_REFUSAL, SERVICE_ACCOUNT_MISSING])
async def test_replicas_refused_for_good_give_their_room_back(rig: Rig, refusal: str) -> None:
    """A tenant's app scaled beyond its namespace's GPU quota, or naming a ServiceAccount that is not
    there. A refusal of a moment keeps the claim (an app's own fallback grows the next type before its
    stuck pod is gone and counted out of a tight quota: the ReplicaSet's retry a second later succeeds),
    and so does a refusal reported as old for a replica asked for a moment ago (the condition reported
    late, or kept from an earlier refusal); the app looks again when both have lasted REFUSAL_LASTING, and
    then the room goes back, not when the ask expires (30 s), and the apps that would move to that type
    look again."""
    controller, loop = rig.controller, asyncio.get_running_loop()
    lasting = asks_module.REFUSAL_LASTING
    rig.create_app(falapp(replicas=1))
    await rig.reconcile()
    assert rig.other_app_sees() == [7]
    off_preferred_other(controller)
    await drained(controller)
    deployment_failing(rig, "FailedCreate", refusal, lasted=1)
    await rig.reconcile()
    assert rig.other_app_sees() == [7], "room given back at a refusal of a moment"
    assert lasting - 2 < controller.queue._routine_timers[KEY].when() - loop.time() < lasting, "not woken then"
    deployment_failing(rig, "FailedCreate", refusal, lasted=lasting + 60)
    await rig.reconcile()
    assert rig.other_app_sees() == [7], "room asked for a moment ago given back on an old refusal"
    assert controller.queue._routine_timers[KEY].when() - loop.time() < lasting, "not woken when the ask is old"
    await drained(controller)
    asked_earlier(controller, lasting)
    await rig.reconcile()
    assert rig.other_app_sees() == [8], "room the refusal will not let the app use stayed claimed"
    assert only_other_woken(controller), woken(controller)
    scale(rig, 2, 2)
    await rig.reconcile()
    assert rig.other_app_sees() == [8], "a replica asked for while refused claimed room"


@pytest.mark.parametrize("failure", [QUOTA_REFUSAL, SERVICE_ACCOUNT_MISSING])
async def test_an_app_whose_pods_are_refused_claims_no_room_by_scaling_to_zero_and_back(
        rig: Rig, failure: str, caplog: pytest.LogCaptureFixture) -> None:
    """The refusal is seen on the Deployment, which goes with the app's last replica: scaled to zero and
    back, the app asks afresh on a new Deployment that reports nothing yet. The refusal is remembered for
    CREATE_FAILURE_MEMORY (told once in the log), so those asks claim nothing (else a tenant toggling its
    replicas would hide the room from everyone); asks after that claim again."""
    controller, now = rig.controller, [0.0]
    memory = asks_module.CREATE_FAILURE_MEMORY
    controller.asks.refused_creates = RefusedCreates(memory, clock=lambda: now[0])
    rig.create_app(falapp(replicas=1))
    await rig.reconcile()
    deployment_failing(rig, "FailedCreate", failure, lasted=1)
    with caplog.at_level(logging.INFO, logger="falapp_operator"):
        await rig.reconcile()
        for generation, replicas in ((2, 0), (3, 2), (4, 0), (5, 1)):
            now[0] += 60
            scale(rig, replicas, generation)
            await rig.reconcile()
            assert (f"{DEPLOYMENTS}/{H100}" in rig.fake.objects) == (replicas > 0)
            assert rig.other_app_sees() == [8], f"{replicas} replicas asked for afresh claimed room"
    told = [r.getMessage() for r in caplog.records if "pods refused on gpu-h100" in r.getMessage()]
    assert len(told) == 1 and failure in told[0], told
    now[0] += memory + 1  # that long since the refusal was last seen
    for generation, replicas in ((6, 0), (7, 1)):
        scale(rig, replicas, generation)
        await rig.reconcile()
    assert rig.other_app_sees() == [7], "an ask long after the last refusal claims room again"


def test_a_quota_refusal_holds_the_namespaces_claims_and_another_the_apps_own_until_its_pod_comes() -> None:
    """A namespace's quota refuses every app of it; a ServiceAccount not there, or a webhook's denial, is
    the refused app's own, and over once one of its pods is created there. Both end CREATE_FAILURE_MEMORY
    after the last look that saw them, and with the namespace."""
    now = [0.0]
    refused = RefusedCreates(300.0, clock=lambda: now[0])
    llm, sdxl, elsewhere = ("team-a", "llm"), ("team-a", "sdxl"), ("team-b", "llm")
    assert refused.note(llm, "gpu-h100", quota=True) and not refused.note(llm, "gpu-h100", quota=True)
    assert refused.note(sdxl, "gpu-a100", quota=False)
    assert refused.refused(llm) == {"gpu-h100"} and refused.refused(sdxl) == {"gpu-h100", "gpu-a100"}
    assert refused.refused(elsewhere) == set()
    refused.created(sdxl, "gpu-h100")  # the quota's refusal is not the app's to end
    refused.created(sdxl, "gpu-a100")
    assert refused.refused(sdxl) == {"gpu-h100"}
    refused.note(sdxl, "gpu-a100", quota=False)
    now[0] = 299.0
    refused.note(llm, "gpu-h100", quota=True)  # seen again: remembered from now
    now[0] = 301.0
    assert refused.refused(sdxl) == {"gpu-h100"}, "the app's own refusal outlived its memory"
    assert refused.note(elsewhere, "gpu-h100", quota=True), "(sweeps what is past its memory)"
    assert refused._by_app == {}, "an old refusal kept after a sweep"
    now[0] = 600.0
    assert refused.refused(llm) == set()
    assert refused.note(llm, "gpu-h100", quota=True), "a refusal seen again past its memory is told as new"
    refused.note(sdxl, "gpu-a100", quota=False)
    refused.forget_namespace("team-a")
    assert refused.refused(sdxl) == set() and refused.refused(elsewhere) == {"gpu-h100"}


@pytest.mark.parametrize(("message", "for_good"), [
    (QUOTA_REFUSAL, True), (SERVICE_ACCOUNT_MISSING, True), (WEBHOOK_TIMEOUT, False),
    ('admission webhook "gpu.example" denied the request: no GPUs for this team', True),
    ('pods "x" is forbidden: status unknown for quota: gpus, resource: requests.nvidia.com/gpu', False),
    ('pods "x" is forbidden: User "system:serviceaccount:kube-system:replicaset-controller" cannot create '
     'resource "pods" in API group "" in the namespace "team-a"', False)])
def test_which_refusals_are_for_good(message: str, for_good: bool) -> None:
    assert refused_for_good(message) is for_good


async def test_an_apps_own_refusal_ends_when_one_of_its_pods_is_created_there(rig: Rig) -> None:
    """A ServiceAccount that was missing is there now: the app's first pod on the type ends the refusal,
    and its next asks claim room again."""
    rig.create_app(falapp(replicas=1))
    await rig.reconcile()
    deployment_failing(rig, "FailedCreate", SERVICE_ACCOUNT_MISSING, lasted=1)
    await rig.reconcile()
    for generation, replicas in ((2, 0), (3, 2)):
        scale(rig, replicas, generation)
        await rig.reconcile()
    assert rig.other_app_sees() == [8]
    by_hand = rig.pending_pod("by-hand")  # the app's labels, no ReplicaSet of its: anyone's pod
    del by_hand["metadata"]["ownerReferences"]
    by_hand["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                        "lastTransitionTime": "2025-01-01T00:00:00Z"}]  # (claiming nothing itself)
    rig.controller.pod_event(rig.fake.put(f"{PODS}/by-hand", by_hand), deleted=False)
    scale(rig, 3, 4)
    await rig.reconcile()
    assert rig.other_app_sees() == [8], "a pod made by hand with the app's labels ended its refusal"
    rig.pod_of(H100, "llm-1", None)  # its ReplicaSet's, judged unschedulable: it claims nothing itself
    scale(rig, 4, 5)
    await rig.reconcile()
    assert rig.other_app_sees() == [7], "a replica asked for after the app's pod came claimed no room"


async def test_replicas_a_webhook_keeps_failing_claim_room_until_they_expire(rig: Rig) -> None:
    """Only a refusal for good gives room back early: a create failing for another reason (a webhook
    timing out) may pass at the next try, so the replicas asked for claim their room until they expire."""
    rig.create_app(falapp(replicas=1))
    await rig.reconcile()
    deployment_failing(rig, "FailedCreate", WEBHOOK_TIMEOUT, lasted=100)
    asked_earlier(rig.controller, 20)
    await rig.reconcile()
    assert rig.other_app_sees() == [7]


async def test_a_reconcile_retried_after_a_failed_write_asks_for_its_replicas_once(rig: Rig) -> None:
    rig.create_app(falapp(replicas=2))
    rig.fake.fail("PATCH", f"/deployments/{H100}", 503)
    with pytest.raises(ApiError):
        await rig.reconcile()
    await rig.reconcile()
    assert rig.other_app_sees() == [6], "the replicas asked for were counted twice"


async def test_an_app_gone_before_its_replicas_came_frees_their_room_for_the_apps_waiting(rig: Rig) -> None:
    controller = rig.controller
    rig.create_app(falapp())
    await rig.reconcile()
    off_preferred_other(controller)
    await drained(controller)
    del rig.fake.objects[FALAPP]
    controller.falapp_watched("DELETED", {"metadata": {"name": "llm", "namespace": NS, "uid": "app-1"}})
    await rig.reconcile()
    assert rig.other_app_sees() == [8]
    assert only_other_woken(controller), woken(controller)


def nodeless_for(controller: Controller, spec: FalAppSpec) -> dict[str, datetime]:
    """What a reconcile of an app of `spec` reads: its types without nodes, and since when."""
    return controller.nodeless.observe_for(spec, controller.types.declared.values())


async def test_a_type_without_schedulable_nodes_is_known_from_when_its_last_node_went(rig: Rig) -> None:
    """What the engine's lost-pool rule rests on: a type's 'no node at all' time is when the operator saw
    its last node go (never earlier), and it is forgotten as soon as a node is back."""
    rig.create_app(falapp())
    await rig.reconcile()
    spec = FalAppSpec.model_validate(falapp()["spec"])
    assert nodeless_for(rig.controller, spec) == {}
    before = rig.api.clock.now()
    rig.controller.node_event(node("h1"), deleted=True)
    assert list(rig.controller.nodeless.since) == [("gpu-h100", False)], "known only once an app looks"
    await rig.reconcile()
    since = nodeless_for(rig.controller, spec)
    assert list(since) == ["gpu-h100"] and since["gpu-h100"] >= before
    await rig.reconcile()
    assert nodeless_for(rig.controller, spec) == since, "a later look moved the time"
    rig.controller.node_event(node("h1"), deleted=False)
    await rig.reconcile()
    assert nodeless_for(rig.controller, spec) == {}


async def test_a_node_back_ends_the_types_time_without_nodes_even_if_no_app_looks(rig: Rig) -> None:
    """A stale 'no node since' would let a later loss skip the timeout: a node that is back ends it at
    once, not at the next reconcile of an app of that type."""
    rig.create_app(falapp())
    spec = FalAppSpec.model_validate(falapp()["spec"])
    rig.controller.node_event(node("h1"), deleted=True)
    await rig.reconcile()
    assert list(nodeless_for(rig.controller, spec)) == ["gpu-h100"]
    rig.controller.node_event(node("h1"), deleted=False)  # back; no reconcile in between
    assert rig.controller.nodeless.since == {}
    cordoned = node("a1")
    cordoned["spec"]["unschedulable"] = True
    rig.controller.node_event(cordoned, deleted=False)
    await rig.reconcile()
    assert list(nodeless_for(rig.controller, spec)) == ["gpu-a100"]
    rig.controller.node_event(node("h2"), deleted=False)  # another type's node: A100 is still without any
    assert list(rig.controller.nodeless.since) == [("gpu-a100", False)]


async def test_a_deleted_node_wakes_the_apps_with_pods_on_it(rig: Rig) -> None:
    """Pods bound to a deleted node stay until the pod garbage collector comes, with no event: the node's
    deletion itself wakes their apps (cordoned or NotReady first or not), and only theirs."""
    rig.create_app(falapp())
    await rig.reconcile()
    rig.pod_of(H100, "p1", "h1")
    controller = rig.controller
    controller.node_event(node("h2"), deleted=False)  # h1 is not the type's last node
    while len(controller.queue):
        controller.queue.done(await controller.queue.get())
    down = node("h1")
    down["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    controller.node_event(down, deleted=False)
    assert len(controller.queue) == 0, "batched with the pods' events"
    assert await controller.queue.get() == KEY
    controller.queue.done(KEY)
    controller.node_event(down, deleted=True)  # NotReady first, then deleted
    assert await controller.queue.get() == KEY
    controller.queue.done(KEY)
    controller.node_event(node("a1"), deleted=True)  # none of its pods there
    queued = [await controller.queue.get() for _ in range(len(controller.queue))]
    assert KEY not in queued, queued


async def test_the_last_node_of_a_type_going_wakes_every_app_with_replicas_of_the_type(rig: Rig) -> None:
    """A lost pool's apps must hear of the loss when it happens: the pods on the nodes that went first woke
    their apps while nodes were left, and an app whose pods are elsewhere (pending, or on a node that went
    earlier) would otherwise wait for its next pod event before its timeout even starts."""
    rig.create_app(falapp())
    await rig.reconcile()
    rig.pod_of(H100, "p1", "h1")
    controller = rig.controller
    controller.node_event(node("h2"), deleted=False)
    spec = FalAppSpec.model_validate(falapp()["spec"])
    controller.node_event(node("h1"), deleted=True)  # its pod's node: the app wakes, H100 has a node left
    assert await controller.queue.get() == KEY
    controller.queue.done(KEY)
    assert nodeless_for(controller, spec) == {}
    before = rig.api.clock.now()
    controller.node_event(node("h2"), deleted=True)  # no pod of the app there, but the type's last node
    assert len(controller.queue) == 1, "woken at once, not batched"
    assert await controller.queue.get() == KEY
    controller.queue.done(KEY)
    assert nodeless_for(controller, spec)["gpu-h100"] >= before
    controller.node_event(node("a1"), deleted=True)  # the other listed type: the app has no replica there
    assert len(controller.queue) == 0


async def test_a_type_lost_to_a_taint_wakes_its_apps_and_its_nodes_deletion_later_does_not(rig: Rig) -> None:
    """A pool tainted away (maintenance, remediation) is lost as much as a deleted one; deleting its nodes
    afterwards changes nothing more and wakes no app again."""
    rig.create_app(falapp())
    await rig.reconcile()
    controller = rig.controller
    spec = FalAppSpec.model_validate(falapp()["spec"])
    tainted = node("h1")
    tainted["spec"]["taints"] = [{"key": "maintenance", "value": "gpu", "effect": "NoSchedule"}]
    before = rig.api.clock.now()
    controller.node_event(tainted, deleted=False)
    assert await controller.queue.get() == KEY
    controller.queue.done(KEY)
    since = nodeless_for(controller, spec)["gpu-h100"]
    assert since >= before
    controller.node_event(tainted, deleted=True)
    assert len(controller.queue) == 0, "a node no longer of the type woke its apps again"
    assert nodeless_for(controller, spec)["gpu-h100"] == since


async def test_replicas_coming_up_one_by_one_cost_one_status_write_a_second(rig: Rig) -> None:
    """A status change of counts only (one more replica) within a second of the last status write waits
    for the rest of that second, and is then written as it is then; one with other writes goes at once."""
    rig.create_app(falapp(replicas=2))
    await rig.reconcile()
    rig.pod_of(H100, "p1", "h1")
    assert await rig.reconcile() == [], "a replica more, a moment after the last status write"
    assert rig.status()["replicas"] == 0
    rig.pod_of(H100, "p2", "h1")
    assert await rig.reconcile() == []
    rig.controller.status_turns.written[APP] -= 1.0  # the second is over
    rig.controller.status_turns.last_turn -= 1.0  # and the turn the first status took
    assert await rig.reconcile() == [STATUS]
    assert rig.status()["replicas"] == 2, "both in one write"
    rig.controller.falapp_watched("MODIFIED", rig.fake.put(FALAPP, {**falapp(replicas=3), "status": rig.status()}))
    assert await rig.reconcile() == [f"PATCH {DEPLOYMENTS}/{H100}", STATUS], "a change of spec shows at once"


async def test_counts_only_status_writes_of_all_apps_take_turns_at_the_budgets_rate(rig: Rig) -> None:
    """Past its own second, an app's counts-only write waits in line behind the apps waiting before it,
    one turn each 1/status_counts_rate s; an app whose counts go back leaves the line without using a
    turn (the line does not grow with flapping apps); a condition that turns is written at once."""
    controller = rig.controller
    controller.settings.status_counts_rate = 2.0
    rig.create_app(falapp(replicas=2))
    await rig.reconcile()
    controller.status_turns.written[APP] -= 1.0
    others = [(NS, f"other-{i}") for i in range(3)]
    for other in others:  # three apps wait before it
        controller.status_turns.waiting.add(other)
    controller.status_turns.last_turn = time.monotonic()
    p1 = rig.pod_of(H100, "p1", "h1")
    assert await rig.reconcile() == [], "written ahead of three apps waiting"
    assert list(controller.status_turns.waiting) == [*others, APP]
    for app in others:  # their turns, one each half second
        controller.status_turns.give_turn()
        assert app not in controller.status_turns.given, "a turn sooner than half a second after the last"
        controller.status_turns.last_turn -= 0.5
        controller.status_turns.give_turn()
        assert app in controller.status_turns.given
        controller.status_turns.forget_turn(app)
    assert await rig.reconcile() == [], "written before its turn"
    controller.status_turns.last_turn -= 0.5
    controller.status_turns.give_turn()
    assert await controller.queue.get() == KEY, "its turn did not wake it"
    controller.queue.done(KEY)
    assert await rig.reconcile() == [STATUS]
    assert rig.status()["replicas"] == 1 and not controller.status_turns.waiting and not controller.status_turns.given
    # a flap: Ready and back, while another app holds the line
    controller.status_turns.written[APP] -= 1.0
    controller.status_turns.waiting.add((NS, "other"))
    unready = [dict(c) for c in p1["status"]["conditions"]]
    p1["status"]["conditions"].append({"type": "Ready", "status": "True"})
    controller.pod_event(rig.fake.put(f"/api/v1/namespaces/{NS}/pods/p1", p1), deleted=False)
    assert await rig.reconcile() == [] and APP in controller.status_turns.waiting
    controller.pod_event(rig.fake.put(f"/api/v1/namespaces/{NS}/pods/p1", {**p1, "status": {
        **p1["status"], "conditions": unready}}), deleted=False)
    assert await rig.reconcile() == [] and APP not in controller.status_turns.waiting, "in line for nothing"
    # both Ready: the Ready condition turns True, written at once whoever waits
    controller.pod_event(rig.fake.put(f"/api/v1/namespaces/{NS}/pods/p1", p1), deleted=False)
    p2 = rig.pod_of(H100, "p2", "h1")
    p2["status"]["conditions"].append({"type": "Ready", "status": "True"})
    controller.pod_event(rig.fake.put(f"/api/v1/namespaces/{NS}/pods/p2", p2), deleted=False)
    writes = await rig.reconcile()
    assert writes[:1] == [STATUS] and rig.status()["readyReplicas"] == 2, "Ready turning True waited for a turn"


async def test_turns_slow_down_while_the_api_answers_status_writes_slowly(rig: Rig) -> None:
    """Counts wait when the API server is busy: status writes answered in more than status_counts_latency
    (a moving average) lower the turns' rate in proportion, down to one a second; fast answers, or time
    without answers, bring it back."""
    controller = rig.controller
    controller.settings.status_counts_rate, controller.settings.status_counts_latency = 10.0, 0.05
    rig.create_app(falapp())
    await rig.reconcile()  # answered at once by the fake
    assert controller.status_turns.rate() == 10.0
    assert REGISTRY.get_sample_value("falapp_status_counts_rate") == 10.0
    controller.status_turns.latency = 0.0
    rig.fake.slow("PATCH", "/falapps/llm/status", 0.1)
    await controller.writer.patch_status(NS, "llm", "app-1", {"status": {}}, Priority.NORMAL)
    assert 0.2 * 0.1 <= controller.status_turns.latency_now() <= 0.2 * 0.15, "one answer moves the average by a fifth"
    rig.fake.slow("PATCH", "/falapps/llm/status", 0.1, times=14)
    for _ in range(14):  # 0.1 s answers: twice the latency allowed, half the rate
        await controller.writer.patch_status(NS, "llm", "app-1", {"status": {}}, Priority.NORMAL)
    assert 4.0 <= controller.status_turns.rate() <= 5.5
    assert REGISTRY.get_sample_value("falapp_status_counts_rate") == pytest.approx(controller.status_turns.rate(), 0.05)
    # the turns follow: none sooner than 1/rate after the last (5 a second here)
    controller.status_turns.latency, controller.status_turns.latency_at = 0.1, time.monotonic()
    controller.status_turns.waiting.add((NS, "other"))
    controller.status_turns.last_turn = time.monotonic() - 0.1
    controller.status_turns.give_turn()
    assert not controller.status_turns.given, "a turn 0.1 s after the last at 5 a second"
    controller.status_turns.last_turn -= 0.2
    controller.status_turns.give_turn()
    assert set(controller.status_turns.given) == {(NS, "other")}
    controller.status_turns.forget_turn((NS, "other"))  # a lone app too: at once only 1/rate after the last turn
    controller.status_turns.last_turn = time.monotonic() - 0.1
    assert not controller.status_turns.take((NS, "lone")), "written 0.1 s after the last turn at 5 a second"
    controller.status_turns.forget_turn((NS, "lone"))
    controller.status_turns.last_turn -= 0.2
    assert controller.status_turns.take((NS, "lone"))
    # at the slowest, a turn held by an app whose write failed (kept for its retry) stops no one
    controller.status_turns.latency, controller.status_turns.latency_at = 1.0, time.monotonic()
    assert controller.status_turns.rate() == 1.0, "never below one a second"
    controller.status_turns.waiting.add((NS, "next"))
    controller.status_turns.last_turn -= 2.0
    controller.status_turns.give_turn()
    assert (NS, "next") in controller.status_turns.given
    # a lone answer, however slow, counts for at most ten times the latency allowed
    controller.status_turns.latency = 0.0
    controller.status_turns.answered_in(30.0)
    assert controller.status_turns.rate() == pytest.approx(5.0, 0.01)
    # a refusal of an overloaded API server is an answer too
    rig.fake.fail("PATCH", "/falapps/llm/status", 503, after=0.1)
    controller.status_turns.latency = 0.0
    with pytest.raises(ApiError):
        await controller.writer.patch_status(NS, "llm", "app-1", {"status": {}}, Priority.NORMAL)
    assert controller.status_turns.latency_now() >= 0.2 * 0.1
    # fast answers bring the full rate back; so does time without any answer
    rig.fake.slow("PATCH", "/falapps/llm/status", 0.0, times=1)
    controller.status_turns.latency = 0.5
    for _ in range(12):
        await controller.writer.patch_status(NS, "llm", "app-1", {"status": {}}, Priority.NORMAL)
    assert controller.status_turns.rate() == 10.0, "fast answers"
    controller.status_turns.latency, controller.status_turns.latency_at = 0.5, time.monotonic() - 30.0
    assert controller.status_turns.rate() == 10.0, "30 s without answers"
    # a write waiting 0.1 s for a slot (others' writes in flight) is no slow answer: the API was quick
    controller.writer.gate = RequestGate(1)
    controller.status_turns.latency = 0.0
    async with controller.writer.gate.slot(Priority.HISTORY):
        waiting = asyncio.create_task(controller.writer.patch_status(NS, "llm", "app-1", {"status": {}}, Priority.LOW))
        await asyncio.sleep(0.1)
    await waiting
    assert controller.status_turns.latency_now() < 0.2 * 0.05


async def test_a_turn_whose_write_failed_is_kept_for_the_retry(rig: Rig) -> None:
    controller = rig.controller
    rig.create_app(falapp(replicas=2))
    await rig.reconcile()
    controller.status_turns.written[APP] -= 1.0
    controller.status_turns.last_turn -= 1.0
    rig.pod_of(H100, "p1", "h1")
    rig.fake.fail("PATCH", "/falapps/llm/status", 429)
    with pytest.raises(ApiError):
        await rig.reconcile()
    assert APP in controller.status_turns.given
    controller.status_turns.last_turn = time.monotonic()  # someone else's turn just now
    assert await rig.reconcile() == [STATUS], "the retry waited for a new turn"


async def test_turns_are_not_given_while_a_seconds_worth_is_unused(rig: Rig) -> None:
    """Workers held up (a slow API server) leave turns unused; more are not given until they are, or the
    apps holding them would all write at once when the workers come back."""
    controller = rig.controller
    controller.settings.status_counts_rate = 2.0
    rig.create_app(falapp(replicas=2))
    await rig.reconcile()
    controller.status_turns.given.update([(NS, "a"), (NS, "b")])
    controller.status_turns.waiting.add((NS, "c"))
    controller.status_turns.last_turn -= 10
    controller.status_turns.give_turn()
    assert (NS, "c") in controller.status_turns.waiting and controller.status_turns.ticker is not None
    controller.status_turns.forget_turn((NS, "a"))
    controller.status_turns.ticker.cancel()
    controller.status_turns.give_turn()
    assert (NS, "c") in controller.status_turns.given
    assert controller.status_turns.given and not controller.status_turns.waiting
    controller.status_turns.written[APP] -= 1.0
    rig.pod_of(H100, "p1", "h1")
    assert await rig.reconcile() == [], "a turn at once while others' turns were unused"


async def test_a_warning_is_posted_once_while_the_status_that_records_it_waits_its_turn(rig: Rig) -> None:
    """InsufficientCapacity's message (the scheduler's words) changing is a counts-only change: while
    its status write waits in line, each reconcile would find the warning news again."""
    controller = rig.controller
    body = falapp(replicas=2)
    body["spec"]["machineTypes"] = ["GPU-H100"]
    rig.create_app(body)
    await rig.reconcile()
    controller.pod_event({"metadata": {"name": "hog", "uid": "hog", "namespace": "batch"},
                          "spec": {"nodeName": "h1", "containers": [{"resources": {"requests": {
                              "nvidia.com/gpu": "7"}}}]}, "status": {"phase": "Running"}}, deleted=False)
    rig.pod_of(H100, "ok", "h1")
    stuck = rig.pod_of(H100, "stuck", None)
    assert EVENTS in await rig.reconcile()
    controller.status_turns.waiting.add((NS, "other"))  # a line: the new message's write waits
    posted = 0
    for i in range(3):
        controller.status_turns.written[APP] -= 5
        message = f"0/{10 + i} nodes are available: {i} Insufficient nvidia.com/gpu"
        condition = {**stuck["status"]["conditions"][0], "message": message}
        controller.pod_event(rig.fake.put(f"/api/v1/namespaces/{NS}/pods/stuck", {
            **stuck, "status": {**stuck["status"], "conditions": [condition]}}), deleted=False)
        for _ in range(3):
            controller.queue.add(KEY)
            writes = await rig.reconcile()
            assert STATUS not in writes
            posted += writes.count(EVENTS)
    assert posted == 3, "one warning per new message, not one per reconcile"


async def test_a_warning_whose_post_failed_is_posted_again() -> None:
    """Posted once while the status lags behind: unless the post itself failed (the API refusing the app's
    requests may refuse the event too); then the next reconcile's warning is posted."""
    from falapp_operator.k8s.app_events import AppEvents
    from falapp_operator.reconcile.children import AppRef

    class Api:
        def __init__(self) -> None:
            self.posts: list[str] = []

        async def post_event(self, involved, event_type, reason, message) -> None:
            self.posts.append(reason)
            if len(self.posts) == 1:
                raise ApiError(429, "TooManyRequests", "slow down", "Event")

    async def send(priority, request):
        return await request
    api = Api()
    events = AppEvents(api, send)
    ref = AppRef("llm", NS, "app-1")
    for _ in range(3):
        events.warn(ref, "InsufficientCapacity", "no room")
        await asyncio.gather(*events.pending, return_exceptions=True)
    assert api.posts == ["InsufficientCapacity"] * 2, "the failed post was never made again, or posted each time"


def test_a_status_patch_of_counts_only_is_told_from_one_that_turns_a_condition() -> None:
    ready = {"observedGeneration": 1, "readyReplicas": 1,
             "conditions": [{"type": "Ready", "status": "False", "reason": "ReplicasNotReady", "message": "1/2"}]}
    more = {**ready, "readyReplicas": 2, "conditions": [{**ready["conditions"][0], "message": "2/2"}]}
    assert counts_only(ready, more)
    assert not counts_only(ready, {**more, "observedGeneration": 2})
    assert not counts_only(ready, {**more, "conditions": [{"type": "Ready", "status": "True"}]})
    assert not counts_only(ready, {**more, "conditions": [{**more["conditions"][0], "reason": "InsufficientCapacity"}]})
    assert not counts_only(ready, {**more, "attempts": [{"machineType": "GPU-H100"}]})



def _condition(kind: str, status: str, reason: str) -> dict:
    return {"type": kind, "status": status, "reason": reason, "message": "0/2 replicas ready", "observedGeneration": 1}


UNOBSERVED = {"observedGeneration": 0}  # the CRD's default status
STARTING = [_condition("Ready", "False", "ReplicasNotReady"), _condition("Reconciling", "True", "ReplicasNotReady"),
            _condition("Stalled", "False", "SpecValid"), _condition("FallbackActive", "False", "OnPreferred")]


@pytest.mark.parametrize(("current", "desired", "waits"), [
    ({"observedGeneration": 0}, {"observedGeneration": 1, "replicas": 0, "conditions": STARTING}, True),
    ({"observedGeneration": 0}, {"observedGeneration": 1, "attempts": [], "probes": [], "conditions": STARTING},
     True),
    # no status at all (a CRD without the default): kstatus reads it as Current, not InProgress
    ({}, {"observedGeneration": 1, "conditions": STARTING}, False),
    # news about a new app: it fell back, cannot run, is refused, or is Ready already
    (UNOBSERVED, {"observedGeneration": 1,
                  "conditions": [*STARTING[:3], _condition("FallbackActive", "True", "FellBack")]}, False),
    (UNOBSERVED, {"observedGeneration": 1, "conditions": [_condition("Ready", "False", "InsufficientCapacity")]},
     False),
    (UNOBSERVED, {"observedGeneration": 1, "conditions": [_condition("Stalled", "True", "RequestRejected")]}, False),
    (UNOBSERVED, {"observedGeneration": 1, "conditions": [_condition("Ready", "True", "AllReplicasReady")]}, False),
    (UNOBSERVED, {"observedGeneration": 1, "conditions": STARTING, "attempts": [{"machineType": "GPU-H100"}]}, False),
    # not the first status: a new generation of an app already written is news
    ({"observedGeneration": 1, "conditions": STARTING}, {"observedGeneration": 2, "conditions": STARTING}, False),
    ({"conditions": STARTING}, {"observedGeneration": 1, "conditions": STARTING}, False),
])
def test_a_new_apps_first_status_waits_only_when_it_says_its_replicas_are_starting(
        current: dict, desired: dict, waits: bool) -> None:
    assert first_sight(current, desired) is waits


def unobserved(body: dict) -> dict:
    """A FalApp as the API server shows it when just created: the CRD's default status."""
    return {**body, "status": dict(UNOBSERVED)}


async def test_a_new_apps_first_status_takes_its_turn_namespaces_in_turn(rig: Rig) -> None:
    """Many apps created at once: the Deployment of each is applied at once, its first status (saying the
    replicas are starting; the app reads InProgress meanwhile) waits in line like counts, and is written as
    it is when the turn comes. Another tenant's burst holds it up by one turn, not by the burst."""
    controller = rig.controller
    controller.settings.status_counts_rate = 2.0
    burst = [("team-b", f"app-{i}") for i in range(3)]
    for app in burst:
        controller.status_turns.waiting.add(app)
    controller.status_turns.last_turn = time.monotonic()
    rig.create_app(unobserved(falapp(replicas=2)))
    assert await rig.reconcile() == [f"PATCH {DEPLOYMENTS}/{H100}"], "the Deployment at once, the status waits"
    assert rig.status() == UNOBSERVED
    assert list(controller.status_turns.waiting) == [burst[0], APP, *burst[1:]]
    assert REGISTRY.get_sample_value("falapp_status_writes_waiting") == 4
    for expected in (burst[0], APP):
        controller.status_turns.last_turn -= 0.5
        controller.status_turns.give_turn()
        assert expected in controller.status_turns.given
    rig.pod_of(H100, "p1", "h1")  # one replica of two running, not Ready
    assert await rig.reconcile() == [STATUS], "its turn came"
    status = rig.status()
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (status["observedGeneration"], status["replicas"], ready["status"], ready["reason"]) == (
        1, 1, "False", "ReplicasNotReady")
    assert APP not in controller.status_turns.given and APP not in controller.status_turns.waiting


async def test_a_new_app_ready_before_its_turn_costs_one_status_write(rig: Rig) -> None:
    controller = rig.controller
    controller.settings.status_counts_rate = 2.0
    for i in range(3):
        controller.status_turns.waiting.add((NS, f"other-{i}"))
    controller.status_turns.last_turn = time.monotonic()
    rig.create_app(unobserved(falapp(replicas=1)))
    assert await rig.reconcile() == [f"PATCH {DEPLOYMENTS}/{H100}"]
    pod = rig.pod_of(H100, "p1", "h1")
    pod["status"]["conditions"].append({"type": "Ready", "status": "True"})
    controller.pod_event(rig.fake.put(f"/api/v1/namespaces/{NS}/pods/p1", pod), deleted=False)
    assert await rig.reconcile() == [STATUS], "Ready is written at once, whoever waits"
    ready = next(c for c in rig.status()["conditions"] if c["type"] == "Ready")
    assert (ready["status"], rig.status()["observedGeneration"]) == ("True", 1)
    assert APP not in controller.status_turns.waiting, "in line for a write already made"
    assert REGISTRY.get_sample_value("falapp_status_writes_waiting") == 3



async def test_a_new_apps_first_status_waits_for_a_turn_at_most_status_first_wait(rig: Rig) -> None:
    """Bounded: past status_first_wait (counted from its first wait until it is written) the first status
    goes without a turn (an HPA aimed at the app reads status.selector, people read the columns), still
    behind other apps' placement requests; the app is woken for it, also after a failed reconcile's
    back-off took its timer, and a refused write does not start the wait again."""
    controller = rig.controller
    controller.settings.status_counts_rate, controller.settings.status_first_wait = 2.0, 5.0
    for i in range(3):
        controller.status_turns.waiting.add((NS, f"other-{i}"))
    controller.status_turns.last_turn = time.monotonic()
    loop = asyncio.get_running_loop()
    rig.create_app(unobserved(falapp(replicas=2)))
    assert await rig.reconcile() == [f"PATCH {DEPLOYMENTS}/{H100}"]
    assert 4.9 < controller.queue._routine_timers[KEY].when() - loop.time() < 5.1, "not woken when its wait is over"
    controller.status_turns.first_waiting_since[APP] -= 2.0  # two seconds on, a failed reconcile backs off
    controller.queue.retry_after(KEY, 0.01)
    assert await asyncio.wait_for(controller.queue.get(), 1) == KEY
    controller.queue.done(KEY)
    assert await rig.reconcile() == [] and APP in controller.status_turns.waiting
    assert 2.9 < controller.queue._routine_timers[KEY].when() - loop.time() < 3.1, "the wake went with the back-off"
    controller.status_turns.first_waiting_since[APP] -= 3.0  # its wait is over; the write is refused for now
    rig.fake.fail("PATCH", "/falapps/llm/status", 503)
    with pytest.raises(ApiError):
        await rig.reconcile()
    assert APP not in controller.status_turns.waiting
    low = REGISTRY.get_sample_value("falapp_api_request_wait_seconds_count", {"priority": "low"}) or 0
    writes = await rig.reconcile()  # the app read afresh first: a 503 may have been written
    assert writes[-1] == STATUS and writes.count(STATUS) == 1, "the retry waited again"
    assert REGISTRY.get_sample_value("falapp_api_request_wait_seconds_count", {"priority": "low"}) == low + 1, \
        "past its turns, not past other apps' placement requests"
    assert rig.status()["observedGeneration"] == 1 and APP not in controller.status_turns.first_waiting_since


async def test_status_first_wait_0_writes_every_first_status_at_once(rig: Rig) -> None:
    controller = rig.controller
    controller.settings.status_first_wait = 0.0
    controller.status_turns.waiting.add((NS, "other"))
    controller.status_turns.last_turn = time.monotonic()
    low = REGISTRY.get_sample_value("falapp_api_request_wait_seconds_count", {"priority": "low"}) or 0
    rig.create_app(unobserved(falapp(replicas=2)))
    assert await rig.reconcile() == [f"PATCH {DEPLOYMENTS}/{H100}", STATUS]
    assert (REGISTRY.get_sample_value("falapp_api_request_wait_seconds_count", {"priority": "low"}) or 0) == low, \
        "at once is at normal priority"
    assert KEY not in controller.queue._routine_timers and KEY not in controller.queue._timers, "nothing to wake for"


async def test_a_first_status_written_at_its_turn_leaves_no_wake_behind(rig: Rig) -> None:
    controller = rig.controller
    rig.create_app(unobserved(falapp(replicas=2)))
    assert await rig.reconcile() == [f"PATCH {DEPLOYMENTS}/{H100}", STATUS], "the line is empty: its turn at once"
    assert KEY not in controller.queue._routine_timers and KEY not in controller.queue._timers
    assert APP not in controller.status_turns.first_waiting_since


async def test_turns_held_by_apps_in_back_off_do_not_stop_the_others(rig: Rig) -> None:
    """Apps given a turn while they wait out a back-off (their apply failing) hold it until their retry:
    those turns do not count as about to be used, and the line goes on; turns of apps merely queued
    (workers held up) still do, or they would all write at once when the workers come back."""
    controller = rig.controller
    controller.settings.status_counts_rate = 10.0
    held = [("team-b", f"app-{i}") for i in range(10)]
    controller.status_turns.given.update(held)
    controller.status_turns.waiting.add(APP)
    controller.status_turns.last_turn -= 10
    controller.status_turns.give_turn()
    assert APP not in controller.status_turns.given, "a second's worth of turns unused, the workers behind"
    controller.status_turns.ticker.cancel()
    controller.status_turns.ticker = None
    for app in held:
        controller.queue.retry_after(("app", *app), 60.0)
    controller.status_turns.give_turn()
    assert APP in controller.status_turns.given and not controller.status_turns.waiting
    assert all(app in controller.status_turns.given for app in held), "their retries still write at once"

@pytest.mark.parametrize("default_status", [True, False])
async def test_a_new_apps_first_status_that_is_news_is_written_at_once(rig: Rig, default_status: bool) -> None:
    """A new app that falls back (its first choice has no node) is news; an app with no status at all (its
    CRD installed without the default) reads as Current to kstatus until written: both at once."""
    controller = rig.controller
    for i in range(3):
        controller.status_turns.waiting.add((NS, f"other-{i}"))
    controller.status_turns.last_turn = time.monotonic()
    if default_status:
        controller.node_event(node("h1"), deleted=True)
    rig.create_app(unobserved(falapp()) if default_status else falapp())
    writes = await rig.reconcile()
    assert writes == [f"PATCH {DEPLOYMENTS}/{A100 if default_status else H100}", STATUS]
    fallback = next(c for c in rig.status()["conditions"] if c["type"] == "FallbackActive")
    assert fallback["status"] == ("True" if default_status else "False") and APP not in controller.status_turns.waiting


async def test_a_machine_types_new_selector_is_seen_at_once_and_its_labels_change_nothing(rig: Rig) -> None:
    """Which nodes are of a type is computed again when the type's spec changes (not only when nodes
    change); a label or annotation alone (a GitOps tool's) leaves its 'no node since' time as it was."""
    controller = rig.controller
    spec = FalAppSpec.model_validate(falapp()["spec"])
    assert controller.cache.free_of_type(controller.types.declared["gpu-h100"], False) != ()
    h100 = rig.fake.objects[f"{MACHINETYPES}/gpu-h100"]
    moved = {**h100, "spec": {**h100["spec"], "nodeSelector": {"pool": "elsewhere"}},
             "metadata": {**h100["metadata"], "generation": 2}}
    controller.machinetype_event(moved, deleted=False)
    assert controller.cache.free_of_type(controller.types.declared["gpu-h100"], False) == (), \
        "the old node list was kept"
    since = nodeless_for(controller, spec)["gpu-h100"]
    relabelled = {**moved, "metadata": {**moved["metadata"], "annotations": {"gitops.example/synced": "now"}}}
    controller.machinetype_event(relabelled, deleted=False)
    assert nodeless_for(controller, spec)["gpu-h100"] == since


def test_only_a_node_seen_and_then_deleted_is_deleted() -> None:
    from falapp_operator.k8s.cache import ClusterCache
    cache = ClusterCache()
    assert not cache.deleted("n1"), "a node not seen yet may only be new (the watches race)"
    cache.upsert_node(node("h1"))
    assert not cache.deleted("h1")
    cache.remove_node("h1")
    assert cache.deleted("h1") and not cache.deleted(None)
    cache.upsert_node(node("h1"))
    assert not cache.deleted("h1"), "back again"


async def test_a_burst_of_an_apps_pod_events_makes_one_reconcile_and_a_spec_change_none_later(rig: Rig) -> None:
    """A rollout's pods are created, bound and become Ready moments apart: one reconcile for the burst,
    event_batch_window after its first event; the user's own change is not held back by it."""
    rig.create_app(falapp(replicas=2))
    await rig.reconcile()
    controller, loop = rig.controller, asyncio.get_running_loop()
    started = loop.time()
    rig.pod_of(H100, "p1", None)
    rig.pod_of(H100, "p1", "h1")
    rig.pod_of(H100, "p2", "h1")
    assert len(controller.queue) == 0  # waiting for the others of the burst
    assert await asyncio.wait_for(controller.queue.get(), 2) == KEY
    assert loop.time() - started >= controller.settings.event_batch_window
    controller.queue.done(KEY)
    assert len(controller.queue) == 0
    rig.pod_of(H100, "p2", None)  # another burst starts...
    changed = copy.deepcopy(rig.fake.objects[FALAPP])
    changed["metadata"]["generation"] = 2  # ...and the user edits the spec meanwhile
    controller.falapp_watched("MODIFIED", rig.fake.put(FALAPP, changed))
    assert len(controller.queue) == 1  # at once


PROGRESS_WINDOW = 0.6  # the batching tests' progress_batch_window (the event window stays 0.2 s)


@pytest_asyncio.fixture(loop_scope="function")
async def batching(rig: Rig) -> Controller:
    """The controller once an app of two replicas has been reconciled, its progress window PROGRESS_WINDOW."""
    rig.create_app(falapp(replicas=2))
    await rig.reconcile()
    rig.controller.settings.progress_batch_window = PROGRESS_WINDOW
    return rig.controller


def of_revision(rig: Rig, name: str, revision: str) -> dict:
    """A pending pod of the H100 Deployment's ReplicaSet for `revision` (pod-template-hash)."""
    body = rig.pending_pod(name)
    body["metadata"]["labels"] = {**body["metadata"]["labels"], "pod-template-hash": revision}
    body["metadata"]["ownerReferences"] = [{**body["metadata"]["ownerReferences"][0], "name": f"{H100}-{revision}"}]
    return body


async def test_a_replicas_mere_progress_waits_the_longer_window_and_news_brings_its_pass_forward(
        rig: Rig, batching: Controller) -> None:
    """Thousands of replicas starting at once: being made, bound and Ready changes an app's counts only,
    one pass per progress_batch_window; a replica found unschedulable meanwhile is news (event_batch_window)."""
    controller, loop = batching, asyncio.get_running_loop()
    started = loop.time()
    pending = rig.pending_pod("p1")
    controller.pod_event(pending, deleted=False)  # made, not judged yet
    controller.pod_event({**pending, "spec": {**pending["spec"], "nodeName": "h1"}}, deleted=False)  # bound
    assert await asyncio.wait_for(controller.queue.get(), 2) == KEY
    assert loop.time() - started >= PROGRESS_WINDOW
    controller.queue.done(KEY)
    started = loop.time()
    controller.pod_event(rig.pending_pod("p2"), deleted=False)
    rig.pod_of(H100, "p3", None)  # unschedulable: news
    assert await asyncio.wait_for(controller.queue.get(), 2) == KEY
    assert controller.settings.event_batch_window <= loop.time() - started < PROGRESS_WINDOW


async def wait_for_pass(controller: Controller, started: float | None = None) -> float:
    """Seconds from `started` (default: now) until the app's next pass is handed out (and done with)."""
    loop = asyncio.get_running_loop()
    started = loop.time() if started is None else started
    while (key := await asyncio.wait_for(controller.queue.get(), 3)) != KEY:
        controller.queue.done(key)  # the MachineTypes' status pass: not the app's
    controller.queue.done(KEY)
    return loop.time() - started


def ready(rig: Rig, body: dict) -> dict:
    """The pod Ready, as the API stores it (a new resourceVersion)."""
    body = copy.deepcopy(body)
    body["status"]["conditions"].append({"type": "Ready", "status": "True"})
    return rig.fake.put(f"/api/v1/namespaces/{NS}/pods/{body['metadata']['name']}", body)


async def test_the_replica_that_makes_the_app_ready_is_news(rig: Rig, batching: Controller) -> None:
    """Its Ready condition turns (kubectl wait, Helm --wait, Argo CD): not put off like counts."""
    controller = batching
    first, second = rig.pod_of(H100, "p1", "h1"), rig.pod_of(H100, "p2", "h1")
    await wait_for_pass(controller)
    started = asyncio.get_running_loop().time()
    controller.pod_event(ready(rig, first), deleted=False)
    assert await wait_for_pass(controller, started) >= PROGRESS_WINDOW, "one of two Ready: counts"
    controller.pod_event(ready(rig, second), deleted=False)
    assert await wait_for_pass(controller) < PROGRESS_WINDOW, "two of two Ready: the app is Ready"


async def test_while_a_replica_is_in_flight_its_progress_is_news(rig: Rig, batching: Controller) -> None:
    """A make-before-break replica (a move, a probe of a better type): its Ready lets the next step go."""
    controller = batching
    pending = rig.pending_pod("p1")
    started = asyncio.get_running_loop().time()
    controller.pod_event(pending, deleted=False)
    assert await wait_for_pass(controller, started) >= PROGRESS_WINDOW, "steady: its progress waits"
    in_flight = copy.deepcopy(rig.fake.objects[f"{DEPLOYMENTS}/{H100}"])
    in_flight["metadata"].setdefault("annotations", {})[SURGE_ANNOTATION] = "gpu-h100:1"
    controller.child_watched(controller.deployments, "MODIFIED", rig.fake.put(f"{DEPLOYMENTS}/{H100}", in_flight))
    await wait_for_pass(controller)
    controller.pod_event({**pending, "spec": {**pending["spec"], "nodeName": "h1"}}, deleted=False)
    assert await wait_for_pass(controller) < PROGRESS_WINDOW


async def test_mid_rollout_a_replicas_progress_is_news(rig: Rig, batching: Controller) -> None:
    """A rollout restart's new revision: the engine steps rollouts by the revisions' pods."""
    controller = batching
    rig.pod_of(H100, "p1", "h1")
    await wait_for_pass(controller)
    controller.pod_event(of_revision(rig, "p2", "r2"), deleted=False)
    assert await wait_for_pass(controller) < PROGRESS_WINDOW


@pytest.mark.parametrize("unsteady", ["off its preferred type", "short of room", "a replica waiting on its timeout"])
async def test_an_app_not_only_starting_or_running_replicas_hears_its_replicas_progress_soon(
        rig: Rig, batching: Controller, unsteady: str) -> None:
    controller = batching
    if unsteady == "off its preferred type":
        controller.off_preferred[(NS, "llm")] = frozenset({"gpu-h100"})
    elif unsteady == "short of room":
        stored = copy.deepcopy(rig.fake.objects[FALAPP])
        stored["status"]["conditions"] = [{"type": "Ready", "status": "False", "reason": "InsufficientCapacity"}]
        controller.falapp_watched("MODIFIED", rig.fake.put(FALAPP, stored))
        await wait_for_pass(controller)
    else:
        rig.pod_of(H100, "p0", None)
        await wait_for_pass(controller)
    controller.pod_event(rig.pending_pod("p1"), deleted=False)
    assert await wait_for_pass(controller) < PROGRESS_WINDOW


async def test_progress_never_waits_less_than_news(rig: Rig, batching: Controller) -> None:
    controller = batching
    controller.settings.progress_batch_window, controller.settings.event_batch_window = 0.0, 0.5
    started = asyncio.get_running_loop().time()
    controller.pod_event(rig.pending_pod("p1"), deleted=False)
    assert await wait_for_pass(controller, started) >= 0.5


async def test_a_pod_of_the_old_revision_on_its_way_out_leaves_the_app_steady(rig: Rig, batching: Controller) -> None:
    controller = batching
    leaving = of_revision(rig, "p0", "r0")
    leaving["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    controller.pod_event(leaving, deleted=False)
    await wait_for_pass(controller)
    started = asyncio.get_running_loop().time()
    controller.pod_event(rig.pending_pod("p1"), deleted=False)
    assert await wait_for_pass(controller, started) >= PROGRESS_WINDOW, "progress: the old revision's pod is going"


def of_a_deployment_gone(rig: Rig, name: str) -> dict:
    """An unschedulable pod left by a Deployment the app no longer has (deleted in a move: the garbage
    collector's to delete), carrying the app's labels."""
    body = rig.pending_pod(name)
    body["metadata"]["ownerReferences"] = [{**body["metadata"]["ownerReferences"][0], "name": "llm-gone-r1"}]
    body["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "lastTransitionTime": "2025-01-01T00:00:00Z"}]
    return body


@pytest.mark.parametrize("event", ["made", "unschedulable", "deleted"])
async def test_a_pod_no_deployment_of_the_app_made_is_no_news(rig: Rig, batching: Controller, event: str) -> None:
    """A lost pool's doomed replacements, once the move deleted their Deployment, change nothing the
    reconcile reads (it reads the replicas its Deployments made): their events wait the progress window,
    even while the app is mid-move."""
    controller = batching
    controller.off_preferred[(NS, "llm")] = frozenset({"gpu-h100"})  # unsteady: a replica's news is soon
    doomed = of_a_deployment_gone(rig, "p9")
    if event != "made":
        controller.pod_event({**doomed, "status": {"phase": "Pending"}}, deleted=False)
        await wait_for_pass(controller)
    started = asyncio.get_running_loop().time()
    controller.pod_event(doomed, deleted=event == "deleted")
    assert await wait_for_pass(controller, started) >= PROGRESS_WINDOW


async def test_a_doomed_pod_of_a_deployment_gone_leaves_the_app_steady(rig: Rig, batching: Controller) -> None:
    """Only the app's own replicas waiting on their timeout make its replicas' progress news."""
    controller = batching
    controller.pod_event(of_a_deployment_gone(rig, "p9"), deleted=False)
    await wait_for_pass(controller)
    started = asyncio.get_running_loop().time()
    controller.pod_event(rig.pending_pod("p1"), deleted=False)
    assert await wait_for_pass(controller, started) >= PROGRESS_WINDOW, "progress: the doomed pod is no replica"
    rig.pod_of(H100, "p0", None)  # the app's own replica found no node: its replicas' progress is news again
    await wait_for_pass(controller)
    controller.pod_event(rig.pending_pod("p2"), deleted=False)
    assert await wait_for_pass(controller) < PROGRESS_WINDOW


async def test_a_replica_a_resync_finds_gone_is_news(rig: Rig, batching: Controller) -> None:
    """A LIST that no longer has a replica tells its deletion by uid alone: that is a replica lost, news."""
    controller = batching
    rig.pod_of(H100, "p0", "h1")
    await wait_for_pass(controller)
    controller.pod_event({"metadata": {"uid": "uid-p0", "namespace": NS}}, deleted=True)
    assert await wait_for_pass(controller) < PROGRESS_WINDOW


def running(body: dict) -> dict:
    return {**body, "spec": {**body["spec"], "nodeName": "h1"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}


async def test_a_pod_no_deployment_of_the_app_made_does_not_make_it_ready(rig: Rig, batching: Controller) -> None:
    """Two replicas wanted: a Ready pod its Deployments did not make, beside one Ready replica, is not the
    second replica, so that replica's Ready is progress, not the app turning Ready."""
    controller = batching
    controller.pod_event(running(of_a_deployment_gone(rig, "p9")), deleted=False)
    await wait_for_pass(controller)
    started = asyncio.get_running_loop().time()
    controller.pod_event(running(rig.pending_pod("p1")), deleted=False)
    assert await wait_for_pass(controller, started) >= PROGRESS_WINDOW


async def test_the_pods_of_an_older_apps_deployment_of_the_same_name_are_no_news(
        rig: Rig, batching: Controller) -> None:
    """A Deployment of the app's name and labels controlled by another FalApp (an app of the same name
    deleted before this one was made) made no replica of it."""
    controller = batching
    older = copy.deepcopy(rig.fake.objects[f"{DEPLOYMENTS}/{H100}"])
    older["metadata"]["ownerReferences"] = [{**older["metadata"]["ownerReferences"][0], "uid": "app-0"}]
    controller.child_watched(controller.deployments, "MODIFIED", rig.fake.put(f"{DEPLOYMENTS}/{H100}", older))
    await wait_for_pass(controller)
    started = asyncio.get_running_loop().time()
    rig.pod_of(H100, "p0", None)  # unschedulable: news, were it a replica
    assert await wait_for_pass(controller, started) >= PROGRESS_WINDOW


async def test_a_make_before_break_mark_on_an_older_apps_deployment_leaves_the_app_steady(
        rig: Rig, batching: Controller) -> None:
    """Only the app's own Deployments say a replica of it is in flight."""
    controller = batching
    older = copy.deepcopy(rig.fake.objects[f"{DEPLOYMENTS}/{H100}"])
    older["metadata"].update(name=A100, uid="dep-old", annotations={SURGE_ANNOTATION: "x"},
                             labels={**older["metadata"]["labels"], TYPE_LABEL: "gpu-a100"})
    older["metadata"]["ownerReferences"] = [{**older["metadata"]["ownerReferences"][0], "uid": "app-0"}]
    controller.child_watched(controller.deployments, "ADDED", rig.fake.put(f"{DEPLOYMENTS}/{A100}", older))
    await wait_for_pass(controller)
    started = asyncio.get_running_loop().time()
    controller.pod_event(rig.pending_pod("p1"), deleted=False)
    assert await wait_for_pass(controller, started) >= PROGRESS_WINDOW


async def test_replicas_just_asked_for_claim_room_until_their_pods_come_or_they_expire(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """Freed room is promised to one app at a time: the replicas an app's reconcile asked for take room
    from the others' view before their pods exist; a pod seen takes over its replica's claim (and gives
    it back when it goes); replicas whose pods never come stop claiming after EXPECTATION_TTL."""
    controller = rig.controller
    controller.app_event(*OTHER)
    rig.create_app(falapp(replicas=2))
    await rig.reconcile()  # llm asks for 2 replicas on H100 (one node of 8 GPUs)
    assert rig.other_app_sees() == [6]
    pending = rig.pending_pod("p1")
    controller.pod_event(pending, deleted=False)
    assert rig.other_app_sees() == [6], "the pod claims what its replica claimed, not both"
    controller.pod_event(pending, deleted=True)
    assert rig.other_app_sees() == [7], "a pending pod gone claims nothing (its replica was seen)"
    monkeypatch.setattr("falapp_operator.k8s.asks.EXPECTATION_TTL", -1.0)
    assert rig.other_app_sees() == [8], "the other replica's pod never came"


async def test_replicas_asked_for_and_then_not_claim_nothing(rig: Rig) -> None:
    """Scaled down before the pods of the last ask came: only the replicas still to come claim room."""
    controller = rig.controller
    controller.app_event(*OTHER)
    rig.create_app(falapp(replicas=3))
    await rig.reconcile()
    assert rig.other_app_sees() == [5]
    pod = rig.pod_of(H100, "p1", None)  # one of the three has come, pending (not for long)
    pod["status"] = {"phase": "Pending"}
    controller.pod_event(rig.fake.put(f"/api/v1/namespaces/{NS}/pods/p1", pod), deleted=False)
    smaller = falapp(replicas=2)
    smaller["metadata"]["generation"] = 2
    controller.falapp_watched("MODIFIED", rig.fake.put(FALAPP, smaller))
    await rig.reconcile()
    assert rig.fake.objects[f"{DEPLOYMENTS}/{H100}"]["spec"]["replicas"] == 2
    assert rig.other_app_sees() == [6], "the pod and one to come"
    smaller["metadata"]["generation"] = 3
    smaller["spec"]["replicas"] = 1
    controller.falapp_watched("MODIFIED", rig.fake.put(FALAPP, smaller))
    await rig.reconcile()
    assert rig.other_app_sees() == [7], "the pod alone"


async def test_pods_that_go_do_not_stand_for_replicas_still_to_come(rig: Rig) -> None:
    """An evicted (Failed) pod stays until the pod garbage collector removes it: it is no replica, and
    the replicas asked for beside it still claim room."""
    controller = rig.controller
    controller.app_event(*OTHER)
    rig.create_app(falapp(replicas=1))
    await rig.reconcile()
    running = rig.pod_of(H100, "p1", "h1")
    evicted = rig.pod_of(H100, "p0", "h1")
    evicted["status"] = {"phase": "Failed", "reason": "Evicted"}
    controller.pod_event(rig.fake.put(f"/api/v1/namespaces/{NS}/pods/p0", evicted), deleted=False)
    assert running["spec"]["nodeName"] == "h1"
    bigger = falapp(replicas=3)
    bigger["metadata"]["generation"] = 2
    controller.falapp_watched("MODIFIED", rig.fake.put(FALAPP, bigger))
    await rig.reconcile()  # 2 more asked for
    assert rig.other_app_sees() == [5]
    controller.app_event(*APP)
    await rig.reconcile()  # an event before their pods come
    assert rig.other_app_sees() == [5]


async def test_a_pod_listed_again_by_a_resync_meets_no_second_claim(rig: Rig) -> None:
    controller = rig.controller
    controller.app_event(*OTHER)
    rig.create_app(falapp(replicas=3))
    await rig.reconcile()
    controller.pod_event(rig.fake.put(f"/api/v1/namespaces/{NS}/pods/p1", rig.pending_pod("p1")), deleted=False)
    rig.nodes_in_api()
    await controller.resync()
    assert rig.other_app_sees() == [5], "1 pending, 2 to come"


async def test_a_pod_first_seen_by_a_resync_meets_its_replicas_claim(rig: Rig) -> None:
    """A pod whose watch event was lost (the watch expired) comes with the next LIST: its replica asked
    for claims no room beside it."""
    controller = rig.controller
    controller.app_event(*OTHER)
    rig.create_app(falapp(replicas=2))
    await rig.reconcile()
    rig.fake.put(f"/api/v1/namespaces/{NS}/pods/p1", rig.pending_pod("p1"))  # its watch event lost
    rig.nodes_in_api()
    await controller.resync()
    assert "p1" in controller.cache.pods
    assert rig.other_app_sees() == [6]


async def test_a_deleted_apps_asked_for_replicas_claim_nothing(rig: Rig) -> None:
    controller = rig.controller
    controller.app_event(*OTHER)
    rig.create_app(falapp(replicas=3))
    await rig.reconcile()
    assert rig.other_app_sees() == [5]
    del rig.fake.objects[FALAPP]
    gone = falapp()
    gone["metadata"]["resourceVersion"] = "999999"
    controller.falapp_watched("DELETED", gone)
    await rig.reconcile()
    assert rig.other_app_sees() == [8]


async def test_a_type_whose_nodes_have_no_encoder_has_no_nodes_for_an_nvenc_app_only(rig: Rig) -> None:
    """An NVENC app counts a type's time without nodes from the type's NVENC nodes: L40 nodes without the
    encoder label are nodes for other apps, none for it, until one with the label comes."""
    controller = rig.controller
    l40 = copy.deepcopy(rig.fake.objects[f"{MACHINETYPES}/gpu-l40"])
    l40["spec"]["nvencNodeSelector"] = {"fal.ai/nvenc": "true"}
    controller.machinetype_event(rig.fake.put(f"{MACHINETYPES}/gpu-l40", l40), deleted=False)
    plain = node("h1")
    plain["metadata"] = {"name": "l1", "labels": {GPU_PRODUCT_LABEL: "NVIDIA-L40S"}}
    controller.node_event(plain, deleted=False)
    video = FalAppSpec.model_validate({**falapp()["spec"], "machineTypes": ["GPU-L40"], "requiresNvenc": True})
    other = FalAppSpec.model_validate({**falapp()["spec"], "machineTypes": ["GPU-L40"]})
    assert list(nodeless_for(controller, video)) == ["gpu-l40"]
    assert nodeless_for(controller, other) == {}
    encoder = copy.deepcopy(plain)
    encoder["metadata"] = {"name": "l2", "labels": {GPU_PRODUCT_LABEL: "NVIDIA-L40S", "fal.ai/nvenc": "true"}}
    controller.node_event(encoder, deleted=False)
    assert nodeless_for(controller, video) == {}


async def test_a_burst_of_an_apps_deployment_events_makes_one_reconcile(rig: Rig) -> None:
    """The controller manager writes a Deployment's status at each replica: one reconcile for a burst."""
    rig.create_app(falapp(replicas=2))
    await rig.reconcile()
    controller = rig.controller
    deployment = rig.fake.objects[f"{DEPLOYMENTS}/{H100}"]
    for ready in (0, 1, 2):  # its status, as the controller manager updates it
        changed = copy.deepcopy(deployment)
        changed["status"] = {"replicas": 2, "readyReplicas": ready, "observedGeneration": 1}
        changed["metadata"]["generation"] = deployment["metadata"].get("generation", 1) + ready
        controller.child_watched(controller.deployments, "MODIFIED", rig.fake.put(f"{DEPLOYMENTS}/{H100}", changed))
    assert len(controller.queue) == 0
    assert await asyncio.wait_for(controller.queue.get(), 2) == KEY
    controller.queue.done(KEY)
    assert len(controller.queue) == 0


async def test_each_write_of_a_move_passes_the_gate_at_its_priority(rig: Rig) -> None:
    """What the replacement waits on (the new home growing, the move's history on it) is urgent; the rest tidies up
    (the mark, the old type going, the status) and the event comes last (see k8s/gate.py)."""
    passed: list[Priority] = []

    class RecordingGate(RequestGate):
        def slot(self, priority: Priority):  # type: ignore[no-untyped-def]
            passed.append(priority)
            return super().slot(priority)

    rig.controller.writer.gate = RecordingGate(1)
    rig.create_app(falapp(replicas=2))
    await rig.reconcile()
    passed.clear()
    rig.pod_of(H100, "running", "h1")
    rig.pod_of(H100, "stuck", None)
    assert await rig.reconcile() == [f"PATCH {DEPLOYMENTS}/{A100}", f"PATCH /api/v1/namespaces/{NS}/pods/stuck",
                                     f"PATCH {DEPLOYMENTS}/{H100}", STATUS, EVENTS]
    assert passed == [Priority.GROW, Priority.NORMAL, Priority.NORMAL, Priority.NORMAL, Priority.LOW]
    assert rig.controller.writer.gate.in_flight == 0, "a write kept its slot"


async def test_a_request_cancelled_while_waiting_for_a_slot_is_never_sent(rig: Rig) -> None:
    """A worker cancelled (the operator stopping) while its write waits: the write never goes, and is
    closed rather than left unawaited."""
    rig.controller.writer.gate = RequestGate(1)
    hold, started = asyncio.Event(), []

    async def request(name: str) -> str:
        started.append(name)
        await hold.wait()
        return name

    first = asyncio.create_task(rig.controller.writer.sent(Priority.NORMAL, request("first")))
    await asyncio.sleep(0.01)
    queued = request("queued")
    waiting = asyncio.create_task(rig.controller.writer.sent(Priority.HISTORY, queued))
    await asyncio.sleep(0.01)
    waiting.cancel()
    hold.set()
    assert await asyncio.wait_for(first, 2) == "first"
    assert started == ["first"] and waiting.cancelled()
    assert queued.cr_frame is None, "the request was left unawaited, not closed"
    assert rig.controller.writer.gate.in_flight == 0


async def test_counts_only_status_waits_last_and_a_turned_condition_does_not(rig: Rig) -> None:
    passed: list[Priority] = []

    class RecordingGate(RequestGate):
        def slot(self, priority: Priority):  # type: ignore[no-untyped-def]
            passed.append(priority)
            return super().slot(priority)

    controller = rig.controller
    rig.create_app(falapp(replicas=2))
    await rig.reconcile()
    controller.writer.gate = RecordingGate(4)
    current = rig.status()
    counts = FalAppStatus.model_validate({**current, "readyReplicas": 1})
    controller.status_turns.written.clear()  # its own second is over
    controller.status_turns.last_turn -= 1.0  # and the turn its first status took
    assert await controller.writer.write_status(NS, "llm", "app-1", current, counts, at_once=False)
    assert passed == [Priority.LOW]
    passed.clear()
    conditions = [{**c, "reason": "Elsewhere"} if c["type"] == "Ready" else c for c in current["conditions"]]
    turned = FalAppStatus.model_validate({**current, "conditions": conditions})
    assert await controller.writer.write_status(NS, "llm", "app-1", rig.status(), turned, at_once=False)
    assert passed == [Priority.NORMAL]
    passed.clear()
    assert not await controller.writer.gone(NS, "llm", "app-1")  # a fresh read passes the gate too
    assert passed == [Priority.NORMAL]


async def test_stopping_cancels_events_still_waiting_for_a_slot(rig: Rig) -> None:
    controller = rig.controller
    controller.writer.gate = RequestGate(1)
    involved = {"apiVersion": "fal.ai/v1alpha1", "kind": "FalApp", "name": "llm", "namespace": NS, "uid": "app-1"}
    async with controller.writer.gate.slot(Priority.HISTORY):
        rig.fake.requests.clear()
        controller.events.post(involved, "Normal", "FellBack", "moved")
        await asyncio.sleep(0.01)
        await controller.stop()
    assert not controller.events.pending
    assert [str(r) for r in rig.fake.requests if r.method == "POST"] == []


async def test_an_edit_of_the_app_or_of_its_type_reaches_the_pod_template(rig: Rig) -> None:
    """Templates are kept across reconciles: an edit of either side must still change them."""
    def applied_container() -> dict:
        (only,) = rig.fake.objects[f"{DEPLOYMENTS}/{H100}"]["spec"]["template"]["spec"]["containers"]
        return only

    rig.create_app(falapp())
    await rig.reconcile()
    assert applied_container()["resources"]["requests"]["cpu"] == "12000m"
    h100 = copy.deepcopy(rig.fake.objects[f"{MACHINETYPES}/gpu-h100"])
    h100["metadata"]["generation"] = 2
    h100["spec"]["resources"]["cpu"] = "3"
    rig.controller.machinetype_event(rig.fake.put(f"{MACHINETYPES}/gpu-h100", h100), deleted=False)
    assert f"PATCH {DEPLOYMENTS}/{H100}" in await rig.reconcile()
    assert applied_container()["resources"]["requests"]["cpu"] == "3000m"
    edited = falapp()
    edited["metadata"]["generation"] = 2
    edited["spec"]["image"] = "img:2"
    rig.controller.falapp_watched("MODIFIED", rig.fake.put(FALAPP, edited))
    assert f"PATCH {DEPLOYMENTS}/{H100}" in await rig.reconcile()
    assert applied_container()["image"] == "img:2"
    assert applied_container()["resources"]["requests"]["cpu"] == "3000m"
    # what the API server returns can change with no new generation (a default added to the CRD)
    edited["spec"]["image"] = "img:3"
    rig.controller.falapp_watched("MODIFIED", rig.fake.put(FALAPP, edited))
    assert f"PATCH {DEPLOYMENTS}/{H100}" in await rig.reconcile()
    assert applied_container()["image"] == "img:3"


async def test_a_deployment_deleted_with_its_app_is_not_made_again_before_the_app_watch_tells(rig: Rig) -> None:
    """`kubectl delete falapp` (background): the app is gone at once, the garbage collector deletes its
    Deployment, and that DELETED may come before the app's own on its watch. The reconcile it wakes reads
    the app fresh and makes nothing. (Was: it applied the Deployment again, owned by the deleted app: GPU
    pods started and killed until the app's watch caught up.)"""
    rig.create_app(falapp())
    await rig.reconcile()
    deployment = rig.fake.objects.pop(f"{DEPLOYMENTS}/{H100}")
    del rig.fake.objects[FALAPP]
    rig.controller.child_watched(rig.controller.deployments, "DELETED", {
        **deployment, "metadata": {**deployment["metadata"], "resourceVersion": "999"}})
    requests = await rig.reconcile()
    assert not [r for r in requests if "/deployments" in r and not r.startswith("GET")], requests
    assert f"{DEPLOYMENTS}/{H100}" not in rig.fake.objects
    assert rig.controller.falapps.get(APP) is None


async def test_a_deployment_someone_deleted_is_made_again(rig: Rig) -> None:
    """The app is there: its Deployment deleted by hand is made again (after the fresh read)."""
    rig.create_app(falapp())
    await rig.reconcile()
    deployment = rig.fake.objects.pop(f"{DEPLOYMENTS}/{H100}")
    rig.controller.child_watched(rig.controller.deployments, "DELETED", {
        **deployment, "metadata": {**deployment["metadata"], "resourceVersion": "999"}})
    requests = await rig.reconcile()
    assert any(r.startswith("GET") and r.endswith(FALAPP) for r in requests), requests
    assert f"{DEPLOYMENTS}/{H100}" in rig.fake.objects


async def test_a_reconcile_that_raises_is_told_on_the_app_once_and_retried(rig: Rig,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A reconcile failing with what no API answer explains (the operator's fault, met on some input) shows
    on the app: a Warning event ReconcileFailed with the error, once while the error stays the same, and
    the app is retried at its back-off. (Was: only a log line; the user saw nothing change, no condition,
    no event.)"""
    def broken(snap: AppSnapshot) -> AppPlan:
        raise RuntimeError("a case the planner never met")
    monkeypatch.setattr(controller_module, "plan", broken)
    rig.controller.settings.error_backoff_max = 0.05
    rig.create_app(falapp())
    rig.controller.lead()
    await wait_for(lambda: rig.controller.failures.get(KEY, 0) >= 3)
    await asyncio.gather(*rig.controller.events.pending, return_exceptions=True)
    told = [r.body for r in rig.fake.requests if str(r) == EVENTS]
    assert [(e["type"], e["reason"]) for e in told] == [("Warning", "ReconcileFailed")]
    assert "RuntimeError: a case the planner never met" in told[0]["message"]
    assert told[0]["involvedObject"]["uid"] == "app-1"


async def test_requests_failing_for_minutes_are_told_on_the_app_once_and_retried(rig: Rig) -> None:
    """A webhook on Deployments down (failurePolicy Fail): every apply answers 500, an error worth retrying.
    Once the app's reconciles have failed that way for requests_failing_after, a Warning event RequestsFailing
    with the API's message says so, once while it stays the same; retries go on, and a success ends it.
    (Was: only log lines; the app kept its last conditions, nothing on it said its replicas were stuck.)"""
    rig.controller.settings.requests_failing_after = 0.3
    rig.controller.settings.error_backoff_max = 0.05
    rig.create_app(falapp())
    for second in range(10_000):  # its words change at every attempt: told once all the same
        rig.fake.fail("PATCH", f"/deployments/{H100}", 500, 'Internal error occurred: failed calling webhook '
                      f'"policy.example.com": x509: certificate has expired: current time {second}s')
    rig.fake.fail("POST", "/events", 429)  # the first post of it fails too: the next failure posts it
    rig.controller.lead()
    await wait_for(lambda: rig.controller.failures.get(KEY, 0) >= 3)

    def told() -> list[dict]:
        return [r.body for r in rig.fake.requests if str(r) == EVENTS]
    assert told() == [], "told before the failures had lasted"
    await wait_for(lambda: len(told()) == 2)
    failures = rig.controller.failures[KEY]
    await wait_for(lambda: rig.controller.failures[KEY] >= failures + 3)
    await asyncio.gather(*rig.controller.events.pending, return_exceptions=True)
    assert [(e["type"], e["reason"]) for e in told()] == [("Warning", "RequestsFailing")] * 2
    assert 'failed calling webhook "policy.example.com"' in told()[0]["message"], told()[0]["message"]
    assert f"Deployment {NS}/{H100}" in told()[0]["message"]
    rig.fake._scripted.clear()  # the webhook back
    await wait_for(lambda: KEY not in rig.controller.failures)
    assert KEY not in rig.controller._failing_since


async def test_a_refusal_that_lasts_is_told_as_a_refusal_only(rig: Rig) -> None:
    """A refusal (403) is no error worth retrying: RequestRejected says it, not RequestsFailing as well."""
    rig.controller.settings.requests_failing_after = 0.0
    rig.controller.settings.error_backoff_max = 0.05
    rig.create_app(falapp())
    rig.fake.fail("PATCH", "/falapps/llm/status", 403, "falapps.fal.ai is forbidden", times=10_000)
    rig.controller.lead()
    await wait_for(lambda: rig.controller.failures.get(KEY, 0) >= 3)
    await asyncio.gather(*rig.controller.events.pending, return_exceptions=True)
    reasons = {r.body["reason"] for r in rig.fake.requests if str(r) == EVENTS}
    assert reasons == {"RequestRejected"}, reasons


async def test_a_reconcile_stopped_by_the_fence_is_no_failure(rig: Rig) -> None:
    """Leadership handed over as the process stops: a reconcile whose write the fence stops is put back,
    not logged as the operator's fault nor told on the app (its event could not be posted either)."""
    rig.create_app(falapp())
    rig.controller.api.may_write = lambda: False
    rig.controller.lead()
    await wait_for(lambda: rig.controller.queue.backing_off(KEY))
    await asyncio.gather(*rig.controller.events.pending, return_exceptions=True)
    assert KEY not in rig.controller.failures and rig.fake.writes() == []


async def test_a_labelled_deployment_the_operator_did_not_make_costs_no_read_when_deleted(rig: Rig) -> None:
    """Anyone may create and delete a Deployment labelled as an app's: its deletion is no sign the app is
    gone, so no fresh read of the app follows (four reads each)."""
    rig.create_app(falapp())
    await rig.reconcile()
    junk = {"metadata": {"name": "junk", "namespace": NS, "uid": "junk-1", "resourceVersion": "500",
                         "labels": {APP_LABEL: "llm", TYPE_LABEL: "gpu-h100"}}, "spec": {"replicas": 0}}
    rig.controller.child_watched(rig.controller.deployments, "ADDED", junk)
    rig.controller.child_watched(rig.controller.deployments, "DELETED", {
        **junk, "metadata": {**junk["metadata"], "resourceVersion": "501"}})
    requests = await rig.reconcile()
    assert not [r for r in requests if r.startswith("GET")], requests


async def test_a_deployment_deleted_with_its_app_during_a_reconcile_of_the_app_is_not_made_again(rig: Rig) -> None:
    """As above, while a reconcile of the app is under way (a pod's progress woke it): the deletion is
    still no delete of the operator's own, so the next pass reads the app fresh and makes nothing."""
    rig.create_app(falapp())
    await rig.reconcile()
    queue = rig.controller.queue
    queue.add(KEY)
    assert await queue.get() == KEY  # a worker has the app
    deployment = rig.fake.objects.pop(f"{DEPLOYMENTS}/{H100}")
    del rig.fake.objects[FALAPP]
    rig.controller.child_watched(rig.controller.deployments, "DELETED", {
        **deployment, "metadata": {**deployment["metadata"], "resourceVersion": "999"}})
    queue.done(KEY)
    await rig.reconcile()
    assert f"{DEPLOYMENTS}/{H100}" not in rig.fake.objects


def test_a_delete_of_the_operators_own_in_flight_is_no_sign_the_app_is_gone(rig: Rig) -> None:
    """The watch may report the operator's own delete before its answer comes: no fresh read for it."""
    rig.create_app(falapp())
    deployment = {"metadata": {"name": H100, "namespace": NS, "uid": "d-1", "resourceVersion": "5",
                               "labels": {APP_LABEL: "llm", TYPE_LABEL: "gpu-h100"},
                               "ownerReferences": [AppRef("llm", NS, "app-1").owner_reference()]}}
    rig.controller.child_watched(rig.controller.deployments, "ADDED", deployment)
    rig.controller.writer.deleting.add((NS, H100))
    rig.controller.child_watched(rig.controller.deployments, "DELETED", {
        **deployment, "metadata": {**deployment["metadata"], "resourceVersion": "6"}})
    assert APP not in rig.controller.writer.unsure
