"""A parked Deployment: a fixed-size type with no Ready, schedulable node at all, where none of the app's
replicas runs, keeps one pod (for an autoscaler to see) and holds its other replicas in the
fal.ai/parked-replicas annotation, so the controller manager makes no pods the scheduler would try in vain
before the replicas that move. The count stays the app's; a node coming back gives the pods back."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from falapp_operator.api import DEFAULT_CATALOG
from falapp_operator.api.names import PARKED_ANNOTATION
from falapp_operator.reconcile import children
from falapp_operator.reconcile.app import AppPlan, plan
from falapp_operator.reconcile.observe import children_state
from tests.unit.status_samples import A100, H100, NOW, pod, room, snapshot, spec

LOST = {H100: NOW - timedelta(seconds=1)}  # H100 lost its last node a second ago (timeout: 60 s)


def written(result: AppPlan) -> dict[str, tuple[int, str | None]]:
    """Per type: the replicas the Deployment asks for and the count it holds, as applied."""
    return {d["metadata"]["labels"]["fal.ai/machine-type"]: (d["spec"]["replicas"],
                                                            d["metadata"]["annotations"].get(PARKED_ANNOTATION))
            for d in result.deployments}


def lost_pool(replicas: int = 3, **kw):
    return replace(snapshot(spec(replicas=replicas), counts={H100: replicas}, free={H100: [], A100: room()}, **kw),
                   nodeless_since=LOST)


def test_a_lost_pool_keeps_one_pod_and_holds_the_rest_until_the_timeout() -> None:
    result = plan(lost_pool(pods=[pod("h1", H100, unschedulable_for=0), pod("h2", H100), pod("h3", H100)]))
    assert result.decision.counts == {H100: 3}, "the replicas wait out the timeout from the loss"
    assert written(result) == {H100: (1, "3")} and result.parked == {H100}
    assert result.waiting_for_room, "a node coming back wakes it"
    ready = next(c for c in result.status.conditions if c.type == "Ready")
    assert ready.reason == "ReplicasNotReady" and "2 held for GPU-H100" in ready.message, ready.message
    assert result.requeue_at == LOST[H100] + timedelta(seconds=60)


def test_the_parked_count_is_read_back_and_kept() -> None:
    first = plan(lost_pool(pods=[pod("h1", H100, unschedulable_for=0)]))
    state = children_state(first.deployments)
    assert state.counts == {H100: 3} and state.parked == {H100}
    again = plan(replace(lost_pool(pods=[pod("h1", H100, unschedulable_for=0)]), counts=state.counts,
                         parked=frozenset(state.parked)))
    assert again.deployments == first.deployments, "nothing new to write"


def test_the_held_replicas_move_at_the_timeout_and_the_lost_deployment_goes() -> None:
    snap = replace(lost_pool(pods=[pod("h1", H100, unschedulable_for=0)]), parked=frozenset({H100}),
                   nodeless_since={H100: NOW - timedelta(seconds=61)})
    result = plan(snap)
    assert result.decision.counts == {A100: 3}
    assert written(result) == {A100: (3, None)} and result.delete_deployments == [H100]


def test_a_node_back_gives_the_pods_back() -> None:
    snap = replace(snapshot(spec(replicas=3), counts={H100: 3}, pods=[pod("h1", H100)],
                            free={H100: room(), A100: room()}), parked=frozenset({H100}))
    result = plan(snap)
    assert written(result) == {H100: (3, None)} and not result.parked


def test_what_is_not_parked() -> None:
    # a replica still running there (a cordoned pool): the others' pods stay, nothing of it is touched
    cordoned = plan(lost_pool(pods=[pod("h1", H100, ready=True), pod("h2", H100, unschedulable_for=0)]))
    assert written(cordoned) == {H100: (3, None)}
    # a replica stuck there since before the loss: its pod keeps the time it has waited
    assert written(plan(lost_pool(pods=[pod("h1", H100, unschedulable_for=30)]))) == {H100: (3, None)}
    # (a replacement the scheduler marked as the operator heard of the loss is none: marks have whole seconds)
    assert written(plan(lost_pool(pods=[pod("h1", H100, unschedulable_for=2)]))) == {H100: (1, "3")}
    # one replica: nothing to hold back
    assert written(plan(lost_pool(replicas=1, pods=[pod("h1", H100, unschedulable_for=0)]))) == {H100: (1, None)}
    # a type with a node: the scheduler's call
    with_nodes = replace(lost_pool(pods=[pod("h1", H100, unschedulable_for=0)]), nodeless_since={})
    assert written(plan(with_nodes)) == {H100: (3, None)}
    # an autoscaled type: its pods ask for nodes
    catalogue = [m.model_copy(update={"spec": m.spec.model_copy(update={"autoscaled": True})})
                 if m.metadata.name == H100 else m for m in DEFAULT_CATALOG]
    autoscaled = replace(lost_pool(pods=[pod("h1", H100, unschedulable_for=0)]), catalogue=catalogue)
    assert written(plan(autoscaled)) == {H100: (3, None)}


def test_a_parked_type_no_longer_listed_moves_its_held_replicas_with_the_kept_pod() -> None:
    snap = replace(snapshot(spec(machine_types=["GPU-A100"], replicas=3), counts={H100: 3},
                            pods=[pod("h1", H100)]), parked=frozenset({H100}), nodeless_since=LOST)
    result = plan(snap)
    assert result.decision.counts == {A100: 3} and result.delete_deployments == [H100]
    # kept at some other size, it gets its pods back (an unlisted type is drained from its pods)
    assert children.resize_patch(2)["metadata"]["annotations"][PARKED_ANNOTATION] == ""
