"""The Kubernetes layer's own logic without a cluster: answers checked, the server's clock, the work
queue's back-off, drift on children, the surge mark."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from kubernetes_asyncio.client import ApiClient

from falapp_operator.api.names import HASH_ANNOTATION
from falapp_operator.k8s.client import ApiError, KubeApi, ServerClock, _answer
from falapp_operator.k8s.workqueue import WorkQueue
from falapp_operator.placement import Surge
from falapp_operator.reconcile.children import decode_marks, encode_marks
from falapp_operator.reconcile.writes import needs_apply


class Response:
    """What kubernetes_asyncio returns with _preload_content=False: an unchecked aiohttp response."""

    def __init__(self, status: int, body: dict | bytes, date: datetime | None = None):
        self.status = status
        self.reason = "Whatever"
        self._body = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.headers = {"Date": format_datetime(date, usegmt=True)} if date else {}
        self.released = False

    async def read(self) -> bytes:
        return self._body

    def release(self) -> None:
        self.released = True


async def answer(response: Response, clock: ServerClock | None = None):
    async def call():
        return response
    return await _answer(call(), "Deployment ns/app", clock)


@pytest.mark.parametrize(("status", "transient"), [(400, False), (403, False), (404, False), (409, True),
                                                   (422, False), (429, True), (500, True), (503, True)])
async def test_error_status_raises_with_the_apis_message(status: int, transient: bool):
    response = Response(status, {"kind": "Status", "reason": "Forbidden", "message": "exceeded quota: q"})
    with pytest.raises(ApiError) as raised:
        await answer(response)
    assert raised.value.status == status and raised.value.transient is transient
    assert str(raised.value) == f"Deployment ns/app: {status} Forbidden: exceeded quota: q"
    assert response.released


async def test_success_parses_the_body():
    assert await answer(Response(200, {"items": []})) == {"items": []}
    assert await answer(Response(200, b"")) is None


async def test_a_list_answered_without_a_body_is_a_transient_error():
    api = KubeApi(ApiClient(), "falapp-operator")
    try:
        async def list_node(*args: object, **kwargs: object) -> Response:
            return Response(200, b"")
        api.core.list_node = list_node
        with pytest.raises(ApiError, match="Nodes: 0 EmptyAnswer") as raised:
            await api.list_objects("nodes", print)
        assert raised.value.transient
    finally:
        await api.close()


async def test_error_body_that_is_not_json_is_kept_as_text():
    with pytest.raises(ApiError, match="upstream connect error"):
        await answer(Response(502, b"upstream connect error"))


async def test_server_clock_follows_the_date_header():
    clock = ServerClock()
    ahead = datetime.now(UTC) + timedelta(minutes=5)
    for _ in range(3):
        await answer(Response(200, {}, date=ahead), clock)
    assert abs((clock.now() - (datetime.now(UTC) + timedelta(minutes=5))).total_seconds()) < 2


def test_server_clock_is_known_to_a_round_trip_though_the_date_header_has_whole_seconds():
    import random
    from email.utils import formatdate
    rng = random.Random(7)
    for true_offset in (0.0, 0.3, -0.8, 123.45):
        clock = ServerClock()
        local = 1_800_000_000.0 + rng.random()
        for _ in range(40):  # answers at random moments, each a 5 ms round trip
            local += rng.random() * 0.3
            header = formatdate(local + true_offset + 0.0025, usegmt=True)  # whole seconds
            clock.observe(header, sent=local, received=local + 0.005)
        assert abs(clock.offset - true_offset) < 0.05, (true_offset, clock.offset)
    # the local clock is stepped by a minute: the old answers no longer fit, the new ones rule
    for _ in range(40):
        local += rng.random() * 0.3
        clock.observe(formatdate(local + 123.45 - 60 + 0.0025, usegmt=True), sent=local, received=local + 0.005)
    assert abs(clock.offset - (123.45 - 60)) < 0.05, clock.offset


def test_a_burst_of_answers_within_one_second_leaves_the_offset_as_known():
    """Many apps falling back at once: hundreds of answers within one server second, slow under load.
    They must not push out what the answers before them said (each of them alone allows any offset
    over a second): every timeout would move with the error."""
    from email.utils import formatdate
    for true_offset in (0.0, 0.4, -0.7):
        clock = ServerClock()
        local = 1_800_000_000.0
        for _ in range(200):  # a minute of answers at every phase of the second, 5 ms round trips
            local += 0.37
            clock.observe(formatdate(local + true_offset + 0.0025, usegmt=True), sent=local, received=local + 0.005)
        burst = float(int(local + true_offset) + 1) - true_offset + 0.02  # just past a server second's edge
        for i in range(500):  # within 0.2 s, each answered in 50 ms
            sent = burst + i * 0.0004
            clock.observe(formatdate(sent + true_offset + 0.01, usegmt=True), sent=sent, received=sent + 0.05)
        assert abs(clock.offset - true_offset) < 0.05, (true_offset, clock.offset)


def test_the_offset_follows_clocks_drifting_apart():
    """Answers that no longer fit the newest one go, and only those: starting over from one answer
    would leave the offset open over a whole second each time the drift outgrew the intersection."""
    from email.utils import formatdate
    clock = ServerClock()
    local = 1_800_000_000.0
    errors = []
    for i in range(9730):  # an hour, an answer every 0.37 s; the clocks drift 0.3 s apart meanwhile
        local += 0.37
        true_offset = 0.3 * i / 9730
        clock.observe(formatdate(local + true_offset + 0.0025, usegmt=True), sent=local, received=local + 0.005)
        if i >= 100:  # after the first half minute
            errors.append(abs(clock.offset - true_offset))
    assert max(errors) < 0.05, max(errors)


def _answers(clock: ServerClock, local: float, count: int, every: float, offset: float,
             round_trip: float = 0.005) -> float:
    """`count` answers `every` seconds from `local`, the server `offset` ahead; the last local time."""
    from email.utils import formatdate
    for _ in range(count):
        local += every
        clock.observe(formatdate(local + offset + round_trip / 2, usegmt=True), sent=local,
                      received=local + round_trip)
    return local


def test_a_burst_after_a_quiet_hour_rests_on_the_answers_before_it():
    """The operator sends nothing while all is well: the answers of an hour ago still bound the offset
    (loosened by the drift allowed), and a burst within one second does not open it to half a second."""
    from email.utils import formatdate
    for true_offset in (0.0, 0.4, -0.7):
        clock = ServerClock()
        local = _answers(clock, 1_800_000_000.0, 200, 0.37, true_offset)
        burst = float(int(local + 3600 + true_offset) + 1) - true_offset + 0.02  # an hour later, past an edge
        for i in range(500):
            sent = burst + i * 0.0004
            clock.observe(formatdate(sent + true_offset + 0.01, usegmt=True), sent=sent, received=sent + 0.05)
        assert abs(clock.offset - true_offset) < 0.1, (true_offset, clock.offset)


def test_api_servers_whose_clocks_differ_a_little_keep_the_offset_between_them():
    """Several API servers behind one address, clocks 50 ms apart: an answer of one contradicts bounds
    from the other; what goes is only what it contradicts, never all but one answer."""
    clock = ServerClock()
    local, errors = 1_800_000_000.0, []
    for i in range(4000):
        skew = 0.025 if i % 2 else -0.025
        local = _answers(clock, local, 1, 0.05 + (i % 7) * 0.013, skew)
        if i >= 200:
            errors.append(abs(clock.offset))
    assert max(errors) < 0.05, max(errors)


def test_the_server_clock_stepped_forward_is_followed():
    clock = ServerClock()
    local = _answers(clock, 1_800_000_000.0, 100, 0.37, 0.0)
    _answers(clock, local, 40, 0.37, 2.0)
    assert abs(clock.offset - 2.0) < 0.05, clock.offset


@pytest.mark.parametrize("status", [429, 502])
async def test_a_proxys_error_page_does_not_set_the_clock_and_the_api_servers_own_error_does(status: int):
    clock = ServerClock()
    _answers(clock, time.time() - 40, 100, 0.37, 0.0)
    before = clock.offset
    ahead = datetime.now(UTC) + timedelta(seconds=3)
    with pytest.raises(ApiError):
        await answer(Response(status, b"<html>too many requests</html>", date=ahead), clock)
    assert clock.offset == before
    with pytest.raises(ApiError):
        await answer(Response(status, {"kind": "Status", "reason": "TooManyRequests", "message": "slow down"},
                              date=ahead), clock)
    assert clock.offset > before + 1


def test_an_answer_received_before_it_was_sent_bounds_nothing():
    """The local clock stepped back while the request was out."""
    from email.utils import formatdate
    clock = ServerClock()
    _answers(clock, 1_800_000_000.0, 100, 0.37, 0.0)
    before = clock.offset
    clock.observe(formatdate(1_800_000_100.0, usegmt=True), sent=1_800_000_100.0, received=1_800_000_095.0)
    assert clock.offset == before


async def test_a_key_whose_delay_ran_out_goes_before_keys_queued_by_events():
    queue = WorkQueue()
    for name in ("a", "b", "c"):
        queue.add(("app", "ns", name))
    queue.add_after(("app", "ns", "due"), 0.01)
    await asyncio.sleep(0.05)
    got = [await queue.get() for _ in range(4)]
    assert got == [("app", "ns", "due"), ("app", "ns", "a"), ("app", "ns", "b"), ("app", "ns", "c")]
    for key in got:
        queue.done(key)
    assert len(queue) == 0


async def test_failed_key_waits_out_its_backoff_despite_events():
    queue = WorkQueue()
    key = ("app", "ns", "a")
    queue.add(key)
    assert await queue.get() == key
    queue.retry_after(key, 0.3)
    queue.done(key)
    for _ in range(5):  # watch events for the app keep coming
        queue.add(key)
        queue.add_after(key, 0)
    assert len(queue) == 0
    got = await asyncio.wait_for(queue.get(), 2)
    assert got == key
    queue.done(key)
    queue.close()


async def test_urgent_add_cuts_the_backoff_short():
    queue = WorkQueue()
    key = ("app", "ns", "a")
    queue.add(key)
    await queue.get()
    queue.retry_after(key, 60)
    queue.done(key)
    queue.add(key, urgent=True)  # the user changed the spec
    assert await asyncio.wait_for(queue.get(), 1) == key
    queue.close()


def child(managers: list[dict]) -> dict:
    return {"metadata": {"annotations": {HASH_ANNOTATION: "h"}, "managedFields": managers}}


DESIRED = {"metadata": {"annotations": {HASH_ANNOTATION: "h"}}}


@pytest.mark.parametrize(("manager", "fields", "drift"), [
    # kubectl rollout restart: an annotation on the pod template, not a field we set
    ("kubectl-rollout", {"f:spec": {"f:template": {"f:metadata": {"f:annotations": {
        "f:kubectl.kubernetes.io/restartedAt": {}}}}}}, False),
    ("argocd", {"f:metadata": {"f:labels": {"f:team": {}}}}, False),
    ("kubectl", {"f:spec": {"f:replicas": {}}}, True),  # kubectl scale
    ("kubectl-edit", {"f:spec": {"f:template": {"f:spec": {"f:containers": {
        'k:{"name":"app"}': {"f:image": {}}}}}}}, True),
])
def test_drift_is_a_foreign_change_to_a_field_we_set(manager: str, fields: dict, drift: bool):
    ours = {"manager": "falapp-operator", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    theirs = {"manager": manager, "operation": "Update", "fieldsV1": fields}
    assert needs_apply(child([ours, theirs]), DESIRED, "falapp-operator") is drift


def test_changed_desired_object_is_applied():
    assert needs_apply(child([]), {"metadata": {"annotations": {HASH_ANNOTATION: "other"}}}, "falapp-operator")


SURGE = Surge("t", "u", datetime(2026, 1, 1, tzinfo=UTC))
COVER = Surge("t", "u", datetime(2026, 1, 1, tzinfo=UTC), ready_at=datetime(2026, 1, 1, 0, 1, tzinfo=UTC), cover=True)


@pytest.mark.parametrize(("value", "want"), [
    ("", []), ("0", []), ("1", [Surge("t")]), ("true", []), ("garbage", []), ("[1]", []),
    (encode_marks([SURGE]), [SURGE]), ('{"from": "u", "since": "not a time"}', [Surge("t", "u", None)]),
    (encode_marks([COVER]), [COVER]), ('{"from": "u", "cover": "yes"}', [Surge("t", "u")]),
    (encode_marks([SURGE, COVER]), [SURGE, COVER]), (encode_marks([SURGE, SURGE, COVER, COVER]), [SURGE, COVER]),
])
def test_surge_mark_round_trip_and_old_forms(value: str, want: list[Surge]):
    assert decode_marks("t", value) == want


def test_what_another_manager_added_after_our_apply_is_not_reapplied_forever():
    """`kubectl set env` adds a field we do not set: one apply cannot take it away, so once our apply
    has left the object at a version, that version with their field is settled."""
    ours = {"manager": "falapp-operator", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    theirs = {"manager": "kubectl-set", "operation": "Update", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {
        "f:containers": {'k:{"name":"app"}': {"f:env": {'k:{"name":"FOO"}': {}}}}}}}}}
    current = child([ours, theirs])
    current["metadata"]["generation"] = 3
    assert needs_apply(current, DESIRED, "falapp-operator")  # first sight: apply once
    assert not needs_apply(current, DESIRED, "falapp-operator", applied_version="3")
    current["metadata"]["generation"] = 4  # someone changed it again
    assert needs_apply(current, DESIRED, "falapp-operator", applied_version="3")


async def test_a_queued_key_whose_delay_runs_out_moves_ahead():
    queue = WorkQueue()
    queue.add_after(("app", "ns", "due"), 0.05)  # e.g. an unschedulable timeout
    for name in ("a", "b", "due", "c"):  # an event queues the app meanwhile, behind others
        queue.add(("app", "ns", name))
    await asyncio.sleep(0.1)
    got = [await queue.get() for _ in range(4)]
    assert got == [("app", "ns", "due"), ("app", "ns", "a"), ("app", "ns", "b"), ("app", "ns", "c")]
    for key in got:
        queue.done(key)
    assert len(queue) == 0
