"""The operator's client (k8s/client.py) against a fake API server on loopback: the requests it sends
(paths, server-side apply with its field manager, merge patches), how it reads answers (pages, watch
streams, Status bodies), and which errors are transient, absent or shown."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from falapp_operator.k8s import client as client_module
from falapp_operator.k8s.client import APPLY, MERGE, PAGE, ApiError, KubeApi, NotLeading
from falapp_operator.k8s.informer import Informer
from falapp_operator.reconcile.writes import DELETE_FIRST, DELETION_COST
from tests.unit.fake_api import FIELD_MANAGER, FakeApiServer, serving

NS = "team-a"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
SERVICES = f"/api/v1/namespaces/{NS}/services"
PODS = f"/api/v1/namespaces/{NS}/pods"
FALAPPS = f"/apis/fal.ai/v1alpha1/namespaces/{NS}/falapps"


@pytest_asyncio.fixture(loop_scope="function")
async def served() -> AsyncIterator[tuple[FakeApiServer, KubeApi]]:
    async with serving() as pair:
        yield pair


def deployment(name: str = "llm-h100", replicas: int = 1) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NS,
                                                                        "labels": {"fal.ai/app": "llm"}},
            "spec": {"replicas": replicas}}


@pytest.mark.parametrize(("create", "force"), [(True, False), (False, True)])
async def test_apply_is_server_side_with_the_field_manager_and_forces_only_objects_it_made(
        served: tuple[FakeApiServer, KubeApi], create: bool, force: bool) -> None:
    fake, api = served
    answer = await api.apply(deployment(), create=create)
    request = fake.requests[-1]
    assert (request.method, request.path, request.content_type) == ("PATCH", f"{DEPLOYMENTS}/llm-h100", APPLY)
    assert request.field_manager == FIELD_MANAGER and request.force is force
    assert request.body == deployment()
    assert answer["metadata"]["resourceVersion"] == fake.objects[f"{DEPLOYMENTS}/llm-h100"]["metadata"][
        "resourceVersion"]
    assert api.writes == 1


async def test_a_service_is_applied_at_its_own_path(served: tuple[FakeApiServer, KubeApi]) -> None:
    fake, api = served
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "llm", "namespace": NS}, "spec": {}}
    await api.apply(body, create=True)
    assert fake.writes() == [f"PATCH {SERVICES}/llm"]
    with pytest.raises(ValueError, match="cannot apply ConfigMap"):
        await api.apply({"kind": "ConfigMap", "metadata": {"name": "x", "namespace": NS}})


async def test_a_read_of_an_absent_object_is_none(served: tuple[FakeApiServer, KubeApi]) -> None:
    fake, api = served
    assert await api.get_service(NS, "llm") is None
    assert await api.get_falapp(NS, "llm") is None
    fake.put(f"{SERVICES}/llm", {"metadata": {"name": "llm", "namespace": NS}})
    assert (await api.get_service(NS, "llm"))["metadata"]["name"] == "llm"
    assert [str(r) for r in fake.requests] == [f"GET {SERVICES}/llm", f"GET {FALAPPS}/llm", f"GET {SERVICES}/llm"]


async def test_a_read_the_api_refuses_is_an_error_with_its_message(served: tuple[FakeApiServer, KubeApi]) -> None:
    fake, api = served
    fake.fail("GET", "/services/llm", 403, 'services "llm" is forbidden: User "op" cannot get resource')
    with pytest.raises(ApiError) as raised:
        await api.get_service(NS, "llm")
    assert raised.value.status == 403 and not raised.value.transient
    assert str(raised.value) == (f'Service {NS}/llm: 403 Forbidden: services "llm" is forbidden: '
                                 'User "op" cannot get resource')


async def test_writes_of_objects_gone_meanwhile_are_not_errors(served: tuple[FakeApiServer, KubeApi]) -> None:
    """The object was deleted between the reconcile's view and its write: nothing is left to do."""
    fake, api = served
    await api.delete_deployment(NS, "gone")
    await api.delete_service(NS, "gone")
    assert await api.mark_pod_for_deletion(NS, "gone") is None
    assert await api.resize_unlisted(NS, "gone", {"spec": {"replicas": 0}}) is None
    assert await api.patch_falapp_status(NS, "gone", {"replicas": 1}) is None
    assert await api.patch_machinetype_status("gone", {"nodes": 1}) is None
    assert len(fake.requests) == 6 and api.writes == 6


