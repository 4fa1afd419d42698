"""What goes over the wire for status: the typed models (FalAppStatus, MachineTypeStatus) serialised as
merge patches. Pinned as whole dicts, so a change in how a field is named, formatted or left out shows
here before kstatus, Argo CD or the printer columns read it differently."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from falapp_operator.api import FalAppStatus, MachineTypeStatus
from falapp_operator.api.names import HASH_ANNOTATION, MOVES_ANNOTATION, deployment_name
from falapp_operator.k8s.client import KubeApi
from falapp_operator.k8s.controller import Controller
from falapp_operator.placement import Move, Surge
from falapp_operator.reconcile.app import invalid, plan
from falapp_operator.reconcile.writes import child_writes
from falapp_operator.settings import OperatorSettings
from tests.builders import UNSCHEDULABLE
from tests.unit.status_samples import A100, H100, NOW, REF, pod, room, snapshot, spec
from tests.unit.test_watch_stores import ClusterApi, drain, falapp

# As the API returns it: preferred type in use since 11:00, one earlier attempt, a probe backing off.
RECORDED: dict[str, Any] = {
    "observedGeneration": 1, "replicas": 2, "readyReplicas": 1, "selector": "fal.ai/app=sdxl",
    "machines": "GPU-H100x2", "candidates": "GPU-H100(1x80Gi),GPU-A100(1x40Gi)",
    "placements": [{"machineType": "GPU-H100", "replicas": 2, "readyReplicas": 1, "gpusPerReplica": 1,
                    "since": "2025-01-01T11:00:00Z", "reason": "Preferred"}],
    "attempts": [{"machineType": "GPU-A100", "start": "2025-01-01T10:00:00Z", "end": "2025-01-01T10:30:00Z",
                  "outcome": "Returned", "message": ""}],
    "probes": [{"machineType": "GPU-H100", "failures": 2, "nextAttempt": "2025-01-01T12:05:00Z"}],
    "conditions": [],
}
FELL_BACK = {"machineType": "GPU-H100", "start": "2025-01-01T11:58:30Z", "end": "2025-01-01T12:00:00Z",
             "outcome": "FellBack", "message": UNSCHEDULABLE}


def condition(type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2025-01-01T12:00:00Z", "observedGeneration": 1}


def test_a_fallback_records_its_history_on_the_deployment_it_grows_then_the_whole_status() -> None:
    """One replica stuck on GPU-H100 for 90s falls back to GPU-A100: the new attempt and the probes go
    out on the A100 Deployment, written first; the full status last; unchanged entries are kept as read.
    Without a Deployment it grows first, the history is a status patch of its own, before the children."""
    pods = [pod("sdxl-h-1", ready=True), pod("sdxl-h-2", unschedulable_for=90)]
    result = plan(snapshot(spec(), status=RECORDED, counts={H100: 2}, pods=pods, free={H100: [], A100: room()}))
    attempts = [RECORDED["attempts"][0], FELL_BACK]
    assert result.status.to_patch() == {
        "observedGeneration": 1, "replicas": 2, "readyReplicas": 1, "selector": "fal.ai/app=sdxl",
        "machines": "GPU-H100x1,GPU-A100x1", "candidates": "GPU-H100(1x80Gi),GPU-A100(1x40Gi)",
        "placements": [
            {"machineType": "GPU-H100", "replicas": 1, "readyReplicas": 1, "gpusPerReplica": 1,
             "since": "2025-01-01T11:00:00Z", "reason": "Preferred"},
            {"machineType": "GPU-A100", "replicas": 1, "readyReplicas": 0, "gpusPerReplica": 1,
             "since": "2025-01-01T12:00:00Z", "reason": "FellBack"},
        ],
        "attempts": attempts,
        "probes": RECORDED["probes"],
        "conditions": [
            condition("Ready", "False", "ReplicasNotReady", "1/2 replicas ready"),
            condition("Reconciling", "True", "ReplicasNotReady", "1/2 replicas ready"),
            condition("Stalled", "False", "SpecValid", ""),
            condition("FallbackActive", "True", "FellBack", "1 on GPU-A100 (preferred: GPU-H100)"),
        ],
    }
    h100 = {"metadata": {"name": deployment_name(REF.name, H100), "annotations": {HASH_ANNOTATION: "as it was"}},
            "spec": {"replicas": 2}}
    writes = child_writes(result, REF, [h100], [], "falapp-operator", status=RECORDED)
    assert [(w.kind, w.name, w.urgent) for w in writes] == [
        ("apply", deployment_name(REF.name, A100), True), ("mark", "sdxl-h-2", False),
        ("apply", deployment_name(REF.name, H100), False)]
    assert json.loads(writes[0].body["metadata"]["annotations"][MOVES_ANNOTATION]) == {
        "attempts": [FELL_BACK], "probes": RECORDED["probes"]}
    assert MOVES_ANNOTATION not in writes[2].body["metadata"]["annotations"]

    # a change of H100 at its size listed before the grow (say the image changed too): it goes after the
    # growth, which still carries the history (was: written first, and the history a status patch of its own)
    changed = {**h100, "spec": {"replicas": 1}}
    writes = child_writes(result, REF, [changed], [], "falapp-operator", status=RECORDED)
    assert [(w.kind, w.name, w.urgent) for w in writes] == [
        ("apply", deployment_name(REF.name, A100), True), ("mark", "sdxl-h-2", False),
        ("apply", deployment_name(REF.name, H100), False)]
    assert json.loads(writes[0].body["metadata"]["annotations"][MOVES_ANNOTATION]) == {
        "attempts": [FELL_BACK], "probes": RECORDED["probes"]}


def test_a_held_move_finished_by_its_cover_shrinks_the_origin_before_its_mark_is_cleared() -> None:
    """A return to GPU-H100 held mid-rollout on GPU-A100 (two old Ready pods, two new stuck ones) finishes
    once a cover on GPU-L40 is Ready. A100's shrink is written before H100's mark is cleared: a stop in
    between leaves both marks and one replica beyond the wanted number, read as the move done and its
    cover in flight (the other order left one replica unexplained, removed as a surplus at once)."""
    l40 = "gpu-l40"
    started = NOW - timedelta(minutes=5)
    surge, cover = Surge(H100, A100, started, ready_at=started), Surge(l40, A100, started, cover=True)
    pods = [pod("a-new-1", A100, unschedulable_for=300), pod("a-new-2", A100, unschedulable_for=300),
            pod("h-1", H100, ready=True), pod("l-1", l40, ready=True)]
    result = plan(snapshot(spec(["GPU-H100", "GPU-A100", "GPU-L40"], replicas=3), counts={A100: 3, H100: 1, l40: 1},
                           pods=pods, old_pods=[pod("a-old-1", A100, ready=True), pod("a-old-2", A100, ready=True)],
                           surge=surge, cover=cover, free={}))
    assert [t.move for t in result.decision.transitions] == [Move.RETURNED]
    assert result.decision.cover == replace(cover, ready_at=NOW) and result.decision.surge is None
    live = [{"metadata": {"name": deployment_name(REF.name, t), "annotations": {HASH_ANNOTATION: "as it was"}},
             "spec": {"replicas": n}} for t, n in ((H100, 1), (A100, 3), (l40, 1))]
    applied = [w.name for w in child_writes(result, REF, live, [], "falapp-operator") if w.kind == "apply"]
    assert applied.index(deployment_name(REF.name, A100)) < applied.index(deployment_name(REF.name, H100))


def test_a_move_that_grows_nothing_writes_its_history_into_the_status_first() -> None:
    """The last step of a return: the extra replica on GPU-H100 is Ready, GPU-A100 gives one back. Nothing
    grows, so the move's history is a status patch of its own, the first write."""
    pods = [pod("sdxl-h-1", ready=True), pod("sdxl-a-1", A100, ready=True)]
    surge = Surge(from_type=A100, to_type=H100, since=NOW - timedelta(minutes=2), ready_at=NOW - timedelta(minutes=1))
    result = plan(snapshot(spec(replicas=1), status=RECORDED, counts={H100: 1, A100: 1}, pods=pods, surge=surge,
                           free={H100: room(), A100: room()}))
    assert [t.move for t in result.decision.transitions] == [Move.RETURNED] and not result.history_on
    live = [{"metadata": {"name": deployment_name(REF.name, t), "annotations": {HASH_ANNOTATION: "as it was"}},
             "spec": {"replicas": 1}} for t in (H100, A100)]
    writes = child_writes(result, REF, live, [], "falapp-operator", status=RECORDED)
    assert [w.kind for w in writes][:1] == ["history"] and writes[0].urgent
    assert [a["outcome"] for a in writes[0].body["attempts"]][-1] == "ReturnedToPreferred"


