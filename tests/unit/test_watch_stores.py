"""The stores reconciles read from (k8s/store.py) and what the controller does with them: a watch event
older than the operator's own write does not win, a deleted child does not come back from a stale event,
a write its watch never reports makes the app be read fresh, the slim copies read as the API's objects
do, a settled app is reconciled without a single API read, and a MachineType whose status alone
changed queues nothing."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from falapp_operator.api import DEFAULT_CATALOG, MachineTypeStatus
from falapp_operator.api.names import deployment_name
from falapp_operator.k8s.controller import Controller
from falapp_operator.k8s.store import CONFIRM_DEADLINE, Store
from falapp_operator.placement import Surge
from falapp_operator.reconcile.children import encode_marks
from falapp_operator.reconcile.observe import (
    children_state,
    made_by,
    pod_view,
    slim_child,
    slim_falapp,
    slim_pod,
)
from falapp_operator.reconcile.writes import needs_apply, object_version
from falapp_operator.settings import OperatorSettings
from tests.unit.test_controller_resync import ListingApi, node
from tests.unit.test_observe import NOW

APP = ("team-a", "llm")
H100_DEP, A100_DEP = deployment_name("llm", "gpu-h100"), deployment_name("llm", "gpu-a100")


def deployment(replicas: int, rv: int, uid: str = "d-1", name: str | None = None,
               machine_type: str = "gpu-h100") -> dict:
    return {"metadata": {"name": name or deployment_name("llm", machine_type), "namespace": "team-a", "uid": uid,
                         "resourceVersion": str(rv),
                         "generation": replicas, "labels": {"fal.ai/app": "llm", "fal.ai/machine-type": machine_type},
                         "ownerReferences": [{"apiVersion": "fal.ai/v1alpha1", "kind": "FalApp", "name": "llm",
                                              "uid": "app-1", "controller": True}]},
            "spec": {"replicas": replicas}}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def store(clock: Clock | None = None) -> Store:
    return Store(lambda b: slim_child(b, "falapp-operator"), index_label="fal.ai/app", clock=clock or Clock())


def replicas(s: Store) -> list[int]:
    return [d["spec"]["replicas"] for d in s.of_app("team-a", "llm")]


def test_a_watch_event_older_than_our_write_does_not_win():
    s = store()
    assert s.observe("ADDED", deployment(2, rv=5)) is True
    s.wrote(deployment(3, rv=9), APP)  # the API's answer to our apply
    assert replicas(s) == [3]
    # someone else's change from before our write arrives late: the store keeps ours, but the app is
    # looked at again (our reconcile decided without knowing it)
    assert s.observe("MODIFIED", deployment(7, rv=7)) is True
    assert replicas(s) == [3]
    # our own write coming back is no news
    assert s.observe("MODIFIED", deployment(3, rv=9)) is False
    # a change of a field no reconcile reads (the controller manager's status) is no news either
    later = deployment(3, rv=10)
    later["status"] = {"readyReplicas": 3, "conditions": [{"type": "Available", "status": "True"}]}
    assert s.observe("MODIFIED", later) is False
    assert s.get(("team-a", H100_DEP))["metadata"]["resourceVersion"] == "10"
    later["status"]["conditions"].append({"type": "ReplicaFailure", "status": "True", "message": "quota"})
    later["metadata"]["resourceVersion"] = "11"
    assert s.observe("MODIFIED", later) is True


def test_a_child_we_deleted_does_not_come_back_from_a_stale_event():
    clock = Clock()
    s = store(clock)
    s.observe("ADDED", deployment(2, rv=5))
    s.deleted(("team-a", H100_DEP), APP)
    assert s.of_app("team-a", "llm") == []
    assert s.observe("MODIFIED", deployment(2, rv=6)) is False  # in flight before the delete
    assert s.of_app("team-a", "llm") == []
    assert s.overdue(APP) is False
    clock.now += CONFIRM_DEADLINE + 1
    assert s.overdue(APP) is True, "a deletion the watch never reports must not go unnoticed"
    assert s.observe("DELETED", deployment(2, rv=8)) is False
    assert s.overdue(APP) is False
    # made again under the same name (a new object): it counts
    assert s.observe("ADDED", deployment(1, rv=12, uid="d-2")) is True
    assert replicas(s) == [1]


def test_a_write_the_watch_never_reports_makes_the_app_overdue_until_it_is_read_fresh():
    clock = Clock()
    s = store(clock)
    s.wrote(deployment(3, rv=9), APP)
    assert s.overdue(APP) is False
    clock.now += CONFIRM_DEADLINE + 1
    assert s.overdue(APP) is True and s.overdue(("team-a", "other")) is False
    s.refresh_app(APP, "team-a", [deployment(4, rv=15)])  # a fresh LIST of the app's children
    assert s.overdue(APP) is False and replicas(s) == [4]
    # the watch catching up settles an expectation too
    s.wrote(deployment(5, rv=20), APP)
    s.observe("MODIFIED", deployment(5, rv=21))
    clock.now += CONFIRM_DEADLINE + 1
    assert s.overdue(APP) is False
    # a fresh LIST lacking a child: it is gone
    s.refresh_app(APP, "team-a", [])
    assert s.of_app("team-a", "llm") == []


def test_a_relist_does_not_undo_a_write_made_after_its_snapshot():
    s = store()
    s.wrote(deployment(3, rv=30), APP)
    # the informer re-listed at version 25 (before our write) and reports what its LIST lacks as deleted
    s.observe("DELETED", {"metadata": {"uid": "d-1", "namespace": "team-a", "name": H100_DEP,
                                       "resourceVersion": "25"}})
    assert replicas(s) == [3]


def full_pod() -> dict:
    return {
        "metadata": {"name": "llm-h100-abc-x1", "namespace": "team-a", "uid": "p-1", "resourceVersion": "40",
                     "creationTimestamp": "2025-01-01T11:00:00Z",
                     "labels": {"fal.ai/app": "llm", "fal.ai/machine-type": "gpu-h100", "pod-template-hash": "abc",
                                "team": "a"},
                     "annotations": {"fal.ai/template-hash": "t1", "controller.kubernetes.io/pod-deletion-cost":
                                     "-1000", "cni.example/ip": "10.0.0.1"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "llm-h100-abc",
                                          "uid": "rs-1", "controller": True, "blockOwnerDeletion": True}],
                     "managedFields": [{"manager": "kube-controller-manager", "fieldsV1": {"f:metadata": {}}}]},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "x", "env": [{"name": "A"}]}]},
        "status": {"phase": "Running", "nominatedNodeName": "n1",
                   "conditions": [{"type": "PodScheduled", "status": "True",
                                   "lastTransitionTime": "2025-01-01T11:30:00Z"},
                                  {"type": "Ready", "status": "False", "lastTransitionTime": "2025-01-01T11:31:00Z"},
                                  {"type": "Initialized", "status": "True"}],
                   "containerStatuses": [{"name": "app", "restartCount": 4, "image": "x", "imageID": "sha",
                                          "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "boom"}}}]},
    }


def test_a_move_and_its_cover_on_one_type_are_kept_with_the_longest_type_names():
    """Both marks on one Deployment, each naming a type of 63 characters: read from the slim copy too."""
    origin = "t" * 63
    since = NOW - timedelta(minutes=5)
    marks = [Surge("gpu-h100", origin, since, since), Surge("gpu-h100", origin, since, since, cover=True)]
    dep = deployment(2, rv=5)
    dep["metadata"]["annotations"] = {"fal.ai/surge": encode_marks(marks)}
    dep["metadata"]["ownerReferences"][0]["uid"] = "app-1"
    state = children_state([slim_child(dep, "falapp-operator")], "app-1")
    assert (state.surge, state.cover) == tuple(marks)


def test_slim_copies_read_as_the_whole_objects():
    pod, dep = full_pod(), deployment(2, rv=5)
    dep["metadata"]["annotations"] = {"fal.ai/surge": "", "fal.ai/applied-hash": "h1",
                                      "kubectl.kubernetes.io/last-applied-configuration": "{...}"}
    dep["metadata"]["managedFields"] = [
        {"manager": "falapp-operator", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        {"manager": "kube-controller-manager", "subresource": "status", "fieldsV1": {"f:status": {}}},
        {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:spec": {"f:paused": {}}}}]
    dep["status"] = {"conditions": [{"type": "ReplicaFailure", "status": "True", "message": "exceeded quota"},
                                    {"type": "Available", "status": "True"}]}
    dep["metadata"]["ownerReferences"][0]["uid"] = "app-1"
    pod["metadata"]["ownerReferences"][0]["name"] = f"{H100_DEP}-abc"
    slim_d, slim_p = slim_child(dep, "falapp-operator"), slim_pod(pod)
    assert made_by([slim_p], [slim_d]) == [slim_p] and made_by([pod], [dep]) == [pod]
    assert pod_view(slim_p, False, NOW) == pod_view(pod, False, NOW)
    assert children_state([slim_d], "app-1") == children_state([dep], "app-1")
    desired = {"metadata": {"annotations": {"fal.ai/applied-hash": "h1"}}}
    for applied in (None, object_version(dep)):
        assert needs_apply(slim_d, desired, "falapp-operator", applied) == needs_apply(
            dep, desired, "falapp-operator", applied)
    assert "env" not in str(slim_p) and "last-applied" not in str(slim_d) and "cni.example" not in str(slim_p)
    app = {"metadata": {"name": "llm", "uid": "app-1", "generation": 2, "resourceVersion": "7",
                        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                        "managedFields": [{"manager": "kubectl"}]}, "spec": {"replicas": 1}, "status": {"x": 1}}
    assert slim_falapp(app) == {"metadata": {"name": "llm", "uid": "app-1", "generation": 2, "resourceVersion": "7"},
                                "spec": {"replicas": 1}, "status": {"x": 1}}


BIG = "x" * (250 * 1024)  # annotations may take 256 KiB of an object


def test_the_stores_keep_little_of_what_a_tenant_may_stuff_into_objects():
    """Whoever may create Deployments or pods in a managed namespace may label them as an app's and fill
    their annotations: the stores keep a few hundred bytes of each, however many there are. (Was: every
    annotation the operator reads was kept whole: a thousand such objects held 250 MB, past the chart's
    memory limit, and the operator crash-looped for every tenant.)"""
    squatter = deployment(0, rv=5, name="junk-1")
    squatter["metadata"]["ownerReferences"] = []
    squatter["metadata"]["annotations"] = {"fal.ai/recorded-moves": BIG, "fal.ai/applied-hash": BIG}
    pod = full_pod()
    pod["metadata"]["annotations"] = {"fal.ai/template-hash": BIG, "controller.kubernetes.io/pod-deletion-cost": BIG}
    owned = deployment(2, rv=6)
    owned["metadata"]["annotations"] = {"fal.ai/applied-hash": BIG, "fal.ai/surge": "1",
                                        "fal.ai/recorded-moves": '{"attempts": []}'}
    # one that names its own FalApp as controller (no extra right needed) under another name than the
    # operator gives: as a squatter (was: kept whole, 192 KiB of moves and any managedFields)
    disguised = deployment(0, rv=7, name="junk-2")
    disguised["metadata"]["annotations"] = {"fal.ai/recorded-moves": "x" * (190 * 1024)}
    # the operator's own Deployment, with another manager's fields: only whether one is outside what others
    # may set is kept (was: every entry whole)
    owned["metadata"]["managedFields"] = [
        {"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:metadata": {"f:labels": {
            f"f:team.example.com/label-{i}": {} for i in range(5000)}}, "f:spec": {"f:paused": {}}}}]
    # its FalApp named as controller, but of another API (the garbage collector would never delete it), or
    # under a type the catalogue does not know, or a Service: no move's record is kept
    bogus_api = deployment(0, rv=8)
    bogus_api["metadata"]["ownerReferences"][0]["apiVersion"] = "bogus.example/v1"
    unknown_type = deployment(0, rv=9, machine_type="gpu-nope-1")
    service = {"metadata": {**deployment(0, rv=10)["metadata"], "name": "llm"}}
    for body in (bogus_api, unknown_type, service):
        body["metadata"]["annotations"] = {"fal.ai/recorded-moves": "x" * (190 * 1024)}
    known = {"gpu-h100", "gpu-a100"}.__contains__
    for slim in (slim_child(squatter, "falapp-operator"), slim_pod(pod), slim_child(owned, "falapp-operator"),
                 slim_child(disguised, "falapp-operator"), slim_child(bogus_api, "falapp-operator"),
                 slim_child(unknown_type, "falapp-operator", known_type=known),
                 slim_child(service, "falapp-operator", "Service")):
        assert len(str(slim)) < 4096, slim
    assert slim_child(owned, "falapp-operator")["metadata"]["managedFields"] == [
        {"manager": "kubectl", "fieldsV1": {"f:spec": {"f:paused": {}}}}]
    # what the reconcile reads of them is still there: the squatter's name and owner (a name conflict), the
    # owned Deployment's short annotations
    assert slim_child(squatter, "falapp-operator")["metadata"]["name"] == "junk-1"
    assert slim_child(owned, "falapp-operator")["metadata"]["annotations"] == {
        "fal.ai/surge": "1", "fal.ai/recorded-moves": '{"attempts": []}'}


class ClusterApi(ListingApi):
    """The reads and writes one reconcile makes, on objects kept here; counts reads."""

    def __init__(self) -> None:
        super().__init__([node("n1")], [], namespaces=[{"metadata": {"name": "team-a"}}])
        self.rv = itertools.count(100)
        self.reads: list[str] = []
        self.writes: list[str] = []
        self.objects: dict[tuple[str, str], dict] = {}

    def _stamp(self, body: dict) -> dict:
        body = copy.deepcopy(body)
        meta = body["metadata"]
        old = self.objects.get((body["kind"], meta["name"]))
        meta.setdefault("uid", old["metadata"]["uid"] if old else f"uid-{meta['name']}")
        meta["resourceVersion"] = str(next(self.rv))
        meta["generation"] = (old["metadata"].get("generation", 0) if old else 0) + 1
        self.objects[(body["kind"], meta["name"])] = body
        return copy.deepcopy(body)

    async def get_falapp(self, namespace, name):
        self.reads.append("get_falapp")
        return copy.deepcopy(self.objects.get(("FalApp", name)))

    async def get_deployment(self, namespace, name):
        self.reads.append("get_deployment")
        return copy.deepcopy(self.objects.get(("Deployment", name)))

    async def get_service(self, namespace, name):
        self.reads.append("get_service")
        return copy.deepcopy(self.objects.get(("Service", name)))

    async def list_objects(self, resource, each, namespace=None, label_selector=None, field_selector=None, read=None):
        if read:
            self.reads.append(read)
        if resource in ("machinetypes", "nodes", "namespaces"):
            return await super().list_objects(resource, each)
        kind = {"deployments": "Deployment", "pods": "Pod", "falapps": "FalApp", "services": "Service"}.get(resource)
        for (k, _), body in list(self.objects.items()):
            if k == kind:
                each(copy.deepcopy(body))
        return str(next(self.rv))

    async def apply(self, body, create=False):
        self.writes.append(f"apply {body['kind']}")
        return self._stamp(body)

    async def patch_falapp_status(self, namespace, name, status):
        self.writes.append("status")
        app = self.objects[("FalApp", name)]
        app["status"] = {**app.get("status", {}), **copy.deepcopy(status)}
        app["metadata"]["resourceVersion"] = str(next(self.rv))
        return copy.deepcopy(app)

    async def post_event(self, *args):
        pass


def falapp() -> dict:
    return {"apiVersion": "fal.ai/v1alpha1", "kind": "FalApp",
            "metadata": {"name": "llm", "namespace": "team-a", "uid": "app-1", "generation": 1,
                         "resourceVersion": "1"},
            "spec": {"image": "registry.example.com/llm:1", "replicas": 1, "machineTypes": ["GPU-H100"],
                     "numGpus": 1}}


@pytest.fixture
async def controller():
    api = ClusterApi()
    api.objects[("FalApp", "llm")] = falapp()
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    yield controller
    await controller.stop()


async def drain(controller: Controller) -> None:
    while len(controller.queue):
        controller.queue.done(await controller.queue.get())


def echo(controller: Controller) -> None:
    """The watches report what the API holds now (the operator's own writes coming back)."""
    for (kind, _), body in controller.api.objects.items():
        watched = {"FalApp": controller.falapp_watched,
                   "Deployment": lambda k, b: controller.child_watched(controller.deployments, k, b)}[kind]
        watched("MODIFIED", copy.deepcopy(body))


async def test_a_settled_app_is_reconciled_without_api_reads(controller: Controller):
    api: ClusterApi = controller.api
    assert ("team-a", "llm") in controller.falapps.objects, "the FalApp was not listed at start"
    await controller.reconcile_app("team-a", "llm")
    # whether the child's name is free is known from the store of every Deployment of the namespace
    assert api.reads == [] and api.writes == ["apply Deployment", "status"]
    api.writes.clear()
    # before the watch reports our writes, the next reconcile already sees them: nothing to do again
    await controller.reconcile_app("team-a", "llm")
    assert api.reads == [] and api.writes == []
    await drain(controller)
    echo(controller)
    assert len(controller.queue) == 0, "our own writes coming back queued the app"
    await controller.reconcile_app("team-a", "llm")
    assert api.reads == [] and api.writes == []


@contextlib.asynccontextmanager
async def started_where_no_namespace_was_listed() -> AsyncIterator[tuple[Controller, ClusterApi]]:
    """A controller started with the app "llm" of team-a listed, its namespace not."""
    api = ClusterApi()
    api.namespaces = []
    api.objects[("FalApp", "llm")] = falapp()
    controller = Controller(api, OperatorSettings(workers=1, resync_period=0, metrics_port=0))
    await controller.start()
    try:
        yield controller, api
    finally:
        await controller.stop()


async def test_an_app_listed_at_start_in_a_namespace_not_listed_is_left_alone_though_nothing_is_written():
    """Left behind by its namespace's deletion while no operator ran, placed before that: it may have
    nothing to write, so no write would tell; its namespace, absent from the LIST, is read."""
    async with started_where_no_namespace_was_listed() as (controller, api):
        await controller.reconcile_app("team-a", "llm")
        assert controller.namespaces.orphans == {("team-a", "llm"): "app-1"} and api.writes == []


async def test_a_namespace_missing_from_a_list_is_read_once_there_its_apps_go_on():
    """Created after the LIST, its event still to come: one read says it is there; its apps are placed."""
    async with started_where_no_namespace_was_listed() as (controller, api):
        api.namespaces = [{"metadata": {"name": "team-a"}}]
        await controller.reconcile_app("team-a", "llm")
        assert api.writes == ["apply Deployment", "status"] and not controller.namespaces.orphans
        assert controller.namespaces.gone == set()  # read no more


async def test_a_namespace_a_read_finds_being_deleted_leaves_its_app_alone():
    async with started_where_no_namespace_was_listed() as (controller, api):
        api.namespaces = [{"metadata": {"name": "team-a", "deletionTimestamp": "2026-01-01T00:00:00Z"}}]
        await controller.reconcile_app("team-a", "llm")
        assert api.writes == [] and not controller.namespaces.orphans and controller.namespaces.gone == {"team-a"}


async def test_a_resync_finds_an_app_whose_namespace_it_never_saw_and_that_has_nothing_to_write(
        controller: Controller):
    api: ClusterApi = controller.api
    other = falapp()
    other["metadata"].update(namespace="team-z", name="other", uid="app-z")
    api.objects[("FalApp", "other")] = other
    controller.falapp_watched("ADDED", copy.deepcopy(other))  # its namespace's events never came
    await controller.reconcile_app("team-z", "other")
    await drain(controller)
    echo(controller)
    await drain(controller)
    await controller.reconcile_app("team-z", "other")
    writes = list(api.writes)
    await controller.resync()  # the LIST has no team-z
    assert ("app", "team-z", "other") in controller.queue._queued
    await controller.reconcile_app("team-z", "other")
    assert controller.namespaces.orphans == {("team-z", "other"): "app-z"} and api.writes == writes


async def test_a_name_held_by_another_object_is_known_without_a_read(controller: Controller):
    from falapp_operator.api.names import deployment_name
    api: ClusterApi = controller.api
    name = deployment_name("llm", "gpu-h100")
    squatter = {"metadata": {"name": name, "namespace": "team-a", "uid": "other", "resourceVersion": "3",
                             "labels": {"team": "b"}, "annotations": {"note": "x" * 1000},
                             "ownerReferences": [{"kind": "ReplicaSet", "name": "x", "uid": "rs", "controller": True}]},
                "spec": {"replicas": 5, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    controller.child_watched(controller.deployments, "ADDED", squatter)
    held = controller.deployments.get(("team-a", name))
    assert "spec" not in held and "annotations" not in held["metadata"], "another's object kept whole"
    await controller.reconcile_app("team-a", "llm")
    assert api.reads == [] and api.writes == ["status"]
    app = controller.falapps.get(("team-a", "llm"))
    stalled = next(c for c in app["status"]["conditions"] if c["type"] == "Stalled")
    assert stalled["reason"] == "NameConflict" and f"Deployment team-a/{name} already exists" in stalled["message"]


async def test_an_app_whose_write_never_comes_back_is_read_fresh(controller: Controller, monkeypatch):
    api: ClusterApi = controller.api
    await controller.reconcile_app("team-a", "llm")
    api.reads.clear()
    clock = Clock()
    clock.now = asyncio.get_running_loop().time() + CONFIRM_DEADLINE + 1
    for s in (controller.falapps, controller.deployments, controller.services, controller.app_pods):
        monkeypatch.setattr(s, "clock", clock)
    await controller.reconcile_app("team-a", "llm")
    assert api.reads == ["get_falapp", "get_service", "list_app_deployments", "list_app_pods"]
    api.reads.clear()
    await controller.reconcile_app("team-a", "llm")  # read once: settled again
    assert api.reads == []


async def test_a_write_without_an_answer_makes_the_next_reconcile_read_fresh(controller: Controller):
    from falapp_operator.k8s.client import ApiError
    api: ClusterApi = controller.api

    async def lost(*args, **kwargs):
        raise ApiError(0, "ServerDisconnectedError", "no answer")
    original, api.apply = api.apply, lost
    with pytest.raises(ApiError):
        await controller.reconcile_app("team-a", "llm")
    api.apply = original
    api.reads.clear()
    await controller.reconcile_app("team-a", "llm")
    assert api.reads[:4] == ["get_falapp", "get_service", "list_app_deployments", "list_app_pods"]


async def test_a_machinetype_whose_status_alone_changed_queues_nothing(controller: Controller):
    controller.apps |= {("team-a", "llm"), ("team-b", "sdxl")}
    h100 = controller.types.declared["gpu-h100"].model_dump(by_alias=True, exclude_none=True, mode="json")
    h100["metadata"].update(generation=1, resourceVersion="50")
    controller.machinetype_event(h100, deleted=False)
    await drain(controller)
    controller.cache.nodes_of_type(controller.types.declared["gpu-h100"])
    matched = dict(controller.cache._matches)
    catalogue = controller.types.placement()
    # our own status write coming back
    written = {"metadata": {"resourceVersion": "51"}}
    controller.types.status_written("gpu-h100", MachineTypeStatus(nodes=1), written)
    echoed = {**h100, "metadata": {**h100["metadata"], "resourceVersion": "51"}, "status": {"nodes": 1}}
    controller.machinetype_event(echoed, deleted=False)
    older = {**h100, "metadata": {**h100["metadata"], "resourceVersion": "50"}, "status": {"nodes": 4}}
    controller.machinetype_event(older, deleted=False)  # an event from before our write, late
    assert controller.types.status["gpu-h100"] == MachineTypeStatus(nodes=1), "an event older than our write was taken"
    # someone else's status write
    other = {**echoed, "metadata": {**h100["metadata"], "resourceVersion": "52"}, "status": {"nodes": 7}}
    controller.machinetype_event(other, deleted=False)
    assert len(controller.queue) == 0, "a status change queued apps"
    assert controller.cache._matches == matched, "the capacity view's node matches were cleared"
    assert controller.types.placement() is catalogue, "the placement catalogue was built again"
    assert controller.types.status["gpu-h100"] == MachineTypeStatus(nodes=7), \
        "another writer's status is not corrected"
    # a spec change does queue every app
    changed = copy.deepcopy(other)
    changed["metadata"].update(generation=2, resourceVersion="53")
    changed["spec"]["displayName"] = "H100 80GB"
    controller.machinetype_event(changed, deleted=False)
    assert len(controller.queue) == 2


def test_the_default_catalogue_has_the_type_the_tests_use():
    assert any(m.metadata.name == "gpu-h100" for m in DEFAULT_CATALOG)


def test_a_write_that_changed_nothing_is_not_awaited_on_the_watch():
    clock = Clock()
    s = store(clock)
    s.observe("ADDED", deployment(3, rv=9))
    s.wrote(deployment(3, rv=9), APP)  # an apply that changed nothing answers with the version held
    clock.now += CONFIRM_DEADLINE + 1
    assert s.overdue(APP) is False, "no watch event ever reports a write that changed nothing"


async def test_an_expired_watch_lists_again_and_reports_what_went_meanwhile():
    from falapp_operator.k8s.client import ApiError
    from falapp_operator.k8s.informer import Informer

    class Api:
        def __init__(self) -> None:
            self.items = [deployment(2, rv=5), deployment(1, rv=6, uid="d-2", machine_type="gpu-a100")]
            self.watches = 0

        async def list_objects(self, resource, each, *args):
            for item in self.items:
                each(copy.deepcopy(item))
            return "10"

        async def watch_objects(self, resource, version, *args, **kwargs):
            self.watches += 1
            if self.watches == 1:
                yield "MODIFIED", deployment(3, rv=11)
                raise ApiError(410, "Expired", "too old resource version")
            await asyncio.Event().wait()
            yield

    api, seen = Api(), []
    informer = Informer(api, "deployments", lambda kind, body: seen.append((kind, body["metadata"]["name"])))
    await informer.sync()
    assert seen == [("ADDED", H100_DEP), ("ADDED", A100_DEP)]
    api.items = api.items[:1]  # llm-a100 goes while the watch is away: no event ever says so
    task = asyncio.create_task(informer.run())
    try:
        for _ in range(100):
            if ("DELETED", A100_DEP) in seen:
                break
            await asyncio.sleep(0.01)
        assert seen[2:] == [("MODIFIED", H100_DEP), ("ADDED", H100_DEP), ("DELETED", A100_DEP)]
        assert api.watches == 2 and informer.version == "10"
    finally:
        task.cancel()


async def test_an_app_in_a_namespace_being_deleted_is_left_alone(controller: Controller):
    api: ClusterApi = controller.api
    controller.namespace_event({"metadata": {"name": "team-a", "deletionTimestamp": "2026-01-01T00:00:00Z"}},
                               deleted=False)
    await controller.reconcile_app("team-a", "llm")
    assert api.writes == [], "wrote into a namespace being deleted (its events cannot even be posted)"
    controller.namespace_event({"metadata": {"name": "team-a"}}, deleted=False)  # (not really: a test)
    await controller.reconcile_app("team-a", "llm")
    assert api.writes == ["apply Deployment", "status"]


def test_a_relist_does_not_drop_an_object_made_again_under_the_same_name():
    # the FalApp (or a Deployment) was deleted and made again while the watch was away: the new LIST
    # holds the new object, and the old one (another uid) is reported deleted at the LIST's version
    s = store()
    s.observe("ADDED", deployment(2, rv=5, uid="d-1"))
    s.observe("ADDED", deployment(1, rv=20, uid="d-2"))  # listed again
    s.observe("DELETED", {"metadata": {"uid": "d-1", "namespace": "team-a", "name": H100_DEP,
                                       "resourceVersion": "25"}})
    assert replicas(s) == [1], "the object made again was dropped with the old one"
    assert s.key_of_uid("d-2") == ("team-a", H100_DEP)


def test_a_fresh_list_keeps_what_the_watch_reported_after_its_snapshot():
    s = store()
    s.observe("ADDED", deployment(2, rv=5))
    # while the fresh LIST (snapshot at version 40) is on its way, the watch reports a new child
    s.observe("ADDED", deployment(1, rv=45, uid="d-2", machine_type="gpu-a100"))
    s.refresh_app(APP, "team-a", [deployment(2, rv=5)], list_version="40")
    assert [d["metadata"]["name"] for d in s.of_app("team-a", "llm")] == [A100_DEP, H100_DEP], \
        "a child made after the LIST's snapshot was dropped"
    # one the LIST should have had is gone
    s.refresh_app(APP, "team-a", [deployment(2, rv=5)], list_version="50")
    assert [d["metadata"]["name"] for d in s.of_app("team-a", "llm")] == [H100_DEP]


async def test_a_watch_whose_handler_fails_keeps_watching(caplog):
    from falapp_operator.k8s.informer import Informer

    class Api:
        def __init__(self) -> None:
            self.lists = 0

        async def list_objects(self, resource, each, *args):
            self.lists += 1
            each(deployment(2, rv=5))
            return "10"

        async def watch_objects(self, resource, version, *args, **kwargs):
            yield "MODIFIED", deployment(3, rv=11 + self.lists)
            await asyncio.Event().wait()

    seen: list[int] = []

    def on_event(kind: str, body: dict) -> None:
        seen.append(int(body["metadata"]["resourceVersion"]))
        if len(seen) == 2:
            raise KeyError("a body the handler did not expect")

    api = Api()
    informer = Informer(api, "deployments", on_event)
    await informer.sync()
    task = asyncio.create_task(informer.run())
    try:
        for _ in range(300):
            if len(seen) >= 4 or task.done():
                break
            await asyncio.sleep(0.01)
        assert not task.done(), "the watch ended for good on an unexpected error"
        assert seen == [5, 12, 5, 13] and api.lists == 2, seen  # listed again: the failed event is not lost
        assert "watch of deployments failed" in caplog.text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_informers_back_off_grows_with_its_handlers_failures_and_resets_when_its_stream_answers(
        monkeypatch: pytest.MonkeyPatch):
    """A handler failing on every event backs off further each time, though the stream answers each time
    (was: reset by every event, 0.5 s each time); a stream failing now and then, answering with bookmarks
    only in between (a quiet watch), waits the first back-off each time, not one grown over days."""
    from falapp_operator.k8s import informer as informer_module
    from falapp_operator.k8s.client import ApiError
    from falapp_operator.k8s.informer import Informer
    from tests.unit.test_controller_writes import wait_for

    attempts: list[int] = []
    monkeypatch.setattr(informer_module, "backoff", lambda n, cap: attempts.append(n) or 0.0)
    bookmark = {"metadata": {"resourceVersion": "11"}}

    class Api:
        def __init__(self, script: list[str]) -> None:
            self.script = script  # per watch: "event" (one event, then the stream goes on), "bookmark-fail"

        async def list_objects(self, resource, each, *args):
            return "10"

        async def watch_objects(self, resource, version, *args, **kwargs):
            if not self.script:
                await asyncio.Event().wait()
            step = self.script.pop(0)
            if step == "event":
                yield "MODIFIED", deployment(3, rv=12)
                await asyncio.Event().wait()
            yield "BOOKMARK", bookmark
            raise ApiError(0, "ClientConnectorError", "connection reset")

    def failing(kind: str, body: dict) -> None:
        raise KeyError("a body the handler did not expect")

    async def attempts_of(informer: Informer) -> list[int]:
        attempts.clear()
        task = asyncio.create_task(informer.run())
        try:
            await wait_for(lambda: len(attempts) == 3)
        finally:
            task.cancel()
        return list(attempts)

    assert await attempts_of(Informer(Api(["event"] * 3), "deployments", failing, track_deletions=False)) == [1, 2, 3]
    quiet = Informer(Api(["bookmark-fail"] * 3), "deployments", lambda kind, body: None)
    quiet.version = "10"
    assert await attempts_of(quiet) == [1, 1, 1]
