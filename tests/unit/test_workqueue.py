"""The work queue (k8s/workqueue.py): repeated adds of one key coalesce, a key is never processed by two
workers at once, delayed adds keep the earliest wake-up, a failing key waits out its back-off.
(Due keys going first and urgent adds cutting a back-off short: test_k8s_answers.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from falapp_operator.k8s.workqueue import TurnLine, WorkQueue, backoff

A, B, C = ("app", "ns", "a"), ("app", "ns", "b"), ("app", "ns", "c")


async def take(queue: WorkQueue) -> Hashable:
    """The next key; a second at most."""
    return await asyncio.wait_for(queue.get(), 1.0)


async def nothing_within(queue: WorkQueue, seconds: float) -> bool:
    try:
        key = await asyncio.wait_for(queue.get(), seconds)
    except TimeoutError:
        return True
    queue.done(key)
    return False


async def test_repeated_adds_of_a_key_coalesce_in_its_first_place() -> None:
    queue = WorkQueue()
    for key in (A, B, A, A, C, B):
        queue.add(key)
    assert len(queue) == 3
    assert [await take(queue) for _ in range(3)] == [A, B, C]
    assert await nothing_within(queue, 0.02)


async def test_a_key_added_while_processed_comes_back_once_after_done() -> None:
    queue = WorkQueue()
    queue.add(A)
    assert await take(queue) == A
    for _ in range(3):  # events while a worker reconciles it: no second worker gets it
        queue.add(A)
    assert len(queue) == 0 and await nothing_within(queue, 0.02)
    queue.done(A)
    assert len(queue) == 1 and await take(queue) == A
    queue.done(A)
    assert await nothing_within(queue, 0.02)


async def test_a_key_processed_when_its_delay_runs_out_comes_back_ahead_of_others() -> None:
    queue = WorkQueue()
    queue.add(A)
    assert await take(queue) == A
    queue.add_after(A, 0.01)
    await asyncio.sleep(0.03)  # fires while A is processed: remembered as due
    queue.add(B)
    queue.done(A)
    assert [await take(queue) for _ in range(2)] == [A, B]


async def test_delayed_adds_keep_the_earliest_wake_up() -> None:
    queue = WorkQueue()
    loop = asyncio.get_running_loop()
    queue.add_after(A, 60)
    queue.add_after(A, 0.02)  # sooner: replaces the later one
    queue.add_after(A, 30)  # later: changes nothing
    started = loop.time()
    assert await take(queue) == A
    assert loop.time() - started < 1
    queue.done(A)
    assert await nothing_within(queue, 0.05), "the replaced wake-ups fired too"
    queue.close()


async def test_a_delay_of_nothing_is_an_add() -> None:
    queue = WorkQueue()
    queue.add_after(A, 0)
    queue.add_after(B, -1)
    assert len(queue) == 2 and [await take(queue) for _ in range(2)] == [A, B]


async def test_a_delayed_key_already_queued_is_handed_out_once() -> None:
    queue = WorkQueue()
    queue.add(A)
    queue.add_after(A, 0.01)
    await asyncio.sleep(0.03)
    assert len(queue) == 1 and await take(queue) == A
    queue.done(A)
    assert await nothing_within(queue, 0.02)


async def test_a_backing_off_key_ignores_adds_and_delays_until_its_retry() -> None:
    queue = WorkQueue()
    queue.add(A)
    await take(queue)
    queue.add(A)  # an event during the failing reconcile: the back-off set by the worker wins
    queue.retry_after(A, 0.1)
    queue.done(A)
    queue.add(A)
    queue.add_after(A, 0.01)
    queue.add(B)
    assert await take(queue) == B
    queue.done(B)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await take(queue) == A
    assert loop.time() - started > 0.05, "the back-off was cut short"
    queue.done(A)
    queue.add(A)  # the back-off is over: adds count again
    assert await take(queue) == A


async def test_a_retry_replaces_a_pending_delay() -> None:
    queue = WorkQueue()
    queue.add(A)
    await take(queue)
    queue.add_after(A, 0.01)  # a timeout the failed reconcile had set
    queue.retry_after(A, 60)
    queue.done(A)
    assert await nothing_within(queue, 0.05)
    queue.close()


async def test_close_cancels_every_wake_up() -> None:
    queue = WorkQueue()
    queue.add_after(A, 0.01)
    queue.retry_after(B, 0.01)
    queue.close()
    assert await nothing_within(queue, 0.05)
    queue.add(B)  # no longer backing off
    assert await take(queue) == B


async def test_work_put_off_a_while_is_not_handed_out_ahead_of_decisions_due() -> None:
    queue = WorkQueue()
    queue.add_after(A, 0.01, due=False)  # a status write put off
    queue.add_after(B, 0.02)  # a timeout expiring
    queue.add(C)
    await asyncio.sleep(0.05)
    assert [await take(queue) for _ in range(3)] == [B, C, A]


async def test_events_within_the_batch_window_make_one_pass_after_it() -> None:
    queue = WorkQueue()
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(5):  # a rollout's pods: created, bound, Ready, moments apart
        queue.add_batched(A, 0.1)
        await asyncio.sleep(0.01)
    assert len(queue) == 0
    assert await take(queue) == A
    assert loop.time() - started >= 0.1
    queue.done(A)
    assert await nothing_within(queue, 0.15)  # the later events waited for the same pass


async def test_news_brings_a_batch_of_mere_progress_forward_and_progress_never_puts_news_off() -> None:
    queue = WorkQueue()
    loop = asyncio.get_running_loop()
    started = loop.time()
    queue.add_batched(A, 10)  # a replica bound: counts only, a slow pass will do
    slow = queue._batches[A]
    queue.add_batched(A, 0.05)  # another turned unschedulable: its pass within the short window
    assert slow.cancelled(), "the slow pass would come as well, 10 s later"
    queue.add_batched(A, 10)  # more progress: not later for it
    assert await take(queue) == A
    assert loop.time() - started < 1
    queue.done(A)
    assert not queue._batches, "the long batch went with it: no second pass later"


async def test_a_batched_event_for_a_key_already_waiting_adds_no_delay_and_no_pass() -> None:
    queue = WorkQueue()
    queue.add(A)
    queue.add_batched(A, 0.05)
    assert len(queue) == 1 and await take(queue) == A
    queue.done(A)
    assert await nothing_within(queue, 0.1)


async def test_a_batch_handed_out_early_needs_no_pass_of_its_own() -> None:
    queue = WorkQueue()
    queue.add_batched(A, 0.05)
    queue.add(A)  # another reason to look at A comes first: that pass sees the batch's events
    assert await take(queue) == A
    queue.done(A)
    assert await nothing_within(queue, 0.1)


async def test_a_decision_due_sooner_than_the_window_is_not_put_off() -> None:
    queue = WorkQueue()
    queue.add_after(A, 0.02)  # an unschedulable timeout runs out
    queue.add_batched(A, 10)
    assert await take(queue) == A


async def test_a_batch_neither_moves_a_decision_nor_takes_its_place_ahead() -> None:
    """A tenant's stream of events is routine work, whatever decisions its apps wait for."""
    queue = WorkQueue()
    queue.add_after(A, 0.15)  # A's decision falls due then
    queue.add(B)  # another app's routine event
    queue.add_batched(A, 0.02)
    await asyncio.sleep(0.05)
    assert [await take(queue) for _ in range(2)] == [B, A]  # the batch's pass: behind B, as routine
    queue.done(A)
    queue.done(B)
    queue.add(C)  # routine again, queued before the decision falls due
    await asyncio.sleep(0.15)
    assert [await take(queue) for _ in range(2)] == [A, C]  # the decision kept its time and its place


