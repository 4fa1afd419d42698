"""FalApp status read by kstatus (Flux, Helm 4 `--wait`, cli-utils): InProgress while reconciling,
Current when Ready, Failed when Stalled.

`kstatus` below restates kstatus's rules for a custom resource (sigs.k8s.io/cli-utils
pkg/kstatus/status, `Compute`): a kind without built-in rules is judged only by its generic properties,
in this order, and is Current when none applies:
  1. metadata.deletionTimestamp set                                    -> Terminating
  2. status.observedGeneration present and != metadata.generation      -> InProgress
  3. the first condition, in list order, that is Reconciling=True      -> InProgress
                                               or Stalled=True         -> Failed
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from falapp_operator.api.podspec import Probe
from falapp_operator.reconcile.app import STARTUP_BUDGET_MAX, plan, policy_of
from tests.unit import status_samples
from tests.unit.status_samples import A100, H100, SAMPLES, pod, snapshot, spec


def kstatus(obj: dict) -> tuple[str, str]:
    """(status, message) as kstatus computes them for a custom resource."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "Terminating", "Resource scheduled for deletion"
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return "InProgress", f"{obj['kind']} generation is {generation}, but latest observed generation is {observed}"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Reconciling" and condition.get("status") == "True":
            return "InProgress", condition.get("message", "")
        if condition.get("type") == "Stalled" and condition.get("status") == "True":
            return "Failed", condition.get("message", "")
    return "Current", "Resource is current"


def conditions(obj: dict) -> dict[str, dict]:
    return {c["type"]: c for c in obj["status"]["conditions"]}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_kstatus_reads_the_planner_status(name: str):
    build, want, _ = SAMPLES[name]
    assert kstatus(build())[0] == want


def test_reconciling_says_why():
    obj = status_samples.replicas_starting()
    state, message = kstatus(obj)
    assert state == "InProgress" and message == "1/2 replicas ready"
    c = conditions(obj)
    assert (c["Ready"]["status"], c["Reconciling"]["status"], c["Stalled"]["status"]) == ("False", "True", "False")


def test_current_means_every_standard_condition_is_settled():
    for build in (status_samples.ready_app, status_samples.ready_after_fallback):
        obj = build()
        c = conditions(obj)
        assert c["Ready"]["status"] == "True" and c["Reconciling"]["status"] == "False"
        assert c["Stalled"]["status"] == "False"
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        for condition in c.values():  # metav1.Condition shape, each for the generation it describes
            assert condition["observedGeneration"] == obj["metadata"]["generation"]
            assert condition["reason"] and condition["lastTransitionTime"]
    assert conditions(status_samples.ready_after_fallback())["FallbackActive"]["status"] == "True"


def test_no_capacity_is_in_progress_not_failed():
    """No room anywhere is not terminal (the operator keeps trying the types): never Stalled."""
    obj = status_samples.no_capacity()
    c = conditions(obj)
    assert c["Ready"]["reason"] == "InsufficientCapacity" and c["Stalled"]["status"] == "False"
    assert kstatus(obj)[0] == "InProgress"


def test_no_capacity_with_a_scheduler_message_longer_than_a_condition_holds():
    """The scheduler lists one reason per distinct taint: on a cluster with hundreds of team taints its
    message outgrows a condition's 32768 characters. The Ready condition carries it cut, with "...".
    (Was: the status model refused it, every reconcile raised, and no InsufficientCapacity was said.)"""
    taints = ", ".join(f"1 node(s) had untolerated taint {{dedicated: team-{i:03d}}}" for i in range(800))
    message = f"0/802 nodes are available: 2 Insufficient nvidia.com/gpu, {taints}."
    pending = [replace(pod("sdxl-a-1", A100, unschedulable_for=300), scheduler_message=message)]
    status = plan(snapshot(spec(replicas=1), counts={A100: 1}, pods=pending, free={H100: [], A100: []})).status
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert ready.reason == "InsufficientCapacity"
    assert ready.message is not None and len(ready.message) == 32768 and ready.message.endswith("...")
    # planned again on the status it wrote: the same news, no second Warning (was: the cut message never
    # equalled the whole one, and every reconcile posted the InsufficientCapacity event again)
    again = plan(snapshot(spec(replicas=1), status=status, counts={A100: 1}, pods=pending, free={H100: [], A100: []}))
    assert [e.reason for e in again.events if e.type == "Warning"] == []