async def test_a_write_whose_namespace_is_gone_is_an_error_saying_so(served: tuple[FakeApiServer, KubeApi]) -> None:
    """The API server answers 404 about the namespace, not the object: the object may still be stored
    (a namespace's deletion left it behind), so it is no "gone meanwhile"."""
    fake, api = served
    gone = f'namespaces "{NS}" not found'
    for method, path in (("PATCH", "/pods/p"), ("PATCH", "/deployments/d"), ("PATCH", "/falapps/llm/status")):
        fake.fail(method, path, 404, gone, "NotFound", kind="namespaces")
    writes = (api.mark_pod_for_deletion(NS, "p"), api.resize_unlisted(NS, "d", {"spec": {"replicas": 0}}),
              api.patch_falapp_status(NS, "llm", {"replicas": 1}))
    for write in writes:
        with pytest.raises(ApiError) as raised:
            await write
        assert raised.value.namespace_gone and not raised.value.object_gone and raised.value.message == gone
    fake.fail("PATCH", "/falapps/other/status", 404, 'falapps.fal.ai "other" not found', "NotFound", kind="falapps")
    assert await api.patch_falapp_status(NS, "other", {"replicas": 1}) is None  # about the object: gone


async def test_a_delete_is_in_the_background_and_other_refusals_are_raised(
        served: tuple[FakeApiServer, KubeApi]) -> None:
    fake, api = served
    fake.put(f"{DEPLOYMENTS}/old", deployment("old"))
    await api.delete_deployment(NS, "old")
    assert f"{DEPLOYMENTS}/old" not in fake.objects
    assert fake.requests[-1].query.get("propagationPolicy") == "Background"
    fake.fail("DELETE", "/deployments/other", 403, "deployments.apps \"other\" is forbidden")
    with pytest.raises(ApiError, match="403 Forbidden"):
        await api.delete_deployment(NS, "other")


async def test_a_waiting_pod_or_replicaset_is_deleted_only_as_the_object_of_its_uid(
        served: tuple[FakeApiServer, KubeApi]) -> None:
    """Gone meanwhile (404) or replaced by another of the same name (409: the uid precondition failed) is
    nothing left to do; another refusal is raised."""
    fake, api = served
    fake.put(f"{PODS}/p1", {"metadata": {"name": "p1", "namespace": NS, "uid": "u1"}})
    await api.delete_waiting("Pod", NS, "p1", "u1")
    assert f"{PODS}/p1" not in fake.objects
    assert fake.requests[-1].body == {"preconditions": {"uid": "u1"}, "propagationPolicy": "Background"}
    await api.delete_waiting("ReplicaSet", NS, "gone", "u2")
    assert str(fake.requests[-1]) == f"DELETE /apis/apps/v1/namespaces/{NS}/replicasets/gone"
    fake.fail("DELETE", "/pods/p2", 409, "Precondition failed: UID in precondition: u3, UID in object meta: u4")
    await api.delete_waiting("Pod", NS, "p2", "u3")
    fake.fail("DELETE", "/replicasets/rs", 403, 'replicasets.apps "rs" is forbidden')
    with pytest.raises(ApiError, match="ReplicaSet team-a/rs: 403 Forbidden"):
        await api.delete_waiting("ReplicaSet", NS, "rs", "u5")
    assert api.writes == 4


async def test_merge_patches_mark_pods_resize_and_write_status(served: tuple[FakeApiServer, KubeApi]) -> None:
    fake, api = served
    fake.put(f"{PODS}/p1", {"metadata": {"name": "p1", "namespace": NS, "annotations": {"keep": "me"}}})
    fake.put(f"{DEPLOYMENTS}/old", deployment("old", replicas=3))
    fake.put(f"{FALAPPS}/llm", {"metadata": {"name": "llm", "namespace": NS}, "spec": {"replicas": 2},
                                "status": {"replicas": 1, "readyReplicas": 1}})
    marked = await api.mark_pod_for_deletion(NS, "p1")
    assert marked["metadata"]["annotations"] == {"keep": "me", DELETION_COST: DELETE_FIRST}
    resized = await api.resize_unlisted(NS, "old", {"spec": {"replicas": 1}})
    assert resized["spec"]["replicas"] == 1
    app = await api.patch_falapp_status(NS, "llm", {"replicas": 2})
    assert app["status"] == {"replicas": 2, "readyReplicas": 1} and app["spec"] == {"replicas": 2}
    assert [(str(r), r.content_type, r.field_manager) for r in fake.requests] == [
        (f"PATCH {PODS}/p1", MERGE, FIELD_MANAGER),
        (f"PATCH {DEPLOYMENTS}/old", MERGE, FIELD_MANAGER),
        (f"PATCH {FALAPPS}/llm/status", MERGE, FIELD_MANAGER),
    ]
    assert fake.requests[-1].body == {"status": {"replicas": 2}}