async def test_a_steady_stream_of_events_still_gets_a_pass_every_window() -> None:
    queue = WorkQueue()
    loop = asyncio.get_running_loop()
    passes: list[float] = []

    async def worker() -> None:
        while True:
            key = await queue.get()
            passes.append(loop.time())
            queue.done(key)

    task = asyncio.create_task(worker())
    started = loop.time()
    while loop.time() - started < 0.6:  # an event every 0.02 s, never a quiet window
        queue.add_batched(A, 0.1)
        await asyncio.sleep(0.02)
    task.cancel()
    gaps = [b - a for a, b in zip([started, *passes], passes, strict=False)]
    assert len(passes) >= 4 and max(gaps) < 0.25, gaps


def test_namespaces_take_turns_and_each_namespaces_apps_go_oldest_first() -> None:
    line = TurnLine()
    for app in [("a", "1"), ("a", "2"), ("a", "3"), ("b", "1"), ("a", "1"), ("c", "1"), ("b", "2")]:
        line.add(app)  # ("a", "1") again: keeps its place
    assert len(line) == 6 and ("b", "2") in line and ("b", "3") not in line
    assert list(line) == [("a", "1"), ("b", "1"), ("c", "1"), ("a", "2"), ("b", "2"), ("a", "3")]
    line.discard(("b", "1"))
    line.discard(("z", "9"))  # not waiting: nothing
    assert [line.pop() for _ in range(len(line))] == [("a", "1"), ("b", "2"), ("c", "1"), ("a", "2"), ("a", "3")]
    assert not line
    with pytest.raises(IndexError):
        line.pop()


