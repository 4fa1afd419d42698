"""Messages the operator writes are cut in one way (api.common.truncate): status attempts, candidates, events."""

from __future__ import annotations

import pytest

from falapp_operator.api import Attempt, truncate
from falapp_operator.api.common import MAX_MESSAGE


@pytest.mark.parametrize(
    ("text", "limit", "want"),
    [
        ("", 10, ""),
        ("short", 10, "short"),
        ("exactly 10", 10, "exactly 10"),
        ("one too long", 11, "one too ..."),
        ("x" * 5000, MAX_MESSAGE, "x" * (MAX_MESSAGE - 3) + "..."),
    ],
    ids=["empty", "short", "at-limit", "over-limit", "default-limit"],
)
def test_truncate(text: str, limit: int, want: str) -> None:
    assert truncate(text, limit) == want
    assert len(truncate(text, limit)) <= limit


def test_attempts_cut_their_message_the_same_way() -> None:
    message = "0/4 nodes are available: " * 100
    attempt = Attempt.model_validate({"machineType": "GPU-H100", "start": "2026-01-02T03:04:05Z",
                                      "outcome": "FellBack", "message": message})
    assert attempt.message == truncate(message)
    assert truncate(message) == truncate(message, MAX_MESSAGE)
