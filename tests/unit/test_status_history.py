"""The status's attempt history and events stay small when many replicas move at once."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

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


LATEST = T0 + timedelta(minutes=30)


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
    merged = with_recorded_moves(status, filter(None, map(decode_recorded_moves, annotations)), LATEST)
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
    once = with_recorded_moves(status, annotations, LATEST)
    assert len(once.attempts) == MAX_ATTEMPTS and once is not status
    assert with_recorded_moves(once, annotations, LATEST) is once
    assert with_recorded_moves(once, annotations[::-1], LATEST) is once


def test_a_record_a_little_older_than_the_newest_entry_is_taken() -> None:
    """The operator's estimate of the API server's clock moved back a second between two moves."""
    newest = attempt("GPU-H100", 5)
    slightly_older = attempt("GPU-A100", 5).model_copy(update={"end": newest.end - timedelta(seconds=1)})
    merged = with_recorded_moves(history(newest), [decode_recorded_moves(recorded(slightly_older))], LATEST)
    assert [a.machine_type for a in merged.attempts] == ["GPU-A100", "GPU-H100"]


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