@pytest.mark.parametrize(("status", "reason", "transient"), [
    (409, "Conflict", True),  # someone else's field on an object we create: the retry forces it or reads it anew
    (422, "Invalid", False),
    (429, "TooManyRequests", True),
    (500, "InternalError", True),
    (503, "ServiceUnavailable", True),
    (403, "Forbidden", False),
])
async def test_refused_writes_carry_the_apis_status(served: tuple[FakeApiServer, KubeApi], status: int,
                                                    reason: str, transient: bool) -> None:
    fake, api = served
    message = f"the API's own words for {status}"
    fake.fail("PATCH", "/deployments/llm-h100", status, message)
    with pytest.raises(ApiError) as raised:
        await api.apply(deployment())
    error = raised.value
    assert (error.status, error.reason, error.message, error.transient) == (status, reason, message, transient)
    assert str(error) == f"Deployment {NS}/llm-h100: {status} {reason}: {message}"
    # a scripted answer is used once: the next attempt goes through
    assert (await api.apply(deployment()))["spec"]["replicas"] == 1


async def test_a_server_that_cannot_be_reached_is_a_transient_error() -> None:
    async with serving() as (_, api):
        api.api_client.configuration.host = "http://127.0.0.1:9"  # discard port: nothing listens
        with pytest.raises(ApiError) as raised:
            await api.apply(deployment())
    assert raised.value.status == 0 and raised.value.transient


async def test_no_write_leaves_a_process_that_does_not_lead(served: tuple[FakeApiServer, KubeApi]) -> None:
    fake, api = served
    api.may_write = lambda: False
    with pytest.raises(NotLeading):
        await api.apply(deployment())
    with pytest.raises(NotLeading):
        await api.patch_falapp_status(NS, "llm", {})
    with pytest.raises(NotLeading):
        await api.post_event({"kind": "FalApp", "name": "llm", "namespace": NS}, "Normal", "R", "m")
    assert fake.requests == [] and api.writes == 0


async def test_lists_are_read_page_by_page_with_the_selectors(served: tuple[FakeApiServer, KubeApi]) -> None:
    fake, api = served
    for i in range(5):
        fake.put(f"{PODS}/p{i}", {"metadata": {"name": f"p{i}", "namespace": NS, "labels": {"fal.ai/app": "llm"}}})
    fake.put(f"{PODS}/other", {"metadata": {"name": "other", "namespace": NS, "labels": {"fal.ai/app": "x"}}})
    fake.put("/api/v1/namespaces/team-b/pods/q", {"metadata": {"name": "q", "namespace": "team-b"}})
    seen: list[dict] = []
    version = await api.list_objects("pods", seen.append, NS, label_selector="fal.ai/app=llm", page_size=2)
    assert [p["metadata"]["name"] for p in seen] == [f"p{i}" for i in range(5)] and version == "99"
    lists = [r for r in fake.requests if r.path == PODS]
    assert [r.query.get("continue") for r in lists] == [None, "2", "4"]
    assert all(r.query["limit"] == "2" and r.query["labelSelector"] == "fal.ai/app=llm" for r in lists)
    every: list[dict] = []
    await api.list_objects("pods", every.append)  # all namespaces
    assert len(every) == 7 and fake.requests[-1].path == "/api/v1/pods"
    assert fake.requests[-1].query["limit"] == str(PAGE)


async def test_a_watch_yields_events_and_an_error_event_raises_with_its_code(
        served: tuple[FakeApiServer, KubeApi]) -> None:
    fake, api = served
    pod = {"metadata": {"name": "p", "namespace": NS, "resourceVersion": "101"}}
    fake.watches[PODS] = [[{"type": "ADDED", "object": pod},
                           {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "102"}}}]]
    got = [(kind, body["metadata"]["resourceVersion"]) async for kind, body in api.watch_objects("pods", "100", NS)]
    assert got == [("ADDED", "101"), ("BOOKMARK", "102")]
    request = fake.requests[-1]
    assert request.query["watch"].lower() == "true" and request.query["resourceVersion"] == "100"
    assert request.query["allowWatchBookmarks"].lower() == "true"
    fake.watches[PODS] = [[{"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired",
                                                        "message": "too old resource version: 100 (200)"}}]]
    with pytest.raises(ApiError) as raised:
        async for _ in api.watch_objects("pods", "100", NS):
            pass
    assert raised.value.status == 410 and "too old resource version" in raised.value.message