def test_no_capacity_warns_again_on_news_not_on_a_node_count():
    """The scheduler's message counts the cluster's nodes: a node joining where the replica still has no room
    changes the message's numbers, and the Ready condition says so, but a second Warning would be noise
    (one per stuck app each time an autoscaler adds or removes a node). A new reason, or another type named,
    is news."""
    def planned(message: str, status=None):
        pending = [replace(pod("sdxl-a-1", A100, unschedulable_for=300), scheduler_message=message)]
        return plan(snapshot(spec(replicas=1), status=status, counts={A100: 1}, pods=pending,
                             free={H100: [], A100: []}))

    first = planned("0/7 nodes are available: 7 Insufficient nvidia.com/gpu.")
    assert [e.reason for e in first.events if e.type == "Warning"] == ["InsufficientCapacity"]
    node_joined = planned("0/8 nodes are available: 8 Insufficient nvidia.com/gpu.", first.status)
    ready = next(c for c in node_joined.status.conditions if c.type == "Ready")
    assert ready.message is not None and "0/8 nodes" in ready.message
    assert [e for e in node_joined.events if e.type == "Warning"] == []
    tainted = planned("0/8 nodes are available: 1 node(s) had untolerated taint {dedicated: team-001}, "
                      "7 Insufficient nvidia.com/gpu.", node_joined.status)
    assert [e.message for e in tainted.events if e.type == "Warning"] == [
        next(c for c in tainted.status.conditions if c.type == "Ready").message]
    # the scheduler sorts its reasons as text: "10 Insufficient" now comes first
    reordered = planned("0/11 nodes are available: 10 Insufficient nvidia.com/gpu, 1 node(s) had untolerated "
                        "taint {dedicated: team-001}.", tainted.status)
    assert [e for e in reordered.events if e.type == "Warning"] == []
    # the cluster autoscaler removing a node taints it with a timestamp while it goes
    removing = planned("0/11 nodes are available: 1 node(s) had untolerated taint {ToBeDeletedByClusterAutoscaler: "
                       "1712345678}, 10 Insufficient nvidia.com/gpu.", reordered.status)
    assert [e.reason for e in removing.events if e.type == "Warning"] == ["InsufficientCapacity"]
    removing_another = planned("0/10 nodes are available: 1 node(s) had untolerated taint "
                               "{ToBeDeletedByClusterAutoscaler: 1712349999}, 9 Insufficient nvidia.com/gpu.",
                               removing.status)
    assert [e for e in removing_another.events if e.type == "Warning"] == []
    other_team = planned("0/11 nodes are available: 10 Insufficient nvidia.com/gpu, 1 node(s) had untolerated "
                         "taint {dedicated: team-002}.", removing_another.status)
    assert [e.reason for e in other_team.events if e.type == "Warning"] == ["InsufficientCapacity"]


def test_no_capacity_news_in_the_message_kube_scheduler_writes():
    """Messages as kube-scheduler 1.35 wrote them on the local cluster, a node of the type joining: the main
    section ends with ". no new claims to deallocate, preemption: ...", and "15 node(s)" sorts before "2
    Insufficient". The count and order change is no news; a new reason (the joining node's not-ready taint,
    for a moment) is."""
    def message(nodes: int, reasons: str) -> str:
        return (f"0/{nodes} nodes are available: {reasons}. no new claims to deallocate, preemption: 0/{nodes} "
                f"nodes are available: {nodes} Preemption is not helpful for scheduling.")

    def warned(message: str, status=None):
        pending = [replace(pod("sdxl-a-1", A100, unschedulable_for=300), scheduler_message=message)]
        result = plan(snapshot(spec(replicas=1), status=status, counts={A100: 1}, pods=pending,
                               free={H100: [], A100: []}))
        return result, [e.reason for e in result.events if e.type == "Warning"]

    first, said = warned(message(16, "1 Insufficient nvidia.com/gpu, 15 node(s) didn't match Pod's node "
                                     "affinity/selector"))
    assert said == ["InsufficientCapacity"]
    joined, said = warned(message(17, "15 node(s) didn't match Pod's node affinity/selector, 2 Insufficient "
                                      "nvidia.com/gpu"), first.status)
    assert said == []
    _, said = warned(message(18, "1 node(s) had untolerated taint(s), 15 node(s) didn't match Pod's node "
                                 "affinity/selector, 2 Insufficient nvidia.com/gpu"), joined.status)
    assert said == ["InsufficientCapacity"]


