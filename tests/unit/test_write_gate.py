"""The gate on app writes in flight: a limit, and the order in which writes waiting get through."""

from __future__ import annotations

import asyncio

from falapp_operator.k8s.gate import Priority, RequestGate


async def _write(gate: RequestGate, priority: Priority, name: str, sent: list[str], hold: asyncio.Event,
                 in_flight: list[int]) -> None:
    async with gate.slot(priority):
        sent.append(name)
        in_flight[0] += 1
        in_flight[1] = max(in_flight[1], in_flight[0])
        await hold.wait()
        in_flight[0] -= 1


async def test_writes_waiting_go_by_priority_then_as_they_came_and_never_more_than_the_limit() -> None:
    gate, hold, sent, in_flight = RequestGate(2), asyncio.Event(), [], [0, 0]
    tasks = [asyncio.create_task(_write(gate, p, n, sent, hold, in_flight)) for p, n in [
        (Priority.LOW, "event-1"), (Priority.NORMAL, "status-1"),  # in flight at once
        (Priority.LOW, "event-2"), (Priority.NORMAL, "shrink-1"), (Priority.HISTORY, "history-2"),
        (Priority.NORMAL, "status-2"), (Priority.HISTORY, "history-3"), (Priority.GROW, "grow-1")]]
    await asyncio.sleep(0.01)
    assert sent == ["event-1", "status-1"]
    hold.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 2)
    assert sent == ["event-1", "status-1", "grow-1", "history-2", "history-3", "shrink-1", "status-2", "event-2"]
    assert in_flight[1] == 2


async def test_a_write_cancelled_while_waiting_takes_no_slot() -> None:
    gate, hold, sent, in_flight = RequestGate(1), asyncio.Event(), [], [0, 0]
    first = asyncio.create_task(_write(gate, Priority.NORMAL, "first", sent, hold, in_flight))
    await asyncio.sleep(0.01)
    cancelled = asyncio.create_task(_write(gate, Priority.HISTORY, "cancelled", sent, hold, in_flight))
    last = asyncio.create_task(_write(gate, Priority.LOW, "last", sent, hold, in_flight))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    hold.set()
    await asyncio.wait_for(asyncio.gather(first, last), 2)
    assert sent == ["first", "last"] and in_flight[1] == 1
    # the slots all came back: as many writes as the limit go through at once again
    hold.clear()
    again = asyncio.create_task(_write(gate, Priority.LOW, "again", sent, hold, in_flight))
    await asyncio.sleep(0.01)
    assert sent[-1] == "again"
    hold.set()
    await asyncio.wait_for(again, 2)


async def test_a_slot_handed_to_a_write_cancelled_in_that_moment_passes_on() -> None:
    gate, hold, sent, in_flight = RequestGate(1), asyncio.Event(), [], [0, 0]
    tasks: dict[str, asyncio.Task[None]] = {}

    async def first() -> None:
        async with gate.slot(Priority.NORMAL):
            sent.append("first")
            await hold.wait()
        tasks["handed"].cancel()  # its slot was just handed over; the waiter has not run yet

    tasks["first"] = asyncio.create_task(first())
    await asyncio.sleep(0.01)
    tasks["handed"] = asyncio.create_task(_write(gate, Priority.HISTORY, "handed", sent, hold, in_flight))
    tasks["after"] = asyncio.create_task(_write(gate, Priority.LOW, "after", sent, hold, in_flight))
    await asyncio.sleep(0.01)
    hold.set()
    await asyncio.wait_for(asyncio.gather(tasks["first"], tasks["after"]), 2)
    assert tasks["handed"].cancelled()
    assert sent == ["first", "after"] and in_flight[1] == 1
    assert gate.in_flight == 0


async def test_a_request_waiting_longer_than_max_wait_goes_next_whatever_its_priority() -> None:
    """A tenant rolling out thousands of apps keeps urgent writes coming: another's status and events
    still go, a little later."""
    gate = RequestGate(1)  # the default max_wait: a second
    sent: list[str] = []
    stop = asyncio.Event()

    async def urgent_flood() -> None:
        n = 0
        while not stop.is_set():
            async with gate.slot(Priority.HISTORY):
                sent.append(f"urgent-{n}")
                await asyncio.sleep(0.005)
            n += 1

    async def event() -> None:
        async with gate.slot(Priority.LOW):
            sent.append("event")

    floods = [asyncio.create_task(urgent_flood()) for _ in range(3)]
    await asyncio.sleep(0.01)
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(event(), 2)
    waited = asyncio.get_running_loop().time() - started
    stop.set()
    await asyncio.gather(*floods)
    assert 1.0 <= waited < 1.5, waited
    assert gate.in_flight == 0

