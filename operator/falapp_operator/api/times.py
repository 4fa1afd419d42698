"""Timestamps as Kubernetes writes them: metav1.Time (`2006-01-02T15:04:05Z`) and metav1.MicroTime
(`2006-01-02T15:04:05.000000Z`), always in UTC. Their one home; durations (`90s`) are in units.py."""

from __future__ import annotations

from datetime import UTC, datetime


def utc(value: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with second precision, as Kubernetes writes metav1.Time."""
    return utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds, as Kubernetes writes metav1.MicroTime (Leases, events.k8s.io)."""
    return utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> datetime | None:
    """A Kubernetes timestamp (`2006-01-02T15:04:05Z`, optionally with fractions) as UTC; None stays None.
    Raises ValueError on anything else."""
    return utc(datetime.fromisoformat(text.replace("Z", "+00:00"))) if text else None


# no time the operator or the cluster writes falls outside these; one that does (year 1, year 9999) would
# overflow the moment a duration is added to it or taken from it
EARLIEST_SENSIBLE = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_SENSIBLE = datetime(9000, 1, 1, tzinfo=UTC)


def parse_time_or_none(value: object) -> datetime | None:
    """Like parse_time, for a value anyone may have written (an annotation): None unless it is a timestamp
    between 1970 and the year 9000."""
    if not isinstance(value, str):
        return None
    try:
        parsed = parse_time(value)
    except (ValueError, OverflowError):  # OverflowError: e.g. year 1 with a positive offset
        return None
    return parsed if parsed is not None and EARLIEST_SENSIBLE <= parsed < LATEST_SENSIBLE else None
