"""The capacity view (k8s/cache.py) as pods and nodes come, change and go: what is used on each node,
what is free per node, which pods claim room before they are bound, and when the view's version moves
(free room computed from it is reused until then). Pods here have one container, so what a pod
requests is beyond doubt; how requests of init containers and overhead add up is not tested here."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from falapp_operator.api import DEFAULT_CATALOG, GPU_PRODUCT_LABEL, MachineType
from falapp_operator.api.names import APP_LABEL, TYPE_LABEL
from falapp_operator.api.resources import Resources
from falapp_operator.k8s import cache as cache_module
from falapp_operator.k8s.cache import ClusterCache
from falapp_operator.placement import NodeFree, shape_of
from falapp_operator.placement.snapshot import Shape
from falapp_operator.settings import OperatorSettings
from tests.builders import GPU

GiB = 2**30
H100 = "NVIDIA-H100-80GB-HBM3"


def shape(gpus: int) -> Shape:
    """What a pending replica of `pod(...)` with `gpus` GPUs asks for."""
    return shape_of(Resources.parse({GPU: str(gpus), "cpu": "4", "memory": "16Gi"}).counting(GPU))


def node(name: str, gpus: int = 8, cpu: str = "64", memory: str = "512Gi", ready: bool = True,
         cordoned: bool = False, product: str = H100, taints: list[dict] | None = None) -> dict:
    return {"metadata": {"name": name, "labels": {GPU_PRODUCT_LABEL: product}},
            "spec": {"unschedulable": cordoned, "taints": taints or []},
            "status": {"allocatable": {"nvidia.com/gpu": str(gpus), "cpu": cpu, "memory": memory},
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def pod(name: str, node_name: str | None = None, gpus: int = 1, cpu: str = "4", memory: str = "16Gi",
        app: str | None = "llm", machine_type: str | None = "gpu-h100", phase: str = "Running",
        namespace: str = "team-a", unschedulable: bool = False) -> dict:
    labels = {k: v for k, v in ((APP_LABEL, app), (TYPE_LABEL, machine_type)) if v}
    conditions = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}] if unschedulable else []
    return {"metadata": {"name": name, "uid": f"uid-{name}", "namespace": namespace, "labels": labels},
            "spec": {"nodeName": node_name, "containers": [{"name": "app", "resources": {"requests": {
                "nvidia.com/gpu": str(gpus), "cpu": cpu, "memory": memory}}}]},
            "status": {"phase": phase, "conditions": conditions}}


def h100() -> MachineType:
    return next(m for m in DEFAULT_CATALOG if m.metadata.name == "gpu-h100")


def free(cache: ClusterCache, name: str) -> NodeFree:
    (room,) = cache.free([cache.nodes[name]], GPU)
    return room


@pytest.fixture
def cache() -> ClusterCache:
    cache = ClusterCache()
    cache.upsert_node(node("n1"))
    cache.upsert_node(node("n2"))
    return cache


def test_the_default_catalogue_has_the_type_the_tests_use() -> None:
    (requirement,) = h100().spec.node_affinity or []
    assert requirement.key == GPU_PRODUCT_LABEL and H100 in (requirement.values or [])


def test_a_bound_pod_uses_room_on_its_node_until_it_is_deleted(cache: ClusterCache) -> None:
    assert free(cache, "n1") == NodeFree(8, 64000, 512 * GiB)
    assert cache.upsert_pod(pod("a", "n1", gpus=2)) is False  # nothing freed
    assert cache.upsert_pod(pod("b", "n1", gpus=3, cpu="500m", memory="1Gi")) is False
    assert free(cache, "n1") == NodeFree(3, 64000 - 4000 - 500, (512 - 16 - 1) * GiB)
    assert free(cache, "n2") == NodeFree(8, 64000, 512 * GiB)
    assert cache.remove_pod("uid-a") is True  # room freed
    assert free(cache, "n1") == NodeFree(5, 64000 - 500, 511 * GiB)
    assert cache.remove_pod("uid-a") is False  # deleted twice (a resync after the watch): no double count
    assert cache.remove_pod("uid-b") is True
    assert free(cache, "n1") == NodeFree(8, 64000, 512 * GiB)


def test_an_update_of_a_pod_is_not_counted_twice(cache: ClusterCache) -> None:
    for _ in range(3):  # the same pod reported again (MODIFIED, a resync)
        cache.upsert_pod(pod("a", "n1", gpus=2))
    assert free(cache, "n1").gpus == 6


def test_a_pod_bound_later_takes_room_only_from_then(cache: ClusterCache) -> None:
    cache.upsert_pod(pod("a", None, gpus=4))
    assert free(cache, "n1").gpus == 8 and free(cache, "n2").gpus == 8
    assert cache.upsert_pod(pod("a", "n2", gpus=4)) is False
    assert free(cache, "n2").gpus == 4


def test_a_pod_that_moved_frees_its_old_node(cache: ClusterCache) -> None:
    """A pod of the same uid reported on another node (its old binding's deletion missed): counted once."""
    cache.upsert_pod(pod("a", "n1", gpus=4))
    assert cache.upsert_pod(pod("a", "n2", gpus=4)) is True
    assert free(cache, "n1").gpus == 8 and free(cache, "n2").gpus == 4


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_a_finished_pod_holds_no_room(cache: ClusterCache, phase: str) -> None:
    cache.upsert_pod(pod("a", "n1", gpus=4))
    assert cache.upsert_pod(pod("a", "n1", gpus=4, phase=phase)) is True
    assert free(cache, "n1").gpus == 8 and "uid-a" not in cache.pods


def test_a_terminating_pod_still_holds_its_room(cache: ClusterCache) -> None:
    body = pod("a", "n1", gpus=4)
    body["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    cache.upsert_pod(body)
    assert free(cache, "n1").gpus == 4


def test_pods_not_ours_count_on_the_node_too(cache: ClusterCache) -> None:
    cache.upsert_pod(pod("batch", "n1", gpus=8, app=None, machine_type=None, namespace="research"))
    assert free(cache, "n1").gpus == 0
    assert cache.app_pods("gpu-h100") == []


def test_an_unready_or_cordoned_node_offers_no_room(cache: ClusterCache) -> None:
    assert cache.upsert_node(node("n1", ready=False)) is True
    assert cache.upsert_node(node("n2", cordoned=True)) is True
    assert cache.free(cache.nodes.values(), GPU) == []
    cache.upsert_node(node("n1"))
    assert cache.free(cache.nodes.values(), GPU) == [NodeFree(8, 64000, 512 * GiB)]


def test_a_node_whose_allocatable_shrinks_keeps_its_pods_counted(cache: ClusterCache) -> None:
    cache.upsert_pod(pod("a", "n1", gpus=6))
    cache.upsert_node(node("n1", gpus=4))  # e.g. two GPUs failed
    assert free(cache, "n1").gpus == -2  # overcommitted: no room, whatever placement adds up


def test_a_node_deleted_leaves_the_view_of_its_type(cache: ClusterCache) -> None:
    assert [n.name for n in cache.nodes_of_type(h100())] == ["n1", "n2"]
    assert cache.remove_node("n1") is True
    assert [n.name for n in cache.nodes_of_type(h100())] == ["n2"]
    assert cache.remove_node("n1") is False


def test_a_node_relabelled_joins_or_leaves_a_type(cache: ClusterCache) -> None:
    cache.upsert_node(node("n3", product="NVIDIA-A100-SXM4-80GB"))
    assert [n.name for n in cache.nodes_of_type(h100())] == ["n1", "n2"]
    cache.upsert_node(node("n3"))
    assert [n.name for n in cache.nodes_of_type(h100())] == ["n1", "n2", "n3"]
    cache.upsert_node(node("n1", product="NVIDIA-A100-SXM4-80GB"))
    assert [n.name for n in cache.nodes_of_type(h100())] == ["n2", "n3"]


def test_a_node_tainted_leaves_a_type_that_does_not_tolerate_it(cache: ClusterCache) -> None:
    cache.upsert_node(node("n1", taints=[{"key": "maintenance", "effect": "NoSchedule"}]))
    assert [n.name for n in cache.nodes_of_type(h100())] == ["n2"]
    cache.upsert_node(node("n1", taints=[{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]))  # tolerated
    assert [n.name for n in cache.nodes_of_type(h100())] == ["n1", "n2"]
    cache.upsert_node(node("n1", taints=[{"key": "maintenance", "effect": "PreferNoSchedule"}]))  # a preference
    assert [n.name for n in cache.nodes_of_type(h100())] == ["n1", "n2"]


@dataclass(frozen=True)
class Step:
    what: str
    moves: bool  # whether the version moves (free room may have changed)


def test_the_version_moves_exactly_when_free_room_may_have_changed(cache: ClusterCache) -> None:
    steps = [
        (Step("a pod created, not bound yet", False), lambda: cache.upsert_pod(pod("a", None))),
        (Step("the same pod reported again", False), lambda: cache.upsert_pod(pod("a", None))),
        (Step("the pod bound", True), lambda: cache.upsert_pod(pod("a", "n1"))),
        (Step("its status changed, not its node or requests", False),
         lambda: cache.upsert_pod(pod("a", "n1", phase="Pending"))),
        (Step("its requests changed (resized)", True), lambda: cache.upsert_pod(pod("a", "n1", gpus=2))),
        (Step("the pod deleted", True), lambda: cache.remove_pod("uid-a")),
        (Step("a pending pod deleted", False), lambda: (cache.upsert_pod(pod("b")), cache.remove_pod("uid-b"))),
        (Step("a node reported unchanged", False), lambda: cache.upsert_node(node("n1"))),
        (Step("a node's allocatable changed", True), lambda: cache.upsert_node(node("n1", gpus=4))),
        (Step("a node deleted", True), lambda: cache.remove_node("n2")),
    ]
    for step, act in steps:
        before = cache.version
        act()
        assert (cache.version != before) is step.moves, step.what


def test_pending_pods_of_other_apps_claim_room_on_their_type(cache: ClusterCache) -> None:
    cache.upsert_pod(pod("mine", None, gpus=1, app="llm"))
    cache.upsert_pod(pod("theirs", None, gpus=2, app="sdxl"))
    cache.upsert_pod(pod("bound", "n1", gpus=4, app="sdxl"))
    cache.upsert_pod(pod("hopeless", None, gpus=8, app="sdxl", unschedulable=True))  # the scheduler found no room
    cache.upsert_pod(pod("stranger", None, gpus=8, app="intruder"))  # carries the labels, is no managed app's
    cache.claims.count_gpus_as({"gpu-h100": GPU})
    for app in ("llm", "sdxl"):
        cache.claims.admit(("team-a", app))
    assert cache.claims.others(("team-a", "llm")) == {"gpu-h100": Counter({shape(2): 1})}
    assert cache.claims.others(("team-a", "sdxl")) == {"gpu-h100": Counter({shape(1): 1})}
    cache.upsert_pod(pod("theirs", "n2", gpus=2, app="sdxl"))  # bound: its room is taken on the node now
    assert cache.claims.others(("team-a", "llm")) == {}
    assert free(cache, "n2").gpus == 6


def test_a_pods_autoscaler_answer_is_the_newest_and_goes_with_the_pod(cache: ClusterCache) -> None:
    from datetime import UTC, datetime, timedelta

    from falapp_operator.k8s.cache import COMING, REFUSED
    t = datetime(2025, 1, 1, tzinfo=UTC)
    cache.upsert_pod(pod("a"))
    cache.record_scale_signal("uid-a", COMING, t)
    cache.record_scale_signal("uid-a", REFUSED, t - timedelta(seconds=1))  # an older answer arriving late
    assert cache.scale_up_coming("uid-a") and not cache.scale_up_refused("uid-a")
    cache.record_scale_signal("uid-a", REFUSED, t + timedelta(seconds=1))
    assert cache.scale_up_refused("uid-a") and not cache.scale_up_coming("uid-a")
    cache.remove_pod("uid-a")
    assert not cache.scale_up_refused("uid-a") and cache.scale_signals == {}


NODES = ("n1", "n2", "n3", "n4")
PODS = ("p1", "p2", "p3", "p4", "p5", "p6")
A100 = "NVIDIA-A100-SXM4-80GB"
MOSTLY = st.sampled_from((True, True, True, False))
# what happens to the cluster, one step at a time; "read" asks for a type's free room in between
STEPS = st.one_of(
    st.tuples(st.just("node"), st.sampled_from(NODES), st.integers(0, 8), MOSTLY, MOSTLY.map(lambda b: not b),
              st.sampled_from([H100, H100, A100]), st.sampled_from([None, None, "maintenance"])),
    st.tuples(st.just("node gone"), st.sampled_from(NODES)),
    # gpus None: a pod that requests nothing (BestEffort); "ghost": a node never seen
    st.tuples(st.just("pod"), st.sampled_from(PODS), st.sampled_from((None, *NODES, "ghost")),
              st.sampled_from((0, 1, 2, 3, None)), st.sampled_from(["Running", "Running", "Succeeded"])),
    st.tuples(st.just("pod gone"), st.sampled_from(PODS)),
    st.tuples(st.just("machine type edited")),
    st.tuples(st.just("read"), st.sampled_from(["gpu-h100", "gpu-a100"])),
)


def from_scratch(cache: ClusterCache, machine_type: MachineType) -> tuple[NodeFree, ...]:
    """The type's free room, computed afresh from the nodes and pods the cache holds."""
    out = []
    for info in cache.nodes.values():
        if not info.schedulable or not machine_type.spec.matches_node(info.labels, info.taints, False):
            continue
        used = Resources()
        for p in cache.pods.values():
            if p.node == info.name:
                used = used + p.requests
        left = (info.allocatable - used).counting(GPU)
        out.append(NodeFree(left.gpus, left.cpu_milli, left.memory_bytes))
    return tuple(out)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(STEPS, min_size=5, max_size=80), kept=st.sampled_from([2, 4, 4096]))
@example(steps=[("read", "gpu-h100"), ("pod", "p1", "n1", 2, "Running"), ("read", "gpu-h100")],
         kept=4096).via("a bound pod's node not updated")
@example(steps=[("pod", "p1", "n1", None, "Running"), ("node gone", "n1"), ("pod", "p1", "n1", None, "Running"),
                ("pod gone", "p1")], kept=4096).via("a node gone with a pod requesting nothing on it")
@example(steps=[("read", "gpu-h100"), ("pod", "p1", "n1", 1, "Running"),
                *(("pod", f"p{i}", "n2", 1, "Running") for i in range(2, 6)), ("read", "gpu-h100")],
         kept=4).via("the log ran out")
def test_a_types_free_room_kept_across_changes_is_what_it_would_be_afresh(steps: list[tuple], kept: int) -> None:
    """free_of_type brings its list up to date from the nodes whose pods changed (a short log of them:
    `kept` 2 or 4 makes it run out often); whatever happened, each type reads as computed from scratch,
    and what it handed out before stays as it was. Three H100 nodes and an A100 one to start with."""
    old_kept, cache_module.POD_CHANGES_KEPT = cache_module.POD_CHANGES_KEPT, kept
    try:
        cache = ClusterCache()
        types = {m.metadata.name: m for m in DEFAULT_CATALOG if m.metadata.name in ("gpu-h100", "gpu-a100")}
        for name in NODES:
            cache.upsert_node(node(name, product=H100 if name != "n4" else A100))
        handed_out: list[tuple[tuple[NodeFree, ...], tuple[NodeFree, ...]]] = []
        for step in steps:
            if step[0] == "node":
                _, name, gpus, ready, cordoned, product, taint = step
                taints = [{"key": taint, "effect": "NoSchedule"}] if taint else None
                cache.upsert_node(node(name, gpus=gpus, ready=ready, cordoned=cordoned, product=product,
                                       taints=taints))
            elif step[0] == "node gone":
                cache.remove_node(step[1])
            elif step[0] == "pod":
                _, name, node_name, gpus, phase = step
                body = pod(name, node_name, gpus=gpus or 0, phase=phase)
                if gpus is None:
                    body["spec"]["containers"][0]["resources"] = {}
                cache.upsert_pod(body)
            elif step[0] == "pod gone":
                cache.remove_pod(f"uid-{step[1]}")
            elif step[0] == "machine type edited":
                cache.forget_node_matches()
            else:
                machine_type = types[step[1]]
                free = cache.free_of_type(machine_type)
                assert free == from_scratch(cache, machine_type), steps
                handed_out.append((free, tuple(free)))
            # what each node's pods hold, and nothing kept for a node gone with none left
            held: dict[str, Resources] = {}
            for p in cache.pods.values():
                if p.node:
                    held[p.node] = held.get(p.node, Resources()) + p.requests
            assert {n: r for n, r in cache.requested.items() if r != Resources()} == \
                {n: r for n, r in held.items() if r != Resources()}, steps
            assert all(n in cache.nodes or n in held for n in cache.requested), steps
        for machine_type in types.values():
            assert cache.free_of_type(machine_type) == from_scratch(cache, machine_type)
        assert all(free == copy for free, copy in handed_out), "a list handed out changed"
    finally:
        cache_module.POD_CHANGES_KEPT = old_kept


def test_a_gated_pod_claims_no_room_until_its_gates_are_removed(cache: ClusterCache) -> None:
    """The scheduler does not look at a pod with scheduling gates (it may wait for ever, e.g. for a
    queue's admission): its labels alone must not hold room other apps could take."""
    cache.claims.count_gpus_as({"gpu-h100": GPU})
    cache.claims.admit(("team-a", "llm"))
    gated = pod("gated", None, gpus=8, app="sdxl")
    gated["spec"]["schedulingGates"] = [{"name": "example.com/queue"}]
    cache.upsert_pod(gated)
    cache.claims.admit(("team-a", "sdxl"))
    assert cache.claims.others(("team-a", "llm")) == {}
    del gated["spec"]["schedulingGates"]
    cache.upsert_pod(gated)
    assert cache.claims.others(("team-a", "llm")) == {"gpu-h100": Counter({shape(8): 1})}


def sdxl_pending(cache: ClusterCache, name: str) -> dict:
    """A pending 8-GPU pod of the sdxl app, to be stored; sdxl and llm both admitted."""
    cache.claims.count_gpus_as({"gpu-h100": GPU})
    cache.claims.admit(("team-a", "llm"))
    cache.claims.admit(("team-a", "sdxl"))
    return pod(name, None, gpus=8, app="sdxl")


def test_a_pod_no_scheduler_of_ours_looks_at_claims_no_room(cache: ClusterCache) -> None:
    """A pod labelled as an app's replica but for another scheduler (a tenant's, or one that does not
    exist) may stay pending for ever, and the scheduler never marks it: it must not hide a type's room
    from every other app. The operator's replicas are the default scheduler's."""
    phantom = sdxl_pending(cache, "phantom")
    phantom["spec"]["schedulerName"] = "nobody"
    cache.upsert_pod(phantom)
    assert cache.claims.others(("team-a", "llm")) == {}
    phantom["spec"]["schedulerName"] = "default-scheduler"
    cache.upsert_pod(phantom)
    assert cache.claims.others(("team-a", "llm")) == {"gpu-h100": Counter({shape(8): 1})}


def test_a_scheduler_a_webhook_gives_the_replicas_is_named_in_the_settings() -> None:
    """Where a mutating webhook gives GPU pods another scheduler (HAMi, Volcano), FALAPP_SCHEDULER_NAMES
    names it, and the replicas' pending pods claim room again."""
    settings = OperatorSettings(scheduler_names="default-scheduler, hami-scheduler", metrics_port=0)
    cache = ClusterCache(scheduler_names=settings.claiming_schedulers())
    replica = sdxl_pending(cache, "replica")
    replica["spec"]["schedulerName"] = "hami-scheduler"
    cache.upsert_pod(replica)
    assert cache.claims.others(("team-a", "llm")) == {"gpu-h100": Counter({shape(8): 1})}
    with pytest.raises(ValueError, match="scheduler_names must name at least one scheduler"):
        OperatorSettings(scheduler_names=" , ", metrics_port=0)  # would turn every claim off


def test_a_deleted_nodes_entry_goes_with_its_last_pod(cache: ClusterCache) -> None:
    """Node names come and go with an autoscaler: nothing is kept for a node gone once its pods are."""
    cache.upsert_pod(pod("a", "n1"))
    cache.upsert_pod(pod("b", "n1"))
    cache.remove_node("n1")
    assert "n1" in cache.requested, "its pods still hold room until the pod GC deletes them"
    cache.remove_pod("uid-a")
    cache.remove_pod("uid-b")
    assert "n1" not in cache.requested
    cache.remove_node("n2")  # no pods at all
    assert "n2" not in cache.requested and "n2" not in cache._free
