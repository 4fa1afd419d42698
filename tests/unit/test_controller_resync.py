"""The controller's view of the cluster recovers from what its watches missed: a pod deleted while the
watch was away (a LIST after 410 Gone reports no deletions by itself) is dropped by the
resync, and its room counts as free again. Autoscaler announcements are read back at start."""

from __future__ import annotations

import asyncio
import collections
import copy
import time

import pytest
from prometheus_client import REGISTRY

from falapp_operator.api import DEFAULT_CATALOG, GPU_PRODUCT_LABEL
from falapp_operator.k8s.client import WATCH_SILENCE, ApiError, ServerClock
from falapp_operator.k8s.controller import Controller
from falapp_operator.settings import OperatorSettings
from tests import builders
from tests.unit.test_controller_writes import wait_for


def node(name: str, gpus: int = 8) -> dict:
    return builders.node(name, gpus=gpus, labels={GPU_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3"}, taints=(), ready=True)


UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}


def pod(name: str, node_name: str | None, gpus: int = 8, unschedulable: bool = False) -> dict:
    return builders.pod(name, namespace="team-a", uid=f"uid-{name}", node_name=node_name,
                        phase="Pending" if node_name is None else "Running",
                        conditions=[UNSCHEDULABLE] if unschedulable else [],
                        labels={builders.APP_LABEL: "llm", builders.TYPE_LABEL: "gpu-h100"},
                        requests={builders.GPU: str(gpus), "cpu": "1", "memory": "1Gi"})


class ListingApi:
    """The reads the controller makes at start and on resync, from fixed lists."""

    def __init__(self, nodes: list[dict], pods: list[dict], events: list[dict] = (), namespaces: list[dict] = ()):
        self.nodes, self.pods, self.events, self.namespaces = nodes, pods, list(events), list(namespaces)
        self.machinetypes = [m.model_dump(by_alias=True, exclude_none=True, mode="json") for m in DEFAULT_CATALOG]
        self.nodepools: list[dict] | None = []
        self.customresourcedefinitions: list[dict] = []  # Karpenter's NodePool CRD, when installed
        self.clock = ServerClock()
        self.lists_of: collections.Counter[str] = collections.Counter()  # LIST requests per resource
        self.lists_in: collections.Counter[tuple[str, str | None]] = collections.Counter()  # and namespace

    async def get_namespace(self, name: str) -> dict | None:
        return next((n for n in self.namespaces if n["metadata"]["name"] == name), None)

    async def list_objects(self, resource: str, each, namespace: str | None = None, label_selector: str | None = None,
                           field_selector: str | None = None, read: str | None = None) -> str:
        """Machine types, NodePools, namespaces, nodes and pods as held (NodePools None: not served);
        FalApps, Deployments and Services: none; Events as the API server filters them by field."""
        self.lists_of[resource] += 1
        self.lists_in[(resource, namespace)] += 1
        if resource == "nodepools" and self.nodepools is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if resource in ("machinetypes", "nodepools", "namespaces", "nodes", "pods", "customresourcedefinitions"):
            for body in getattr(self, resource):
                each(body)
            return "1"
        wanted = dict(term.split("=") for term in (field_selector or "").split(",") if term)
        for e in self.events if resource == "events" else ():
            fields = {"reason": e["reason"], "source": (e.get("source") or {}).get("component", "")}
            if all(fields.get(k) == v for k, v in wanted.items()):
                each(e)
        return "1"

    async def watch_objects(self, resource: str, resource_version: str, *args, **kwargs):
        await asyncio.Event().wait()
        yield


async def test_resync_drops_a_pod_whose_deletion_the_watch_missed():
    api = ListingApi([node("n1")], [pod("old", "n1")])
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        assert controller.cache.free(controller.cache.nodes.values(), "nvidia.com/gpu")[0].gpus == 0
        controller.waiting.add(("team-a", "other"))
        api.pods = []  # deleted while the watch was away: no DELETED event ever came
        await controller.resync()
        assert "uid-old" not in controller.cache.pods
        assert controller.cache.free(controller.cache.nodes.values(), "nvidia.com/gpu")[0].gpus == 8
        assert ("app", "team-a", "other") in controller.queue._queued, "an app waiting for room was not woken"
        # a pod on a node no machine type uses (another team's) wakes nobody
        controller.queue._queued.clear()
        other = {**node("other-1"), "metadata": {"name": "other-1", "labels": {}},
                 "spec": {"taints": [{"key": "dedicated", "value": "team-b", "effect": "NoSchedule"}]}}
        api.nodes.append(other)
        api.pods = [pod("elsewhere", "other-1")]
        await controller.resync()
        api.pods = []
        await controller.resync()
        assert ("app", "team-a", "other") not in controller.queue._queued
        # a node gone meanwhile goes too
        api.nodes = []
        await controller.resync()
        assert controller.cache.nodes == {}
    finally:
        await controller.stop()


async def test_a_pod_that_changed_while_the_watch_was_away_queues_its_app():
    """A replica bound, Ready or failing during the gap is news to its app once the LIST shows it."""
    pending = builders.pod("p1", namespace="team-a", uid="uid-p1", phase="Pending",
                           labels={builders.APP_LABEL: "llm", builders.TYPE_LABEL: "gpu-h100"},
                           requests={builders.GPU: "1", "cpu": "1", "memory": "1Gi"})
    pending["metadata"]["resourceVersion"] = "5"
    api = ListingApi([node("n1")], [pending])
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0,
                                                  event_batch_window=0))
    await controller.start()
    try:
        controller.queue._queued.clear()
        await controller.resync()
        assert ("app", "team-a", "llm") not in controller.queue._queued, "nothing changed: nothing to look at"
        running = copy.deepcopy(pending)
        running["metadata"]["resourceVersion"] = "9"
        running["spec"]["nodeName"] = "n1"
        running["status"]["conditions"].append({"type": "Ready", "status": "True"})
        api.pods = [running]
        await controller.resync()
        assert ("app", "team-a", "llm") in controller.queue._queued
    finally:
        await controller.stop()


