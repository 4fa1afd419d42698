"""Durations and Kubernetes quantities: parsing and simple arithmetic, no dependencies."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNIT_SECONDS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}


def parse_duration(text: str) -> timedelta:
    """Parse a Go-style duration made of `ms`, `s`, `m`, `h` parts: `90s`, `1m30s`, `500ms`, `1.5h`.

    Raises ValueError for anything else (no sign, no bare numbers, no `us`/`ns`).
    """
    if not isinstance(text, str) or not text:
        raise ValueError(f"invalid duration {text!r}: expected e.g. 90s, 1m30s, 500ms, 2h")
    return _parse_duration(text)


# a handful of spellings recur in every reconcile (each app's timeouts): parsed once each
@lru_cache(maxsize=1024)
def _parse_duration(text: str) -> timedelta:
    pos, total = 0, Decimal(0)
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += Decimal(match.group(1)) * _DURATION_UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"invalid duration {text!r}: expected e.g. 90s, 1m30s, 500ms, 2h")
    try:
        return timedelta(seconds=float(total))
    except OverflowError as exc:  # a spelling the API's own check refuses too; never another error type
        raise ValueError(f"duration {text!r} is out of range") from exc


def format_duration(value: timedelta) -> str:
    """The shortest Go-style spelling of a whole number of milliseconds: `1h30m`, `90ms`, `0s`."""
    ms = round(value.total_seconds() * 1000)
    if ms < 0:
        raise ValueError("negative durations are not supported")
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def _split_quantity(value: str | int | float) -> tuple[Decimal, str]:
    if isinstance(value, bool):
        raise ValueError(f"invalid quantity {value!r}")
    text = str(value).strip()
    match = _QUANTITY.fullmatch(text)
    if not match:
        raise ValueError(f"invalid quantity {value!r}: expected e.g. 12, 500m, 80Gi")
    try:
        number = Decimal(match.group("number"))
    except InvalidOperation as exc:  # pragma: no cover - the regex already guarantees a number
        raise ValueError(f"invalid quantity {value!r}") from exc
    return number, match.group("suffix") or ""


def _multiplier(suffix: str) -> Decimal:
    if suffix in _BINARY:
        return Decimal(1024) ** _BINARY[suffix]
    if suffix in _DECIMAL:
        return Decimal(10) ** _DECIMAL[suffix]
    if suffix[:1] in ("e", "E"):
        return Decimal(10) ** Decimal(suffix[1:])
    return Decimal(1)


def parse_quantity(value: str | int | float) -> Decimal:
    """Parse a Kubernetes quantity to an exact Decimal in base units.

    `500m` -> 0.5, `12` -> 12, `80Gi` -> 85899345920, `1k` -> 1000, `1e3` -> 1000.
    Raises ValueError for anything that is not a quantity, or too large to compute with (`1e1000000`).
    """
    number, suffix = _split_quantity(value)
    try:
        return number * _multiplier(suffix)
    except ArithmeticError as exc:  # decimal overflow: never let it escape a validator as another type
        raise ValueError(f"quantity {value!r} is out of range") from exc


# the scheduler counts amounts as 64-bit integers: anything larger is no amount it can fit anywhere, and
# turning a number like 9e999990 into an int would hold the event loop for seconds
INT64_DIGITS = 18
MAX_CACHED_SPELLING = 64  # the CRDs' longest quantity; the API server writes pods' amounts shorter


def whole(value: str | int | float, scale: int = 1, what: str = "quantity") -> int:
    """A quantity times `scale` as a whole number, rounded up (as the scheduler rounds requests).
    Raises ValueError when it is not a quantity or does not fit in 64 bits."""
    # every pod's and node's amounts are parsed at each of their events, and a few spellings recur (`1`,
    # `8`, `16Gi`): parsed once each. Only short spellings of plain types are kept (a Decimal may not
    # even hash: sNaN), so the cache holds at most a few hundred kilobytes whatever it is fed
    recurring = isinstance(value, int | float) or (isinstance(value, str) and len(value) <= MAX_CACHED_SPELLING)
    return (_whole_recurring if recurring else _whole)(value, scale, what)


def _whole(value: str | int | float, scale: int, what: str) -> int:
    try:
        amount = parse_quantity(value) * scale
        if amount.adjusted() > INT64_DIGITS:
            raise ValueError(f"{what} {value!r} is out of range")
        return int(amount.to_integral_value(rounding="ROUND_CEILING"))
    except ArithmeticError as exc:
        raise ValueError(f"{what} {value!r} is out of range") from exc


_whole_recurring = lru_cache(maxsize=4096, typed=True)(_whole)  # typed: True is not taken for 1


def cpu_millis(value: str | int | float) -> int:
    """CPU quantity in whole millicores, rounded up as the scheduler does: `0.5` -> 500, `1` -> 1000."""
    return whole(value, 1000, "cpu quantity")


def memory_bytes(value: str | int | float) -> int:
    """Memory quantity in whole bytes, rounded up: `512Mi` -> 536870912."""
    return whole(value, 1, "memory quantity")