def test_only_a_deployment_asking_for_more_replicas_is_urgent() -> None:
    """A template change (a new image: a rollout) or a re-apply over someone's edit keeps the replicas:
    no replacement waits on it, so it does not go before others' writes (see k8s/gate.py)."""
    from falapp_operator.api.names import HASH_ANNOTATION
    pods = [pod("sdxl-h-1", ready=True), pod("sdxl-h-2", ready=True)]
    result = plan(snapshot(spec(), status=RECORDED, counts={H100: 2}, pods=pods, free={H100: room(), A100: room()}))
    live = copy.deepcopy(result.deployments)
    for d in live:
        d["metadata"]["annotations"][HASH_ANNOTATION] = "an older template"
    writes = child_writes(result, REF, live, [], "falapp-operator", status=RECORDED)
    assert [(w.kind, w.urgent) for w in writes] == [("apply", False)]
    live[0]["spec"]["replicas"] = 1  # one more asked for: urgent
    writes = child_writes(result, REF, live, [], "falapp-operator", status=RECORDED)
    assert [(w.kind, w.urgent) for w in writes] == [("apply", True)]


def test_the_history_keeps_the_newest_twenty_attempts() -> None:
    full = [{**RECORDED["attempts"][0], "start": f"2025-01-01T10:{i:02d}:00Z"} for i in range(20)]
    pods = [pod("sdxl-h-1", ready=True), pod("sdxl-h-2", unschedulable_for=90)]
    result = plan(snapshot(spec(), status={**RECORDED, "attempts": full}, counts={H100: 2}, pods=pods,
                           free={H100: [], A100: room()}))
    assert result.status.to_patch()["attempts"] == [*full[1:], FELL_BACK]