@given(st.lists(st.tuples(st.sampled_from(["add", "discard", "pop"]), st.sampled_from("abc"), st.sampled_from("xyz"))))
def test_turns_come_in_the_order_the_line_shows_and_no_app_waits_twice(steps: list[tuple[str, str, str]]) -> None:
    """Whatever the adds and discards: iterating shows the order of the turns, every app waiting is popped
    once, and a namespace never has two turns while another waits."""
    line, waiting = TurnLine(), set()
    for op, namespace, name in steps:
        app = (namespace, name)
        if op == "add":
            line.add(app)
            waiting.add(app)
        elif op == "discard":
            line.discard(app)
            waiting.discard(app)
        elif line:
            shown = list(line)
            popped = line.pop()
            assert popped == shown[0] and list(line) == shown[1:]
            waiting.discard(popped)
        assert len(line) == len(waiting) and set(line) == waiting
    order = list(line)
    popped = [line.pop() for _ in range(len(line))]
    assert popped == order and sorted(popped) == sorted(waiting)
    for i in range(1, len(popped)):  # a namespace turns again only when none else waits between
        if popped[i][0] == popped[i - 1][0]:
            assert all(app[0] == popped[i][0] for app in popped[i:])


async def test_a_sooner_routine_wake_neither_drops_a_decision_nor_goes_ahead_as_one() -> None:
    """A routine wake (due=False) sooner than the key's decision fires as routine work, behind keys queued
    before it; the decision still falls due at its own time and moves the key ahead then. A routine wake
    later than the decision is dropped: the decision's pass sets it again."""
    for routine_first in (True, False):
        queue: WorkQueue = WorkQueue()
        if routine_first:
            queue.add_after(A, 0.05, due=False)
            queue.add_after(A, 0.3)
        else:
            queue.add_after(A, 0.3)
            queue.add_after(A, 0.05, due=False)
        queue.add(B)
        await asyncio.sleep(0.1)  # the routine wake fired; nothing is due yet
        queue.add(C)
        assert len(queue) == 3
        await asyncio.sleep(0.3)  # the decision fell due while A still waited
        assert [await take(queue) for _ in range(3)] == [A, B, C], "the decision waited behind routine keys"
    queue = WorkQueue()
    queue.add_after(A, 0.05, due=False)
    queue.add_after(A, 0.5)
    queue.add(B)
    await asyncio.sleep(0.1)
    assert await take(queue) == B, "a routine wake went ahead as a decision"
    assert await take(queue) == A
    queue.done(A)
    queue.done(B)
    queue.add_after(A, 0.05)
    queue.add_after(A, 0.5, due=False)  # later than the decision: dropped
    assert A not in queue._routine_timers
    queue.close()



@pytest.mark.parametrize(("failures", "ceiling", "delay"), [
    (1, 60.0, 0.5), (2, 60.0, 1.0), (4, 60.0, 4.0), (8, 60.0, 60.0), (1025, 60.0, 60.0), (10**9, 3600.0, 3600.0),
    (0, 10.0, 0.5),  # not a failure count, but no shorter than the first wait
])
def test_backoff_doubles_from_half_a_second_up_to_its_ceiling(failures: int, ceiling: float, delay: float) -> None:
    assert backoff(failures, ceiling) == delay