def test_a_replica_failure_warns_again_when_its_numbers_change():
    """A quota's numbers are the news of a ReplicaFailure (a limit cut to 0 is not the limit of 8 it was)."""
    def planned(message: str, status=None):
        return plan(snapshot(spec(), status=status, counts={H100: 2}, pods=[pod("sdxl-h-1", ready=True)],
                             replica_failures={H100: message}))

    quota = ('pods "sdxl-h-x" is forbidden: exceeded quota: gpus, requested: nvidia.com/gpu=8, '
             "used: nvidia.com/gpu={}, limited: nvidia.com/gpu={}")
    first = planned(quota.format(4, 8))
    assert [e.reason for e in first.events if e.type == "Warning"] == ["ReplicaFailure"]
    # what other workloads of the namespace use comes and goes: not news
    assert [e for e in planned(quota.format(2, 8), first.status).events if e.type == "Warning"] == []
    cut = planned(quota.format(4, 0), first.status)
    assert [e.reason for e in cut.events if e.type == "Warning"] == ["ReplicaFailure"]


def test_stalled_is_terminal_and_names_the_problem():
    obj = status_samples.invalid_spec()
    c = conditions(obj)
    assert c["Stalled"]["reason"] == "InvalidSpec" and "GPU-NOPE" in c["Stalled"]["message"]
    assert c["Reconciling"]["status"] == "False" and c["Ready"]["status"] == "False"
    state, message = kstatus(obj)
    assert state == "Failed" and "GPU-NOPE" in message


def test_new_object_with_defaulted_status_is_in_progress():
    """A FalApp without status would be Current at once (Helm 4 `--wait` and Flux would pass before the
    operator saw it); the CRD defaults status to observedGeneration 0, so a new object is InProgress."""
    obj = status_samples.created()
    assert obj["status"] == {"observedGeneration": 0} and obj["metadata"]["generation"] == 1
    state, message = kstatus(obj)
    assert state == "InProgress" and message == "FalApp generation is 1, but latest observed generation is 0"
    bare = status_samples.created()
    del bare["status"]
    assert kstatus(bare)[0] == "Current"
    # the planner takes the defaulted status as its input: its first status is still InProgress, as Reconciling
    first = status_samples.plan(status_samples.snapshot(status_samples.spec(), status=obj["status"])).status.to_patch()
    assert first["observedGeneration"] == 1
    assert kstatus(status_samples.falapp(first)) == kstatus(status_samples.new_app())
    assert kstatus(status_samples.new_app())[0] == "InProgress"


def test_lagging_observed_generation_wins_over_conditions():
    state, message = kstatus(status_samples.spec_changed_not_observed())
    assert state == "InProgress" and "generation is 2, but latest observed generation is 1" in message
    assert kstatus(status_samples.fixed_after_invalid())[0] == "InProgress"


def test_the_rules_themselves():
    """The restated rules on hand-made statuses, so a planner change cannot hide a rule mistake."""
    def obj(conds: list[tuple[str, str]], generation: int = 3, observed: int | None = 3) -> dict:
        status = {"conditions": [{"type": t, "status": s, "message": t} for t, s in conds]}
        if observed is not None:
            status["observedGeneration"] = observed
        return {"kind": "FalApp", "metadata": {"generation": generation}, "status": status}

    assert kstatus(obj([("Ready", "True")])) == ("Current", "Resource is current")
    assert kstatus(obj([("Ready", "False")]))[0] == "Current"  # Ready alone is not a kstatus condition
    assert kstatus(obj([("Reconciling", "True"), ("Stalled", "True")]))[0] == "InProgress"
    assert kstatus(obj([("Stalled", "True"), ("Reconciling", "True")]))[0] == "Failed"
    assert kstatus(obj([("Stalled", "True")], observed=2))[0] == "InProgress"
    assert kstatus(obj([("Stalled", "True")], observed=None))[0] == "Failed"
    assert kstatus({"kind": "FalApp", "metadata": {"generation": 1}})[0] == "Current"


def test_a_startup_probe_at_the_int32_maximums_buys_a_year_and_plans():
    """periodSeconds and failureThreshold at 2**31 - 1 (what the API server takes): the make-before-break
    replica's start budget is a year, and the app plans. (Was: OverflowError in every reconcile.)"""
    probe = {"exec": {"command": ["true"]}, "periodSeconds": 2**31 - 1, "failureThreshold": 2**31 - 1}
    app_spec = spec(replicas=1).model_copy(update={"startup_probe": Probe.model_validate(probe)})
    assert policy_of(app_spec).startup_timeout == STARTUP_BUDGET_MAX
    status = plan(snapshot(app_spec, counts={H100: 1}, pods=[pod("sdxl-h-1", H100, ready=True)])).status
    assert next(c for c in status.conditions if c.type == "Ready").status == "True"
