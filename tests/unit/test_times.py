"""Kubernetes timestamps (api/times.py): the one place the operator reads and writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from falapp_operator.api import format_micro_time, format_time, parse_time, parse_time_or_none

AT = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
EAST = timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    ("value", "want_time", "want_micro"),
    [
        (AT, "2026-01-02T03:04:05Z", "2026-01-02T03:04:05.678901Z"),
        (AT.astimezone(EAST), "2026-01-02T03:04:05Z", "2026-01-02T03:04:05.678901Z"),
        (AT.replace(tzinfo=None), "2026-01-02T03:04:05Z", "2026-01-02T03:04:05.678901Z"),  # naive: UTC
        (AT.replace(microsecond=0), "2026-01-02T03:04:05Z", "2026-01-02T03:04:05.000000Z"),
    ],
    ids=["utc", "other-zone", "naive", "whole-second"],
)
def test_format(value: datetime, want_time: str, want_micro: str) -> None:
    assert format_time(value) == want_time
    assert format_micro_time(value) == want_micro


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("2026-01-02T03:04:05Z", AT.replace(microsecond=0)),
        ("2026-01-02T03:04:05.678901Z", AT),
        ("2026-01-02T05:04:05+02:00", AT.replace(microsecond=0)),
        (None, None),
        ("", None),
    ],
    ids=["time", "micro-time", "offset", "none", "empty"],
)
def test_parse(text: str | None, want: datetime | None) -> None:
    parsed = parse_time(text)
    assert parsed == want
    assert parsed is None or parsed.tzinfo == UTC
    assert parse_time_or_none(text) == want


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01T00:00:00Z", 17, ["2026-01-02T03:04:05Z"], {}],
                         ids=["words", "month-13", "number", "list", "dict"])
def test_what_is_not_a_timestamp(value: object) -> None:
    assert parse_time_or_none(value) is None
    if isinstance(value, str):
        with pytest.raises(ValueError):
            parse_time(value)


def test_round_trip() -> None:
    assert parse_time(format_time(AT)) == AT.replace(microsecond=0)
    assert parse_time(format_micro_time(AT)) == AT