def test_a_replica_on_an_unlisted_type_has_no_gpu_count_and_a_burst_counts_its_replicas() -> None:
    """A type the spec no longer lists keeps its placement without gpusPerReplica; `replicas` of an
    attempt is written only when several replicas made the move together."""
    stuck = [pod(f"sdxl-h-{i}", unschedulable_for=61 + i) for i in range(3)]
    stuck.append(pod("sdxl-l-1", "gpu-l40", ready=True))
    status = plan(snapshot(spec(replicas=4), counts={H100: 3, "gpu-l40": 1}, pods=stuck,
                               free={H100: [], A100: room()})).status.to_patch()
    assert status["placements"] == [
        {"machineType": "GPU-A100", "replicas": 3, "readyReplicas": 0, "gpusPerReplica": 1,
         "since": "2025-01-01T12:00:00Z", "reason": "FellBack"},
        {"machineType": "gpu-l40", "replicas": 1, "readyReplicas": 1, "since": "2025-01-01T12:00:00Z",
         "reason": "Unlisted"},
    ]
    assert status["machines"] == "GPU-A100x3,gpu-l40x1"
    assert status["attempts"] == [{**FELL_BACK, "start": "2025-01-01T11:58:57Z", "replicas": 3}]
    assert status["probes"] == []


