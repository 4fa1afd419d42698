"""Durations and quantities (falapp_operator.api.units)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from falapp_operator.api import (
    cpu_millis,
    format_duration,
    memory_bytes,
    parse_duration,
    parse_quantity,
    units,
)
from falapp_operator.api.units import whole

DURATIONS = [
    ("90s", timedelta(seconds=90)),
    ("1m30s", timedelta(seconds=90)),
    ("500ms", timedelta(milliseconds=500)),
    ("2h", timedelta(hours=2)),
    ("1.5h", timedelta(minutes=90)),
    ("15m", timedelta(minutes=15)),
    ("0s", timedelta()),
    ("1h2m3s4ms", timedelta(hours=1, minutes=2, seconds=3, milliseconds=4)),
]


@pytest.mark.parametrize(("text", "want"), DURATIONS, ids=[d[0] for d in DURATIONS])
def test_parse_duration(text: str, want: timedelta) -> None:
    assert parse_duration(text) == want


@pytest.mark.parametrize("text", ["", "60", "-1s", "1d", "1 s", "s", "1us", "1.s", "1m30", "1h 2m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("value", "want"),
    [(timedelta(), "0s"), (timedelta(seconds=90), "1m30s"), (timedelta(hours=2, milliseconds=5), "2h5ms")],
    ids=["zero", "minutes-seconds", "hours-millis"],
)
def test_format_duration_round_trips(value: timedelta, want: str) -> None:
    assert format_duration(value) == want
    assert parse_duration(want) == value


QUANTITIES = [
    ("12", Decimal(12)),
    (12, Decimal(12)),
    ("0.5", Decimal("0.5")),
    ("500m", Decimal("0.5")),
    ("100n", Decimal("0.0000001")),
    ("1k", Decimal(1000)),
    ("1M", Decimal(10**6)),
    ("512Mi", Decimal(512 * 2**20)),
    ("80Gi", Decimal(80 * 2**30)),
    ("2Ti", Decimal(2 * 2**40)),
    ("1e3", Decimal(1000)),
    ("1.5E2", Decimal(150)),
    (".5", Decimal("0.5")),
]


@pytest.mark.parametrize(("text", "want"), QUANTITIES, ids=[str(q[0]) for q in QUANTITIES])
def test_parse_quantity(text: str | int, want: Decimal) -> None:
    assert parse_quantity(text) == want


@pytest.mark.parametrize("text", ["", "lots", "1GB", "Gi", "1 Gi", "1.2.3", True])
def test_parse_quantity_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="invalid quantity"):
        parse_quantity(text)  # type: ignore[arg-type]




@pytest.mark.parametrize(
    ("value", "want"), [("0.5", 500), ("1", 1000), ("250m", 250), ("0.0001", 1), (12, 12000)]
)
def test_cpu_millis_rounds_up(value: str | int, want: int) -> None:
    assert cpu_millis(value) == want


@pytest.mark.parametrize(("value", "want"), [("512Mi", 536870912), ("1Gi", 2**30), ("1k", 1000), ("100m", 1)])
def test_memory_bytes(value: str, want: int) -> None:
    assert memory_bytes(value) == want


def test_parsed_amounts_are_remembered_by_type_and_spelling() -> None:
    """Amounts and durations are parsed once per spelling; 1 remembered is not taken for True or 1.0,
    nor the same spelling at another scale; a refused value is refused again; long spellings and kinds
    a cache cannot hold (Decimal: sNaN does not even hash) are parsed each time, as before."""
    units._whole_recurring.cache_clear()
    units._parse_duration.cache_clear()
    assert whole("16Gi") == whole("16Gi") == 16 * 2**30
    assert units._whole_recurring.cache_info().hits == 1
    assert whole(1) == 1 and whole(1.5) == 2
    for _ in range(2):
        with pytest.raises(ValueError, match="invalid quantity"):
            whole(True)
        with pytest.raises(ValueError, match="invalid quantity"):
            whole("1x")
    assert cpu_millis("0.5") == 500 and memory_bytes("0.5") == 1  # the same spelling, another scale
    long = "0" * 100 + "1"
    assert whole(long) == 1 and whole(Decimal("2.5")) == 3
    with pytest.raises(ValueError, match="invalid quantity"):
        whole(Decimal("sNaN"))  # type: ignore[arg-type]
    cached = units._whole_recurring.cache_info().currsize
    assert whole(long) == 1 and units._whole_recurring.cache_info().currsize == cached  # not kept
    assert parse_duration("90s") == parse_duration("90s") == timedelta(seconds=90)
    assert units._parse_duration.cache_info().hits == 1


def test_a_duration_too_long_for_a_timedelta_is_refused_as_invalid() -> None:
    """Well formed but beyond what a timedelta holds: a ValueError (which validation turns into a
    field error), never an OverflowError that would fail every reconcile of the app."""
    with pytest.raises(ValueError, match="out of range"):
        parse_duration("9999999999999999999999999999h")
