"""The status's attempt history and events stay small when many replicas move at once."""

from __future__ import annotations

from falapp_operator.reconcile.app import plan
from tests.unit.status_samples import A100, H100, pod, snapshot, spec


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