def test_a_stalled_app_keeps_what_status_recorded_and_writes_no_field_it_never_had() -> None:
    message = "Deployment team-a/sdxl-gpu-h100: 403 Forbidden: exceeded quota: no-deployments"
    stalled = [condition("Stalled", "True", "RequestRejected", message),
               condition("Ready", "False", "RequestRejected", message),
               condition("Reconciling", "False", "RequestRejected", message)]
    # nothing recorded yet: no empty lists appear, machines says none
    assert invalid(REF, 1, FalAppStatus(), message, NOW, reason="RequestRejected").status.to_patch() == {
        "observedGeneration": 1, "replicas": 0, "readyReplicas": 0, "selector": "fal.ai/app=sdxl",
        "machines": "", "conditions": stalled}
    # an app that ran: placements, history, machines and candidates stay as they were
    recorded = FalAppStatus.model_validate(RECORDED)
    assert invalid(REF, 1, recorded, message, NOW, reason="RequestRejected").status.to_patch() == {
        **RECORDED, "replicas": 0, "readyReplicas": 0, "conditions": stalled}
    # an invalid spec resolves to nothing: its candidates are cleared
    problem = "spec.machineTypes: GPU-NOPE is not a machine type"
    assert invalid(REF, 1, recorded, problem, NOW).status.to_patch()["candidates"] == ""


class RecordingApi(ClusterApi):
    """Keeps the status patches the controller sends."""

    def __init__(self) -> None:
        super().__init__()
        self.status_patches: list[dict[str, Any]] = []
        self.machinetype_patches: dict[str, dict[str, Any]] = {}
        self.clock.now = lambda: NOW  # type: ignore[method-assign]

    async def patch_falapp_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.status_patches.append(copy.deepcopy(status))
        answer: dict[str, Any] = await super().patch_falapp_status(  # type: ignore[no-untyped-call]
            namespace, name, status)
        return answer

    async def patch_machinetype_status(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.machinetype_patches[name] = copy.deepcopy(status)
        return {"metadata": {"name": name, "resourceVersion": "900"}, "status": status}


async def test_the_controller_sends_the_models_as_merge_patches() -> None:
    api = RecordingApi()
    api.objects[("FalApp", "llm")] = falapp()
    controller = Controller(cast(KubeApi, api), OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        await controller.reconcile_app("team-a", "llm")
        [patch] = api.status_patches
        assert {k: v for k, v in patch.items() if k != "conditions"} == {
            "observedGeneration": 1, "replicas": 0, "readyReplicas": 0, "selector": "fal.ai/app=llm",
            "machines": "GPU-H100x1", "candidates": "GPU-H100(1x80Gi)",
            "placements": [{"machineType": "GPU-H100", "replicas": 1, "readyReplicas": 0, "gpusPerReplica": 1,
                            "since": "2025-01-01T12:00:00Z", "reason": "Preferred"}],
            "attempts": [], "probes": []}
        assert [(c["type"], c["status"], c["reason"]) for c in patch["conditions"]] == [
            ("Ready", "False", "ReplicasNotReady"), ("Reconciling", "True", "ReplicasNotReady"),
            ("Stalled", "False", "SpecValid"), ("FallbackActive", "False", "OnPreferred")]
        await drain(controller)
        await controller.reconcile_machinetypes()
        # one node of H100s (the fake API's), nothing bound or pending there yet
        assert api.machinetype_patches["gpu-h100"] == {
            "nodes": 1, "allocatableGpus": 8, "freeGpus": 8, "placedReplicas": 0, "pendingReplicas": 0,
            "autoscaled": False, "observedAt": "2025-01-01T12:00:00Z"}
        # the same numbers later are not written again, whatever the time
        api.machinetype_patches.clear()
        api.clock.now = lambda: datetime(2025, 1, 1, 12, 5, tzinfo=UTC)  # type: ignore[method-assign]
        await controller.reconcile_machinetypes()
        assert api.machinetype_patches == {}
        assert controller.types.status["gpu-h100"] == MachineTypeStatus.model_validate(
            {"nodes": 1, "allocatableGpus": 8, "freeGpus": 8, "placedReplicas": 0, "pendingReplicas": 0,
             "autoscaled": False, "observedAt": "2025-01-01T12:00:00Z"})
    finally:
        await controller.stop()