async def test_an_apps_finished_pod_is_no_new_replica_and_goes_when_the_list_lacks_it():
    """An evicted replica (phase Failed) takes no room, so the cache does not hold it; the app's store does.
    A resync is no news of a replica come (was: each one took back a replica the app had asked for, and
    the room it asked for looked free to another app), and a LIST without it drops it (was: kept for good)."""
    evicted = builders.pod("evicted", namespace="team-a", uid="uid-evicted", phase="Failed",
                           labels={builders.APP_LABEL: "llm", builders.TYPE_LABEL: "gpu-h100"},
                           requests={builders.GPU: "1", "cpu": "1", "memory": "1Gi"})
    evicted["metadata"]["resourceVersion"] = "5"
    api = ListingApi([node("n1")], [evicted])
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        app = ("team-a", "llm")
        assert [p["metadata"]["name"] for p in controller.app_pods.of_app(*app)] == ["evicted"]
        controller.cache.claims.expect(app, "gpu-h100", (1, 1000, 2**30), 1, time.monotonic())
        await controller.resync()
        assert controller.cache.claims.expecting(app) == {"gpu-h100": 1}
        api.pods = []
        await controller.resync()
        assert controller.app_pods.of_app(*app) == []
    finally:
        await controller.stop()


async def test_a_pod_that_finished_while_the_watch_was_away_wakes_the_apps_waiting_for_room():
    running = pod("batch-job", "n1")
    running["metadata"]["resourceVersion"] = "5"
    api = ListingApi([node("n1")], [running])
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        assert controller.cache.free(controller.cache.nodes.values(), "nvidia.com/gpu")[0].gpus == 0
        controller.waiting.add(("team-a", "other"))
        controller.queue._queued.clear()
        finished = copy.deepcopy(running)
        finished["metadata"]["resourceVersion"] = "9"
        finished["status"]["phase"] = "Succeeded"  # its LIST still shows it, on its node, finished
        api.pods = [finished]
        await controller.resync()
        assert controller.cache.free(controller.cache.nodes.values(), "nvidia.com/gpu")[0].gpus == 8
        assert ("app", "team-a", "other") in controller.queue._queued, "an app waiting for room was not woken"
    finally:
        await controller.stop()


async def test_resync_does_not_undo_what_the_watch_said_meanwhile():
    api = ListingApi([node("n1")], [pod("old", "n1")])
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        listing = api.list_objects

        async def slow_list(resource, each, *args, **kwargs):  # the watch reports a deletion and a creation
            if resource == "pods":  # while the LIST pages
                controller.pod_event(pod("old", "n1"), deleted=True)
                controller.pod_event(pod("new", "n1"), deleted=False)
            return await listing(resource, each, *args, **kwargs)
        api.list_objects = slow_list
        await controller.resync()
        assert "uid-old" not in controller.cache.pods and "uid-new" in controller.cache.pods
    finally:
        await controller.stop()


async def test_autoscaler_announcements_are_read_back_at_start():
    event = {"reason": "TriggeredScaleUp", "involvedObject": {"kind": "Pod", "uid": "uid-waiting"},
             "lastTimestamp": "2026-01-01T00:00:00Z", "metadata": {}}
    api = ListingApi([node("n1")], [pod("waiting", None, unschedulable=True)], [event])
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        assert controller.cache.scale_up_coming("uid-waiting")
        # Events get no bookmarks (no watch cache): their watches are not restarted for silence
        silences = {i.field_selector: i.silence for i in controller.scale_signals[None].informers}
        assert len(silences) == 5 and set(silences.values()) == {None}
        assert {i.silence for i in controller._informers} == {WATCH_SILENCE}
    finally:
        await controller.stop()


