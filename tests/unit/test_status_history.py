"""The status's attempt history and events stay small when many replicas move at once."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from falapp_operator.api.names import HASH_ANNOTATION, MOVES_ANNOTATION, TYPE_LABEL
from falapp_operator.api.status import (
    MAX_ATTEMPTS,
    MAX_RECORDED_MOVES,
    Attempt,
    FalAppStatus,
    ProbeBackoff,
    decode_recorded_moves,
    encode_recorded_moves,
    with_recorded_moves,
)
from falapp_operator.placement import Move
from falapp_operator.reconcile.app import plan
from tests.unit.status_samples import A100, H100, NOW, pod, room, snapshot, spec


def test_a_burst_of_fallbacks_is_one_history_entry_and_one_event() -> None:
    """Thirty replicas stuck on GPU-H100 for a little more or less than a minute each (their pods
    became unschedulable one by one) fall back in one step: one entry counting them, one event."""
    stuck = [pod(f"h{i}", H100, unschedulable_for=61 + i) for i in range(30)]
    result = plan(snapshot(spec(["GPU-H100", "GPU-A100"], replicas=30), counts={H100: 30}, pods=stuck,
                           free={H100: [], A100: []}))
    attempts = result.status.to_patch()["attempts"]
    assert [(a["machineType"], a["outcome"], a.get("replicas")) for a in attempts] == [("GPU-H100", "FellBack", 30)]
    assert attempts[0]["start"] == "2025-01-01T11:58:30Z"  # the earliest of them
    fell_back = [e for e in result.events if e.reason == "FellBack"]
    assert len(fell_back) == 1 and fell_back[0].message.startswith("30 replicas: replica moved from GPU-H100")


# --- a move's history recorded on the Deployment it grows (api/status.with_recorded_moves) ---------------
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def attempt(machine_type: str, ended_min: int, outcome: str = "FellBack") -> Attempt:
    """A stay on `machine_type` ended `ended_min` minutes after T0 (began a minute before)."""
    end = T0 + timedelta(minutes=ended_min)
    return Attempt(machine_type=machine_type, start=end - timedelta(minutes=1), end=end, outcome=outcome)


def probe(machine_type: str, failures: int) -> ProbeBackoff:
    return ProbeBackoff(machine_type=machine_type, failures=failures, next_attempt=T0 + timedelta(hours=1))


def history(*attempts: Attempt, probes: tuple[ProbeBackoff, ...] = ()) -> FalAppStatus:
    return FalAppStatus(attempts=list(attempts), probes=list(probes))


def recorded(*attempts: Attempt, probes: tuple[ProbeBackoff, ...] = ()) -> str:
    return encode_recorded_moves(attempts, probes)


LATEST = T0 + timedelta(minutes=30)  # now, for the merge
LONGEST = timedelta(hours=1)  # the longest probe back-off


@pytest.mark.parametrize(("status", "annotations", "attempts", "probes"), [
    pytest.param(history(attempt("GPU-H100", 1)), [], ["GPU-H100@1"], [], id="none recorded"),
    pytest.param(history(attempt("GPU-H100", 1)), [recorded(attempt("GPU-A100", 5), probes=(probe("GPU-H100", 2),))],
                 ["GPU-H100@1", "GPU-A100@5"], [("GPU-H100", 2)], id="a move the status missed (a crash)"),
    pytest.param(history(), [recorded(attempt("GPU-A100", 5))], ["GPU-A100@5"], [], id="into an empty history"),
    pytest.param(history(attempt("GPU-H100", 1), attempt("GPU-A100", 5), probes=(probe("GPU-H100", 1),)),
                 [recorded(attempt("GPU-A100", 5), probes=(probe("GPU-H100", 2),))],
                 ["GPU-H100@1", "GPU-A100@5"], [("GPU-H100", 1)], id="recorded in the status too: the status's"),
    pytest.param(history(attempt("GPU-H100", 9)), [recorded(attempt("GPU-A100", 5))], ["GPU-H100@9"], [],
                 id="older than the status's newest: recorded and passed since, or fell out"),
    pytest.param(history(attempt("GPU-H100", 1)), [recorded(attempt("GPU-A100", 60))], ["GPU-H100@1"], [],
                 id="ending after the latest time believed (written by hand)"),
    pytest.param(history(attempt("GPU-H100", 1)), [recorded(attempt("GPU-A100", 5)), recorded(attempt("GPU-A100", 5))],
                 ["GPU-H100@1", "GPU-A100@5"], [], id="on two Deployments grown together: once"),
    pytest.param(history(attempt("GPU-H100", 1)),
                 [recorded(attempt("GPU-L40", 7), probes=(probe("GPU-L40", 3),)),
                  recorded(attempt("GPU-A100", 5), probes=(probe("GPU-A100", 1),))],
                 ["GPU-H100@1", "GPU-A100@5", "GPU-L40@7"], [("GPU-L40", 3)],
                 id="two moves: in order, the newest's back-offs"),
    pytest.param(history(*(attempt("GPU-H100", i) for i in range(MAX_ATTEMPTS))), [recorded(attempt("GPU-A100", 25))],
                 [f"GPU-H100@{i}" for i in range(1, MAX_ATTEMPTS)] + ["GPU-A100@25"], [], id="bounded"),
])
def test_the_moves_recorded_on_deployments_join_the_history_the_status_lacks(
        status: FalAppStatus, annotations: list[str], attempts: list[str], probes: list[tuple[str, int]]) -> None:
    merged = with_recorded_moves(status, filter(None, map(decode_recorded_moves, annotations)), LATEST, LONGEST)
    assert [f"{a.machine_type}@{int((a.end - T0).total_seconds() // 60)}" for a in merged.attempts] == attempts
    assert [(p.machine_type, p.failures) for p in merged.probes] == probes
    if merged.attempts == status.attempts:
        assert merged is status, "nothing taken: the same status (the plan writes no history for it)"


def forged(**fields: object) -> str:
    entry = {"machineType": "GPU-H100", "start": "2025-01-01T12:00:00Z", "end": "2025-01-01T12:01:00Z",
             "outcome": "FellBack", **fields}
    return json.dumps({"attempts": [{k: v for k, v in entry.items() if v is not None}]})


@pytest.mark.parametrize("text", [
    None, "", "not json", "[]", '{"attempts": "x"}', '{"attempts": [{"machineType": "GPU-H100"}]}',
    '{"conditions": [], "attempts": []}',  # more than moves: no status is written from a Deployment
    forged(message="x" * MAX_RECORDED_MOVES),  # longer than any the operator writes
    "[" * 60_000,  # nested past the parser's recursion limit
    forged(end=None), forged(end="2025-01-01T11:00:00Z"),  # not ended, or ended before it began
    forged(replicas=10**30),  # beyond any count the status may hold (int64)
    forged(start="0001-01-01T00:00:00+01:00"),  # before the first UTC instant
    forged(start="0500-01-01T00:00:00Z"),  # before any time the operator writes
    json.dumps({"probes": [{"machineType": "GPU-H100", "failures": 10**30}]}),
])
def test_an_annotation_that_is_no_record_of_moves_is_ignored(text: str | None) -> None:
    assert decode_recorded_moves(text) is None


def test_the_longest_record_the_operator_writes_reads_back() -> None:
    """Twenty attempts with messages of 1024 characters outside ASCII: written as they are, not escaped."""
    moves = [attempt("GPU-H100", i).model_copy(update={"message": "\N{GRINNING FACE}" * 1024}) for i in range(20)]
    text = recorded(*moves, probes=(probe("GPU-H100", 3),))
    assert decode_recorded_moves(text) == history(*moves, probes=(probe("GPU-H100", 3),))


def test_merging_again_changes_nothing_even_past_the_bound() -> None:
    """Twenty-two records ending in the same second on two Deployments (written by hand) against a full
    history: the newest twenty in one order; merged again, the status is the same object (no write)."""
    status = history(*(attempt("GPU-H100", i) for i in range(MAX_ATTEMPTS)))
    same_end = [Attempt(machine_type=f"GPU-{i}", start=T0, end=T0 + timedelta(minutes=25), outcome="FellBack")
                for i in range(22)]
    annotations = [decode_recorded_moves(recorded(*same_end[:11])), decode_recorded_moves(recorded(*same_end[11:]))]
    once = with_recorded_moves(status, annotations, LATEST, LONGEST)
    assert len(once.attempts) == MAX_ATTEMPTS and once is not status
    assert with_recorded_moves(once, annotations, LATEST, LONGEST) is once
    assert with_recorded_moves(once, annotations[::-1], LATEST, LONGEST) is once


def wire(status: FalAppStatus) -> FalAppStatus:
    """As written and read back."""
    return FalAppStatus.model_validate(json.loads(json.dumps(status.to_patch())))


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.lists(st.tuples(st.sampled_from("ABC"), st.integers(0, 20), st.integers(0, 3)), max_size=MAX_ATTEMPTS),
       st.lists(st.lists(st.tuples(st.sampled_from("ABC"), st.integers(0, 20), st.integers(0, 3),
                                   st.sampled_from([0, 500_000])), max_size=12), min_size=1, max_size=3))
def test_merging_what_was_written_again_changes_nothing(
        in_status: list[tuple[str, int, int]], in_records: list[list[tuple[str, int, int, int]]]) -> None:
    """Any status, any records (ends within seconds of each other, some with fractions of a second as a
    hand may write them): once the merged status is written and read back, merging again changes nothing."""
    def entry(kind: str, end_s: int, lasted_s: int, micro: int = 0) -> Attempt:
        end = T0 + timedelta(seconds=end_s, microseconds=micro)
        return Attempt(machine_type=f"GPU-{kind}", start=end - timedelta(seconds=lasted_s), end=end, outcome="FellBack")
    status = wire(history(*(entry(*e) for e in in_status)))
    records = [decode_recorded_moves(recorded(*(entry(*e) for e in r))) for r in in_records]
    merged = wire(with_recorded_moves(status, records, LATEST, LONGEST))
    assert with_recorded_moves(merged, records, LATEST, LONGEST) is merged


def test_regression_a_record_ending_within_a_second_does_not_rotate_the_history() -> None:
    """Twenty-one records ending in the same second, one of them half a second later (written by hand):
    the history written and read back holds whole seconds, so the record's own order must be the same.
    (Was: the merge sorted on the fraction, the status read back did not: every pass wrote the status.)"""
    def entry(kind: str, start: str, end: str) -> dict:
        return {"machineType": kind, "start": start, "end": end, "outcome": "FellBack"}
    same = [entry(f"GPU-T{i:02}", "2025-01-01T12:00:05Z", "2025-01-01T12:00:10Z") for i in range(20)]
    late = entry("GPU-X", "2025-01-01T12:00:01Z", "2025-01-01T12:00:10.5Z")
    records = [decode_recorded_moves(json.dumps({"attempts": same[:10]})),
               decode_recorded_moves(json.dumps({"attempts": [*same[10:], late]}))]
    status = wire(with_recorded_moves(history(), records, LATEST, LONGEST))
    assert with_recorded_moves(status, records, LATEST, LONGEST) is status


def test_a_recovered_move_goes_after_the_status_entries() -> None:
    """Ends may run back a little (the clock's estimate): the status's entries keep their order, the
    record taken comes last, as the move would have been written."""
    x, y = attempt("GPU-H100", 5), attempt("GPU-A100", 5)
    y = y.model_copy(update={"end": x.end - timedelta(seconds=1)})
    z = attempt("GPU-L40", 5).model_copy(update={"end": x.end - timedelta(seconds=2)})
    merged = with_recorded_moves(history(x, y), [decode_recorded_moves(recorded(z))], LATEST, LONGEST)
    assert [a.machine_type for a in merged.attempts] == ["GPU-H100", "GPU-A100", "GPU-L40"]


def test_what_a_record_may_say_is_bounded() -> None:
    """Written by hand: the same move three times is one; a back-off past the longest one is cut to it."""
    move = attempt("GPU-A100", 5)
    far = ProbeBackoff(machine_type="GPU-H100", failures=3, next_attempt=datetime(9999, 1, 1, tzinfo=UTC))
    merged = with_recorded_moves(history(attempt("GPU-H100", 1)),
                                 [decode_recorded_moves(recorded(move, move, move, probes=(far,)))], LATEST, LONGEST)
    assert [a.machine_type for a in merged.attempts] == ["GPU-H100", "GPU-A100"]
    assert merged.probes[0].next_attempt == LATEST + LONGEST


def test_a_record_a_little_older_than_the_newest_entry_is_taken() -> None:
    """The operator's estimate of the API server's clock moved back a second between two moves."""
    newest = attempt("GPU-H100", 5)
    slightly_older = attempt("GPU-A100", 5).model_copy(update={"end": newest.end - timedelta(seconds=1)})
    merged = with_recorded_moves(history(newest), [decode_recorded_moves(recorded(slightly_older))], LATEST, LONGEST)
    assert [a.machine_type for a in merged.attempts] == ["GPU-H100", "GPU-A100"]


def test_a_move_rides_on_the_deployment_it_grows_and_a_crash_before_the_status_forgets_none() -> None:
    """The fallback's history goes on the A100 Deployment it grows, not into a status write of its own. The
    operator dies before the status: the next plan reads the move from that Deployment, writes it into the
    status first, decides nothing again, and keeps the annotation as it is (no write for it)."""
    app_spec = spec(["GPU-H100", "GPU-A100"], replicas=1)
    moved = plan(snapshot(app_spec, counts={H100: 1}, pods=[pod("h0", H100, unschedulable_for=61)],
                          free={H100: [], A100: room()}))
    a100 = next(d for d in moved.deployments if d["metadata"]["labels"][TYPE_LABEL] == A100)
    assert moved.history_on == {a100["metadata"]["name"]}
    annotation = a100["metadata"]["annotations"][MOVES_ANNOTATION]
    assert [a.outcome for a in decode_recorded_moves(annotation).attempts] == ["FellBack"]

    after = replace(snapshot(app_spec, counts={A100: 1}, pods=[pod("a0", A100)], free={H100: [], A100: room()}),
                    recorded_moves={A100: annotation}, grown_at={A100: NOW})  # the status as before the move
    again = plan(after)
    assert again.history is not None and [a.outcome for a in again.history.attempts] == ["FellBack"]
    assert not again.history_on, "nothing grows: the history goes into the status first"
    assert not [t for t in again.decision.transitions if t.move == Move.FELL_BACK]
    kept = next(d for d in again.deployments if d["metadata"]["labels"][TYPE_LABEL] == A100)
    assert kept["metadata"]["annotations"][MOVES_ANNOTATION] == annotation
    assert kept["metadata"]["annotations"][HASH_ANNOTATION] == a100["metadata"]["annotations"][HASH_ANNOTATION]

    recorded_now = replace(after, status=FalAppStatus.model_validate(again.status.to_patch()))
    assert plan(recorded_now).history is None, "the status holds it: nothing more to record"