async def test_a_watch_silent_longer_than_a_bookmark_takes_ends_and_is_watched_again(
        served: tuple[FakeApiServer, KubeApi], monkeypatch: pytest.MonkeyPatch) -> None:
    """The API server sends a bookmark a minute to a watch that asks: a watch silent longer (its connection
    died without a word: a host lost, a load balancer's state lost) ends as the server's timeout would end
    it, and its caller watches again from where it was. (Was: nothing noticed for 330 s: no fallback, no
    scale, no freed room seen meanwhile.)"""
    fake, api = served
    fake.watches[PODS] = [[{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "102"}}}]]
    started = asyncio.get_running_loop().time()
    got = [kind async for kind, _ in api.watch_objects("pods", "100", NS, silence=0.3)]  # the second stays silent
    got += [kind async for kind, _ in api.watch_objects("pods", "102", NS, silence=0.3)]
    assert got == ["BOOKMARK"] and asyncio.get_running_loop().time() - started < 5


async def test_a_watch_that_gets_no_bookmarks_stays_open_through_silence_on_a_connection_kept_alive(
        served: tuple[FakeApiServer, KubeApi], monkeypatch: pytest.MonkeyPatch) -> None:
    """Events are watched straight from etcd (the API server keeps no watch cache for them by default) and
    get no bookmarks: silence there is no sign of a dead connection, and restarting such a watch each time
    only made requests (5 a minute when idle). TCP keepalive on its connection finds a dead peer instead."""
    fake, api = served
    kept_alive: list[tuple[int, int, int, int]] = []
    real_keep_alive = client_module._keep_alive

    def keep_alive(response) -> None:
        real_keep_alive(response)
        sock = response.connection.transport.get_extra_info("socket")
        kept_alive.append((sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                           *(sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, o))
                             for o in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT"))))
    monkeypatch.setattr(client_module, "_keep_alive", keep_alive)
    monkeypatch.setattr(client_module, "WATCH_SILENCE", 0.3)  # (no silence limit but the server's)
    fake.watches[PODS] = []  # the watch stays silent

    async def watch() -> list[str]:
        return [kind async for kind, _ in api.watch_objects("pods", "100", NS, silence=None)]
    with pytest.raises(TimeoutError):  # (a silence limit of 0.3 s ends it at once: the test above)
        await asyncio.wait_for(watch(), 1.0)
    assert kept_alive == [(1, client_module.KEEPALIVE_IDLE, client_module.KEEPALIVE_INTERVAL,
                           client_module.KEEPALIVE_PROBES, 60_000)]


async def test_a_watch_whose_answer_never_starts_ends_as_a_transient_error(
        served: tuple[FakeApiServer, KubeApi]) -> None:
    """A watch without a silence limit still gets the head of its answer within the request timeout (its
    connection may have died before keepalive was set on it)."""
    fake, api = served
    api.request_timeout = 0.3
    fake.slow("GET", PODS, 30)
    with pytest.raises(ApiError) as raised:
        async for _ in api.watch_objects("pods", "100", NS, silence=None):
            pass
    assert raised.value.transient and "no answer within 0.3s" in str(raised.value), raised.value


def test_watches_are_kept_open_5_to_10_minutes_or_30_to_60_without_bookmarks() -> None:
    timeouts = [client_module.watch_timeout(300) for _ in range(200)]
    assert 300 <= min(timeouts) and max(timeouts) < 600 and len(set(timeouts)) > 20  # not all at once
    with_bookmarks, without = Informer(None, "pods", print), Informer(None, "events", print, bookmarks=False)
    assert (with_bookmarks.silence, with_bookmarks.server_timeout) == (client_module.WATCH_SILENCE, 300)
    assert (without.silence, without.server_timeout) == (None, 1800)


async def test_a_watch_the_api_refuses_raises_before_any_event(served: tuple[FakeApiServer, KubeApi]) -> None:
    fake, api = served
    fake.fail("GET", "/api/v1/pods", 403, "pods is forbidden")
    with pytest.raises(ApiError, match="Pods \\(watch\\): 403 Forbidden: pods is forbidden"):
        async for _ in api.watch_objects("pods", "1"):
            pass


async def test_an_event_names_what_it_is_about(served: tuple[FakeApiServer, KubeApi]) -> None:
    fake, api = served
    involved = {"apiVersion": "fal.ai/v1alpha1", "kind": "FalApp", "name": "llm", "namespace": NS, "uid": "u1"}
    await api.post_event(involved, "Warning", "RequestRejected", "x" * 5000)
    request = fake.requests[-1]
    assert str(request) == f"POST /api/v1/namespaces/{NS}/events"
    body = request.body
    assert body["involvedObject"] == involved and body["type"] == "Warning" and body["reason"] == "RequestRejected"
    assert body["message"] == "x" * 1021 + "..." and body["metadata"] == {"generateName": "llm.", "namespace": NS}
    assert body["source"] == {"component": FIELD_MANAGER} and body["firstTimestamp"] == body["lastTimestamp"]


async def test_the_server_clock_reads_the_answers_date(served: tuple[FakeApiServer, KubeApi]) -> None:
    _, api = served
    await api.get_service(NS, "x")  # a 404 carries the Date header too
    assert abs(api.clock.offset) < 2


async def test_an_informer_continues_from_the_last_version_and_lists_again_when_it_expired(
        served: tuple[FakeApiServer, KubeApi]) -> None:
    """Over the wire: each watch starts where the last one stopped (bookmarks included); an expired
    version lists again, and what went meanwhile is reported deleted."""
    fake, api = served
    for name in ("a", "b"):
        fake.put(f"{DEPLOYMENTS}/{name}", deployment(name))
    seen: list[tuple[str, str]] = []
    gone = asyncio.Event()

    def on_event(kind: str, body: dict) -> None:
        seen.append((kind, body["metadata"]["name"]))
        if kind == "DELETED":
            gone.set()
    informer = Informer(api, "deployments", on_event, NS)
    a = fake.objects[f"{DEPLOYMENTS}/a"]
    fake.watches[DEPLOYMENTS] = [
        [{"type": "MODIFIED", "object": {**a, "metadata": {**a["metadata"], "resourceVersion": "120"}}},
         {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "130"}}}],  # the server ends it
        [{"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}}],
    ]
    await informer.sync()
    del fake.objects[f"{DEPLOYMENTS}/b"]  # goes while the watch is away: no event says so
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(gone.wait(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert seen == [("ADDED", "a"), ("ADDED", "b"), ("MODIFIED", "a"), ("ADDED", "a"), ("DELETED", "b")]
    calls = [(r.query.get("watch", "").lower() == "true", r.query.get("resourceVersion")) for r in fake.requests
             if r.path == DEPLOYMENTS]
    assert calls[:5] == [(False, None), (True, "99"), (True, "130"), (False, None), (True, "99")]


async def test_a_request_the_server_never_answers_ends_as_a_transient_error_naming_what_it_was_for(
        served: tuple[FakeApiServer, KubeApi]) -> None:
    """kubernetes_asyncio sets no time limit: a silent connection would hold a reconcile for good."""
    fake, api = served
    api.request_timeout = 0.3
    fake.slow("GET", "/falapps/silent", 30)
    started = asyncio.get_running_loop().time()
    with pytest.raises(ApiError) as raised:
        await api.get_falapp("team-a", "silent")
    assert asyncio.get_running_loop().time() - started < 5, "it waited on the server"
    assert raised.value.transient and "no answer within 0.3s" in str(raised.value), raised.value
    assert "FalApp team-a/silent" in str(raised.value)
    assert await api.get_falapp("team-a", "silent") is None, "the next request goes as usual"


async def test_a_callers_own_limit_on_a_request_wins(served: tuple[FakeApiServer, KubeApi]) -> None:
    """The Lease's requests keep their renew deadline, whatever the limit of the others."""
    fake, api = served
    api.request_timeout = 0.2
    fake.slow("GET", "/falapps/patient", 0.6)
    with pytest.raises(ApiError) as raised:  # absent: answered, after 0.6 s
        await api._call("FalApp team-a/patient", api.custom.get_namespaced_custom_object, "fal.ai", "v1alpha1",
                        "team-a", "falapps", "patient", _request_timeout=5)
    assert raised.value.status == 404, raised.value


async def test_the_client_holds_more_requests_at_once_than_kubernetes_asyncios_pool_of_100(
        served: tuple[FakeApiServer, KubeApi]) -> None:
    """Watches (eight per watched namespace) and the gate's requests share one client: a pool of its own
    would hold urgent writes behind those let through first, and enough namespaces' watches every
    connection (the leader's Lease renewals included). 120 requests the server holds for 10 s must all
    reach it at once."""
    fake, api = served
    fake.slow("GET", "/falapps/held", 10, times=120)
    requests = [asyncio.create_task(api.get_falapp("team-a", "held")) for _ in range(120)]
    try:
        for _ in range(500):
            if len(fake.requests) >= 120:
                break
            await asyncio.sleep(0.01)
        assert len(fake.requests) == 120, f"only {len(fake.requests)} of 120 reached the server at once"
    finally:
        for request in requests:
            request.cancel()
        await asyncio.gather(*requests, return_exceptions=True)