async def test_autoscaler_events_are_watched_only_while_a_replica_waits_unschedulable():
    """An idle cluster's Events are never listed (the API server reads them from etcd, all of them); a
    replica the scheduler found no node for starts their watches, each with a LIST that takes what the
    autoscaler said before; they stop `scale_signal_linger` after the last such replica was placed."""
    event = {"reason": "TriggeredScaleUp", "involvedObject": {"kind": "Pod", "uid": "uid-late"},
             "lastTimestamp": "2026-01-01T00:00:00Z", "metadata": {}}
    api = ListingApi([node("n1")], [pod("placed", "n1")], [event])
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0,
                                                  scale_signal_linger=0.2))
    await controller.start()
    try:
        assert api.lists_of["events"] == 0 and not controller.scale_signals[None].running
        controller.pod_event(pod("pending", None), deleted=False)  # not yet seen by the scheduler
        gated = pod("gated", None, unschedulable=True)  # no autoscaler answers a gated pod
        gated["spec"]["schedulingGates"] = [{"name": "example.com/quota"}]
        controller.pod_event(gated, deleted=False)
        assert not controller.scale_signals[None].running
        controller.pod_event(pod("late", None, unschedulable=True), deleted=False)
        assert controller.scale_signals[None].running
        await wait_for(lambda: api.lists_of["events"] == 5)  # one LIST per reason watched
        assert controller.cache.scale_up_coming("uid-late")  # said before the watch started
        controller.pod_event(pod("late", "n1"), deleted=False)  # placed: the Events linger, then stop
        assert not controller.cache.scale_up_coming("uid-late"), "a bound pod kept the word about its wait"
        controller.scale_signal_event(event)  # the same Event listed again (a watch restarted): still over
        assert not controller.cache.scale_up_coming("uid-late")
        await asyncio.sleep(0.05)
        assert controller.scale_signals[None].running
        controller.pod_event(pod("again", None, unschedulable=True), deleted=False)  # another waits: still on
        controller.pod_event(pod("again", None, unschedulable=True), deleted=True)
        await wait_for(lambda: not controller.scale_signals[None].running)
        assert api.lists_of["events"] == 5  # (none while they ran: the watch went on)
        controller.pod_event(pod("third", None, unschedulable=True), deleted=False)
        await wait_for(lambda: api.lists_of["events"] == 10)  # started again: listed again
    finally:
        await controller.stop()
    assert all(t.done() for t in asyncio.all_tasks() if t.get_name().startswith("falapp-watch-events"))


async def test_autoscaler_events_are_watched_only_in_the_namespace_where_a_replica_waits():
    """With FalApps watched in some namespaces, a replica waiting in one lists and watches that one's
    Events (not every watched namespace's: fifty namespaces would be 250 LISTs at once)."""
    api = ListingApi([node("n1")], [pod("placed", "n1")])
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0,
                                                  watch_namespaces="team-a,team-b"))
    await controller.start()
    try:
        controller.pod_event(pod("late", None, unschedulable=True), deleted=False)  # in team-a
        await wait_for(lambda: api.lists_in[("events", "team-a")] == 5)
        assert controller.scale_signals["team-a"].running and not controller.scale_signals["team-b"].running
        assert api.lists_in[("events", "team-b")] == 0
    finally:
        await controller.stop()


def namespace(name: str, **labels: str) -> dict:
    return {"metadata": {"name": name, "labels": labels}}


async def test_namespace_labels_are_known_from_the_start_and_a_change_places_its_apps_again():
    api = ListingApi([node("n1")], [], namespaces=[namespace("team-a", team="a"), namespace("team-b")])
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        assert controller.namespaces.labels == {"team-a": {"team": "a"}, "team-b": {}}
        controller.apps |= {("team-a", "llm"), ("team-b", "sdxl")}
        controller.namespace_event(namespace("team-a", team="a"), deleted=False)  # no change: nothing queued
        assert len(controller.queue) == 0
        controller.namespace_event(namespace("team-a", team="a", gpu="h100"), deleted=False)
        assert len(controller.queue) == 1 and controller.namespaces.labels["team-a"] == {"team": "a", "gpu": "h100"}
        controller.queue._queued.clear()
        controller.namespace_event(namespace("team-b"), deleted=True)  # its apps went with it, or were left behind
        assert "team-b" not in controller.namespaces.labels and controller.queue._queued == {("app", "team-b", "sdxl")}
    finally:
        await controller.stop()


async def test_a_namespace_gone_while_the_watch_was_away_is_dropped_and_its_apps_looked_at_again():
    """A watch that lists again (after an API server restart) tells no DELETED: the resync's LIST does.
    Its apps, held while it was being deleted, are looked at again (gone, or left behind)."""
    being_deleted = {**namespace("team-b"), "metadata": {**namespace("team-b")["metadata"],
                                                          "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    api = ListingApi([node("n1")], [], namespaces=[namespace("team-a"), being_deleted])
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        assert controller.namespaces.terminating == {"team-b"}
        controller.apps |= {("team-a", "llm"), ("team-b", "sdxl")}
        api.namespaces = [namespace("team-a")]
        await controller.resync()
        assert set(controller.namespaces.labels) == {"team-a"} and controller.namespaces.terminating == set()
        assert controller.queue._queued == {("app", "team-b", "sdxl")}
    finally:
        await controller.stop()


def test_a_pod_with_a_request_no_node_can_hold_takes_no_room_and_does_not_break_the_watch():
    from falapp_operator.k8s.cache import ClusterCache
    cache = ClusterCache()
    absurd = pod("absurd", None)
    absurd["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "1e1000000"
    cache.upsert_pod(absurd)
    assert cache.pods["uid-absurd"].requests.cpu_milli == 0


def test_autoscaler_answers_are_told_apart_by_reason_and_source():
    from falapp_operator.k8s.cache import COMING, REFUSED, autoscaler_answer
    karpenter = {"component": "karpenter"}
    assert autoscaler_answer({"reason": "Nominated", "source": karpenter}) == COMING
    assert autoscaler_answer({"reason": "TriggeredScaleUp", "source": {"component": "cluster-autoscaler"}}) == COMING
    assert autoscaler_answer({"reason": "NotTriggerScaleUp"}) == REFUSED
    assert autoscaler_answer({"reason": "FailedScheduling", "source": karpenter}) == REFUSED
    assert autoscaler_answer({"reason": "FailedScheduling", "reportingComponent": "karpenter"}) == REFUSED
    # the scheduler's own FailedScheduling says nothing about nodes to come
    assert autoscaler_answer({"reason": "FailedScheduling", "source": {"component": "default-scheduler"}}) is None


async def test_a_type_whose_nodes_a_nodepool_makes_counts_as_autoscaled():
    api = ListingApi([node("n1")], [])
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        def autoscaled() -> set[str]:
            return {m.metadata.name for m in controller.types.placement() if m.spec.autoscaled}
        assert autoscaled() == set()
        controller.apps.add(("team-a", "llm"))
        pool = {"metadata": {"name": "h100"}, "spec": {"template": {
            "metadata": {"labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
            "spec": {"requirements": [{"key": "nvidia.com/gpu.count", "operator": "In", "values": ["8"]}],
                     "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]}}}}
        controller.nodepool_event(pool, deleted=False)
        assert autoscaled() == {"gpu-h100"} and ("app", "team-a", "llm") in controller.queue._queued
        # Karpenter writing the pool's status (as its nodes come and go) changes nothing placement reads
        catalogue = controller.types.placement()
        controller.nodepool_event({**pool, "status": {"resources": {"nodes": "3"}}}, deleted=False)
        assert controller.types.placement() is catalogue
        # an untainted pool makes nodes CPU types could use too: only a declaration makes those autoscaled
        controller.nodepool_event({"metadata": {"name": "general"}, "spec": {"template": {}}}, deleted=False)
        assert autoscaled() == {"gpu-h100"}
        # a type declared not autoscaled stays so, whatever the pools
        declared = controller.types.declared["gpu-h100"].model_dump(by_alias=True, exclude_none=True, mode="json")
        declared["spec"]["autoscaled"] = False
        controller.machinetype_event(declared, deleted=False)
        assert autoscaled() == set()
        controller.nodepool_event(pool, deleted=True)
    finally:
        await controller.stop()


H100_POOL = {"metadata": {"name": "h100"}, "spec": {"template": {
    "metadata": {"labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
    "spec": {"requirements": [{"key": "nvidia.com/gpu.count", "operator": "In", "values": ["8"]}],
             "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]}}}}


async def test_nodepools_are_known_before_the_first_reconcile():
    """Karpenter's pools are listed at start, with the catalogue: the first reconciles wait on an autoscaled
    type's scaleUpTimeout, not its unschedulableTimeout. (Was: known only once the NodePool watch told,
    after reconciling had begun.)"""
    api = ListingApi([node("n1")], [])
    api.nodepools = [H100_POOL]
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        assert {m.metadata.name for m in controller.types.placement() if m.spec.autoscaled} == {"gpu-h100"}
    finally:
        await controller.stop()


async def test_a_machinetype_or_nodepool_deleted_while_the_watch_was_away_is_dropped():
    """A watch that lists again (after an API server restart) tells no DELETED: the resync's LIST does, for
    the catalogue and Karpenter's pools too. (Was: a deleted MachineType stayed in the catalogue, apps kept
    replicas on it, and a deleted pool kept its type autoscaled, until the operator restarted.)"""
    api = ListingApi([node("n1")], [])
    api.nodepools = [H100_POOL]
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        assert "gpu-a100" in controller.types.declared
        api.machinetypes = [m for m in api.machinetypes if m["metadata"]["name"] != "gpu-a100"]
        api.nodepools = []
        await controller.resync()
        assert "gpu-a100" not in controller.types.declared and "gpu-h100" in controller.types.declared
        assert not any(m.spec.autoscaled for m in controller.types.placement())
    finally:
        await controller.stop()


async def test_a_nodepool_list_refused_stops_neither_the_start_nor_the_pods_correction():
    """Karpenter's API answering 500 (its conversion webhook down) or 403: the pools are kept as known and
    the rest of the resync goes on. (Was: start raised, and after a pod watch's 410 no pod was listed.)"""
    api = ListingApi([node("n1")], [pod("gone", "n1")])
    listing = api.list_objects

    async def refused(resource, each, *args, **kwargs) -> str:
        if resource == "nodepools":
            raise ApiError(500, "InternalError", "conversion webhook for karpenter.sh/v1, Kind=NodePool failed")
        return await listing(resource, each, *args, **kwargs)
    api.list_objects = refused
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        assert "uid-gone" in controller.cache.pods
        api.pods = []
        await controller.resync()
        assert "uid-gone" not in controller.cache.pods
    finally:
        await controller.stop()


async def test_a_resync_that_finds_the_catalogue_unchanged_queues_nothing():
    """Nothing changed, an invalid MachineType included (ignored, with a warning when it came): the resync
    queues no app. (Was: the invalid one, never in the catalogue, was taken as new at every resync and
    queued every app.)"""
    api = ListingApi([node("n1")], [], namespaces=[namespace("team-a")])
    api.machinetypes.append({"apiVersion": "fal.ai/v1alpha1", "kind": "MachineType",
                             "metadata": {"name": "broken", "generation": 1}, "spec": {"noSuchField": 1}})
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        assert "broken" not in controller.types.declared
        controller.apps.add(("team-a", "llm"))
        controller.queue._queued.clear()
        await controller.resync()
        assert ("app", "team-a", "llm") not in controller.queue._queued
    finally:
        await controller.stop()


async def test_the_periodic_resync_survives_an_error_it_did_not_expect():
    """A body the handlers did not expect must not end the resyncs for good (the pod watch survives
    the same way): the next period resyncs again."""
    controller = Controller(ListingApi([node("n1")], []),
                            OperatorSettings(workers=1, resync_period=0.01, metrics_port=0))
    calls = 0
    again = asyncio.Event()

    async def resync() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyError("a pod bound to a node gone")
        again.set()

    controller.resync = resync  # type: ignore[method-assign]
    loop = asyncio.create_task(controller._resync_loop())
    try:
        await asyncio.wait_for(again.wait(), 5)
    finally:
        loop.cancel()
    assert calls >= 2


async def test_resync_does_not_undo_what_the_namespace_watch_said_meanwhile():
    api = ListingApi([node("n1")], [], namespaces=[namespace("team-a"), namespace("team-b")])
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        listing = api.list_objects

        async def watched_meanwhile(resource, each, *args, **kwargs) -> str:
            if resource != "namespaces":
                return await listing(resource, each, *args, **kwargs)
            held = list(api.namespaces)  # the LIST's snapshot predates both events
            controller.namespace_event(namespace("team-c"), deleted=False)
            controller.namespace_event(namespace("team-b"), deleted=True)
            for body in held:
                each(body)
            return "1"
        api.list_objects = watched_meanwhile
        await controller.resync()
        assert set(controller.namespaces.labels) == {"team-a", "team-c"}
    finally:
        await controller.stop()


async def test_a_controller_stopped_starts_no_workers_when_elected_after():
    """The process stops the controller first, while still leading, then leaves the election: should it be
    elected in between, no reconcile starts on the stopped controller."""
    controller = Controller(ListingApi([node("n1")], []), OperatorSettings(workers=2, resync_period=0, metrics_port=0))
    await controller.start()
    await controller.stop()
    controller.lead()
    assert controller._workers == []


class WatchingApi(ListingApi):
    """ListingApi whose LISTs each answer a new version (and record what they listed), and whose watches
    tell what the test puts in `streams[resource]`: an event, an exception (the watch fails with it) or
    None (the server ends the watch)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lists = 0
        self.listed: list[str] = []
        self.streams: collections.defaultdict[str, asyncio.Queue] = collections.defaultdict(asyncio.Queue)
        self.watched_from: list[tuple[str, str]] = []

    async def list_objects(self, resource: str, each, *args, **kwargs) -> str:
        await asyncio.sleep(0)  # a LIST takes its time: others' watches go on meanwhile
        await super().list_objects(resource, each, *args, **kwargs)
        self.listed.append(resource)
        self.lists += 1
        return str(self.lists)

    async def watch_objects(self, resource: str, resource_version: str, *args, **kwargs):
        self.watched_from.append((resource, resource_version))
        while (item := await self.streams[resource].get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item

    def watches_of(self, resource: str) -> list[str]:
        return [v for r, v in self.watched_from if r == resource]


def versioned(body: dict, version: str) -> dict:
    return {**body, "metadata": {**body["metadata"], "resourceVersion": version}}


NODEPOOL_CRD = {"metadata": {"name": "nodepools.karpenter.sh", "uid": "crd-1"},
                "spec": {"versions": [{"name": "v1beta1", "served": False}, {"name": "v1", "served": True}]},
                "status": {"conditions": [{"type": "Established", "status": "True"}]}}


async def test_nodepools_are_watched_while_karpenters_crd_serves_them():
    """Where Karpenter is not installed, nothing about NodePools is asked after the start (no LIST refused
    every few seconds); its CRD coming starts the NodePool watch, listed first; the CRD going drops every
    NodePool (the autoscaled types with them) and stops the watch."""
    api = WatchingApi([node("n1")], [])
    api.nodepools = None  # not served
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        await wait_for(lambda: api.watches_of("customresourcedefinitions"))
        assert not controller.nodepool_watch.running and not api.watches_of("nodepools")
        api.nodepools, api.customresourcedefinitions = [versioned(H100_POOL, "5")], [NODEPOOL_CRD]
        api.listed.clear()
        api.streams["customresourcedefinitions"].put_nowait(("ADDED", versioned(NODEPOOL_CRD, "7")))
        await wait_for(lambda: api.watches_of("nodepools"))
        assert api.listed == ["nodepools"] and set(controller.types.nodepools) == {"h100"}
        assert {m.metadata.name for m in controller.types.placement() if m.spec.autoscaled} == {"gpu-h100"}
        api.streams["customresourcedefinitions"].put_nowait(("DELETED", versioned(NODEPOOL_CRD, "9")))
        await wait_for(lambda: not controller.nodepool_watch.running)
        assert controller.types.nodepools == {}
        assert not any(m.spec.autoscaled for m in controller.types.placement())
    finally:
        await controller.stop()


async def test_a_refused_crd_list_fails_no_start():
    """RBAC without the CRD (a hand-made role): the operator starts, with its NodePools as the start listed
    them, and the CRD's watch goes on trying (its back-off grows to minutes)."""
    api = WatchingApi([node("n1")], [])
    api.nodepools = [versioned(H100_POOL, "5")]
    listing = api.list_objects

    async def refused(resource, each, *args, **kwargs) -> str:
        if resource == "customresourcedefinitions":
            raise ApiError(403, "Forbidden", "customresourcedefinitions is forbidden", resource)
        return await listing(resource, each, *args, **kwargs)
    api.list_objects = refused
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        assert set(controller.types.nodepools) == {"h100"}
        [crd] = [t for t in asyncio.all_tasks() if t.get_name() == "falapp-watch-nodepool-crd"]
        assert not crd.done()
    finally:
        await controller.stop()


async def test_nodepools_served_at_the_start_are_watched_from_the_starts_list():
    api = WatchingApi([node("n1")], [])
    api.nodepools, api.customresourcedefinitions = [versioned(H100_POOL, "5")], [NODEPOOL_CRD]
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        await wait_for(lambda: api.watches_of("nodepools"))
        assert api.watches_of("nodepools") == [controller._versions["nodepools"]], "not continued from the LIST"
        assert api.listed.count("nodepools") == 1
        api.streams["nodepools"].put_nowait(("DELETED", versioned(H100_POOL, "60")))
        await wait_for(lambda: controller.types.nodepools == {})
    finally:
        await controller.stop()


async def test_nodes_are_watched_from_the_start_and_only_nodes_listed_again_when_the_watch_expires():
    """The controller watches nodes itself (kopf kept a task per node: 2000 nodes' heartbeats at once),
    from the version of the start's LIST; after 410 Gone it lists nodes again (not the cluster's pods), and
    a node deleted while the watch was away is dropped (a LIST tells no deletion by itself)."""
    api = WatchingApi([node("n1"), node("n2")], [pod("job", "n1")])
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        await wait_for(lambda: api.watches_of("nodes"))
        assert api.watches_of("nodes") == [controller._versions["nodes"]], "not continued from the LIST"
        controller.waiting.add(("team-a", "other"))
        api.streams["nodes"].put_nowait(("ADDED", versioned(node("n3"), "50")))
        api.streams["nodes"].put_nowait(("DELETED", node("n2")))
        await wait_for(lambda: "n3" in controller.cache.nodes and "n2" not in controller.cache.nodes)
        assert ("app", "team-a", "other") in controller.queue._queued, "room came: an app waiting was not woken"
        api.nodes = [node("n1")]  # n3 goes while the watch is away: no DELETED ever comes
        api.listed.clear()
        api.streams["nodes"].put_nowait(ApiError(410, "Expired", "too old resource version"))
        await wait_for(lambda: len(api.watches_of("nodes")) == 2)
        assert set(controller.cache.nodes) == {"n1"}
        assert api.listed == ["nodes"], "a node watch expiring listed more than nodes"
        assert api.watches_of("nodes")[-1] == controller._versions["nodes"]
    finally:
        await controller.stop()


async def test_a_node_relist_does_not_wait_behind_the_pods_pages():
    """After an API server restart every watch lists again at once: a node's deletion is taken while the
    pods' LIST still pages (each resource's relist on its own)."""
    api = WatchingApi([node("n1"), node("n2")], [pod("job", "n1")])
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        listing, pods_paging = api.list_objects, asyncio.Event()

        async def slow_pods(resource, each, *args, **kwargs) -> str:
            if resource == "pods":
                await pods_paging.wait()
            return await listing(resource, each, *args, **kwargs)
        api.list_objects = slow_pods
        pods = asyncio.create_task(controller.resync(only="pods"))
        await asyncio.sleep(0.01)
        api.nodes = [node("n1")]  # n2 went while the node watch was away
        await asyncio.wait_for(controller.resync(only="nodes"), 1.0)
        assert set(controller.cache.nodes) == {"n1"} and not pods.done()
        pods_paging.set()
        await pods
    finally:
        await controller.stop()


async def test_a_watch_ended_by_the_server_goes_on_from_where_it_stopped_not_from_a_resyncs_list():
    """A namespace changed during a resync's LIST is the watch's word (the LIST's copy is not taken); its
    deletion, committed before the LIST's snapshot but not yet told when the server ends the watch, comes
    on the watch started again only if that watch goes on from where the last one stopped."""
    api = WatchingApi([node("n1")], [], namespaces=[namespace("team-a"), namespace("team-b")])
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        await wait_for(lambda: api.watches_of("namespaces"))
        listing = api.list_objects

        async def changed_during_the_list(resource, each, *args, **kwargs) -> str:
            if resource == "namespaces":  # told by the watch while the LIST pages; deleted before its snapshot
                api.streams["namespaces"].put_nowait(("MODIFIED", versioned(namespace("team-b", team="b"), "60")))
                await wait_for(lambda: controller.namespaces.labels.get("team-b") == {"team": "b"})
                api.namespaces = [namespace("team-a")]
            return await listing(resource, each, *args, **kwargs)
        api.list_objects = changed_during_the_list
        await controller.resync()
        api.list_objects = listing
        assert "team-b" in controller.namespaces.labels, "the watch's word was undone by an older LIST"
        api.streams["namespaces"].put_nowait(None)  # the server ends the watch (its 5-10 minutes are up)
        await wait_for(lambda: len(api.watches_of("namespaces")) == 2)
        assert api.watches_of("namespaces")[-1] == "60", "went on from the resync's LIST, not from its own stream"
        api.streams["namespaces"].put_nowait(("DELETED", versioned(namespace("team-b"), "61")))
        await wait_for(lambda: "team-b" not in controller.namespaces.labels)
    finally:
        await controller.stop()


async def test_watches_expiring_together_each_list_their_own_resource_once():
    """The API server restarted: the catalogue, namespace, node and pod watches all answer 410 at once;
    each lists its own resource once (a whole resync each was 4 x 18 LIST pages at 2000 nodes)."""
    api = WatchingApi([node("n1")], [pod("job", "n1")])
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        cluster = ("machinetypes", "namespaces", "nodes", "pods")
        await wait_for(lambda: all(api.watches_of(r) for r in cluster))
        api.listed.clear()
        for resource in cluster:
            api.streams[resource].put_nowait(ApiError(410, "Expired", "too old resource version"))
        await wait_for(lambda: all(len(api.watches_of(r)) == 2 for r in cluster))
        assert sorted(api.listed) == list(cluster), api.listed
        assert set(controller.types.declared) and set(controller.cache.nodes) == {"n1"}
        assert set(controller.cache.pods) == {"uid-job"}
    finally:
        await controller.stop()


async def test_a_catalogue_list_refused_keeps_the_catalogue_and_its_watch_goes_on_once_it_answers():
    api = WatchingApi([node("n1")], [])
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        await wait_for(lambda: api.watches_of("machinetypes"))
        catalogue = set(controller.types.declared)
        listing, refused = api.list_objects, []

        async def refusing(resource, each, *args, **kwargs) -> str:
            if resource == "machinetypes" and len(refused) < 2:
                refused.append(resource)
                raise ApiError(503, "ServiceUnavailable", "the API server is shutting down")
            return await listing(resource, each, *args, **kwargs)
        api.list_objects = refusing
        api.streams["machinetypes"].put_nowait(ApiError(410, "Expired", "too old resource version"))
        await wait_for(lambda: len(api.watches_of("machinetypes")) == 2)
        assert len(refused) == 2 and set(controller.types.declared) == catalogue, "the catalogue was dropped"
    finally:
        await controller.stop()


async def test_a_listed_object_the_handlers_did_not_expect_is_left_out_and_the_rest_taken(caplog):
    """A node whose body breaks the handler: the LIST takes every other node and its watch goes on (was: the
    LIST failed on it at every try, every 10 s, and the watch never started again)."""
    api = WatchingApi([node("n1")], [])
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        await wait_for(lambda: api.watches_of("nodes"))
        upsert = controller.cache.upsert_node
        skipped = REGISTRY.get_sample_value("falapp_listed_objects_skipped_total", {"resource": "nodes"}) or 0

        def breaks_on_odd(body):
            if body["metadata"]["name"] == "odd":
                raise KeyError("a field the operator did not expect")
            return upsert(body)
        controller.cache.upsert_node = breaks_on_odd
        api.nodes = [node("n1"), node("odd"), node("n2")]
        api.streams["nodes"].put_nowait(ApiError(410, "Expired", "too old resource version"))
        await wait_for(lambda: len(api.watches_of("nodes")) == 2)
        assert set(controller.cache.nodes) == {"n1", "n2"}
        assert "listed nodes odd not taken" in caplog.text
        assert REGISTRY.get_sample_value("falapp_listed_objects_skipped_total", {"resource": "nodes"}) == skipped + 1
        # a fault on every node is no odd object: the LIST fails (and is tried again), nothing is dropped
        api.nodes = [node("odd"), node("n3")]
        controller.cache.upsert_node = lambda body: breaks_on_odd({"metadata": {"name": "odd"}})
        api.listed.clear()
        api.streams["nodes"].put_nowait(ApiError(410, "Expired", "too old resource version"))
        await wait_for(lambda: api.listed.count("nodes") >= 2)
        assert len(api.watches_of("nodes")) == 2 and set(controller.cache.nodes) == {"n1", "n2"}
        controller.cache.upsert_node = upsert
        await wait_for(lambda: len(api.watches_of("nodes")) == 3)
        assert set(controller.cache.nodes) == {"odd", "n3"}
    finally:
        await controller.stop()


async def test_a_listed_object_the_handlers_did_not_expect_fails_the_start():
    """No decision on a half-known cluster: the start fails (kopf runs it again), as it always did."""
    api = WatchingApi([node("n1"), node("odd")], [])
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    upsert = controller.cache.upsert_node

    def breaks_on_odd(body):
        if body["metadata"]["name"] == "odd":
            raise KeyError("a field the operator did not expect")
        return upsert(body)
    controller.cache.upsert_node = breaks_on_odd
    with pytest.raises(KeyError, match="did not expect"):
        await controller.start()
    await controller.stop()


async def test_a_periodic_resync_goes_on_past_a_resource_it_could_not_take(caplog):
    """Every NodePool (one: common) failing the handler fails that LIST, not the resync: the pods'
    correction still comes (a pod deleted while the watch was away is dropped)."""
    api = WatchingApi([node("n1")], [pod("gone", "n1")])
    api.nodepools = [{"metadata": {"name": "gpu-pool"}, "spec": {}}]
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        def breaks(body, deleted):
            raise KeyError("a field the operator did not expect")
        controller.nodepool_event = breaks
        api.pods = []
        await controller.resync()
        assert "uid-gone" not in controller.cache.pods, "the pods' correction did not come"
        assert "resync: nodepools not listed, kept as known" in caplog.text
    finally:
        await controller.stop()


async def test_nodepools_not_served_are_none_and_those_known_go(caplog):
    """Karpenter not installed (its API answers 404): no NodePool, nothing to warn about; one known before
    (Karpenter uninstalled) goes, and its types count as fixed-size again."""
    api = ListingApi([node("n1")], [])
    api.nodepools = [{"metadata": {"name": "gpu-pool"}, "spec": {}}]
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        assert set(controller.types.nodepools) == {"gpu-pool"}
        api.nodepools = None
        await controller.resync()
        assert set(controller.types.nodepools) == set()
        assert "not listed" not in caplog.text
    finally:
        await controller.stop()
