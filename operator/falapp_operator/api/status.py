"""FalApp status: placements per machine type, bounded attempt history, probe back-off, conditions."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from pydantic import ConfigDict, Field, ValidationError, model_validator

from falapp_operator.api.common import MAX_MACHINE_TYPES, MAX_MESSAGE, StatusModel, Timestamp, list_map, truncate
from falapp_operator.api.conditions import Condition
from falapp_operator.api.times import EARLIEST_SENSIBLE, format_time

MAX_ATTEMPTS = 20


class Placement(StatusModel):
    """Replicas of the app on one machine type."""

    machine_type: str = Field(max_length=63, description="Machine type, as written in spec.machineTypes.")
    replicas: int = Field(0, ge=0, description="Replicas placed on this type.")
    ready_replicas: int = Field(0, ge=0, description="Of those, replicas that are Ready.")
    gpus_per_replica: int | None = Field(
        None, ge=0, description="GPUs each replica requests on this type (0 on CPU types)."
    )
    since: Timestamp | None = Field(None, description="When replicas were first placed on this type.")
    reason: str | None = Field(
        None,
        max_length=256,
        description="Why replicas are here, e.g. Preferred, FellBack, ReturnedToPreferred.",
    )


class Attempt(StatusModel):
    """One try to run replicas on a machine type (bounded history, newest last)."""

    machine_type: str = Field(max_length=63, description="Machine type tried.")
    start: Timestamp = Field(description="When the attempt started.")
    end: Timestamp | None = Field(None, description="When it ended; absent while it lasts.")
    outcome: str = Field(
        max_length=64,
        description="Outcome, e.g. Pending, Running, Unschedulable, FellBack, ProbeFailed, Returned.",
    )
    message: str | None = Field(
        None,
        max_length=MAX_MESSAGE,
        description=f"The scheduler's last message or other detail (truncated to {MAX_MESSAGE} characters).",
    )
    replicas: int | None = Field(
        None, ge=1, description="How many replicas made this move together (absent: one)."
    )
    room_seen: bool | None = Field(
        None,
        description="A fallback the operator's capacity view did not explain: it showed room on the type "
        "when the scheduler refused it (a volume's zone, an affinity the view cannot see). Such refusals, "
        "repeated within the hour, keep the type out of the app's fallbacks longer.",
    )

    @model_validator(mode="before")
    @classmethod
    def _clip(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            data = {**data, "message": truncate(data["message"])}
        return data


class ProbeBackoff(StatusModel):
    """Back-off of failed return-to-preferred probes on one machine type."""

    machine_type: str = Field(max_length=63, description="Machine type probed.")
    failures: int = Field(0, ge=0, description="Consecutive failed probes.")
    next_attempt: Timestamp | None = Field(None, description="Earliest time of the next probe.")


# The status a FalApp has before the operator first writes one: the CRD's structural default for
# `status`, so the apiserver shows it on every read of a new object. kstatus (Flux, Helm 4 `--wait`)
# reads a FalApp without status as Current; with observedGeneration 0 != metadata.generation it is
# InProgress until the operator has looked at the app.
UNOBSERVED_STATUS = {"observedGeneration": 0}


class FalAppStatus(StatusModel):
    """Observed state of a FalApp, written by the operator."""

    model_config = ConfigDict(json_schema_extra=lambda schema: schema.update(default=dict(UNOBSERVED_STATUS)))

    observed_generation: int | None = Field(
        None, ge=0, description="The metadata.generation last reconciled."
    )
    replicas: int | None = Field(None, ge=0, description="Replicas that exist (scale subresource).")
    ready_replicas: int | None = Field(None, ge=0, description="Replicas that are Ready.")
    selector: str | None = Field(
        None, description="Label selector of the app's pods (scale subresource, HPA)."
    )
    machines: str | None = Field(None, description="Summary of placements, e.g. GPU-H100x1,GPU-A100x2.")
    candidates: str | None = Field(
        None,
        max_length=MAX_MESSAGE,
        description="The machine types the app may use, most preferred first, each with the GPUs a replica "
        "gets there and their VRAM, e.g. GPU-RTX5090(2x32Gi),GPU-H100(1x80Gi): spec.machineTypes as "
        "resolved against the catalogue, or the types chosen by spec.gpuMemory.",
    )
    placements: list[Placement] = Field(
        default_factory=list,
        max_length=MAX_MACHINE_TYPES * 2,
        description="Replicas per machine type.",
        json_schema_extra=list_map("machineType"),
    )
    attempts: list[Attempt] = Field(
        default_factory=list,
        max_length=MAX_ATTEMPTS,
        description="Recent placement attempts, newest last (at most 20).",
    )
    probes: list[ProbeBackoff] = Field(
        default_factory=list,
        max_length=MAX_MACHINE_TYPES * 2,
        description="Back-off state of return-to-preferred probes per machine type.",
        json_schema_extra=list_map("machineType"),
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=16,
        description="Ready, Reconciling, Stalled and FallbackActive conditions.",
        json_schema_extra=list_map("type"),
    )


def append_attempt(attempts: Iterable[Attempt], attempt: Attempt) -> list[Attempt]:
    """History with `attempt` appended, keeping the newest MAX_ATTEMPTS."""
    return [*attempts, attempt][-MAX_ATTEMPTS:]


def same_attempt(recorded: Attempt, entry: Attempt) -> bool:
    """The same stay ended the same way (times as written, to the second): a move decided again after
    the operator stopped half-way, or recorded in two places."""
    return attempt_key(recorded) == attempt_key(entry)


def attempt_key(attempt: Attempt) -> tuple[str, str, str]:
    """What tells one stay and its ending from another (see same_attempt)."""
    return attempt.machine_type, format_time(attempt.start), attempt.outcome


# A move's history rides on the Deployment it grows (its first write) as these attempts and back-offs,
# and reaches the status with the reconcile's last write; a crash between leaves it on the Deployment.
MAX_RECORDED_MOVES = 192 * 1024  # characters of such an annotation read (MAX_ATTEMPTS entries, escaped, fit)
MAX_RECORDED_COUNT = 1_000_000  # a count read from one (replicas moved, probe failures)
EARLIEST_RECORDED = EARLIEST_SENSIBLE  # no time written by the operator is older
# a record may end this much before the status's newest entry (the operator's estimate of the API
# server's clock may move back between two moves: its offset is known to about a second), or after now
RECORDED_LEEWAY = timedelta(seconds=5)


def encode_recorded_moves(attempts: Iterable[Attempt], probes: Iterable[ProbeBackoff]) -> str:
    return json.dumps(FalAppStatus(attempts=list(attempts), probes=list(probes)).to_patch(),
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def decode_recorded_moves(text: object) -> FalAppStatus | None:
    """The moves a Deployment's annotation records, its times to the second as the status holds them;
    None when it is not one. Anyone who may edit the Deployment can write it: it is checked like a
    status and for sense (each attempt ended, no earlier than it began; times since 1970, counts in
    range), and it reaches only its own app's history (with_recorded_moves bounds what it can say)."""
    if not isinstance(text, str) or not text or len(text) > MAX_RECORDED_MOVES:
        return None
    try:
        recorded = FalAppStatus.model_validate(json.loads(text))
    except (ValueError, ValidationError, RecursionError, OverflowError):
        return None
    if not set(recorded.model_fields_set) <= {"attempts", "probes"}:
        return None
    attempts = [a.model_copy(update={"start": _to_second(a.start), "end": _to_second(a.end)})
                for a in recorded.attempts]
    probes = [p.model_copy(update={"next_attempt": _to_second(p.next_attempt)}) for p in recorded.probes]
    times = [t for a in attempts for t in (a.start, a.end)] + [p.next_attempt for p in probes]
    if (any(a.end is None or a.end < a.start or (a.replicas or 0) > MAX_RECORDED_COUNT for a in attempts)
            or any(p.failures > MAX_RECORDED_COUNT for p in probes)
            or any(t is not None and t < EARLIEST_RECORDED for t in times)):
        return None
    return recorded.model_copy(update={"attempts": attempts, "probes": probes})


def _to_second(value: datetime | None) -> datetime | None:
    return value.replace(microsecond=0) if value is not None else None


def with_recorded_moves(status: FalAppStatus, recorded: Iterable[FalAppStatus], now: datetime,
                        longest_backoff: timedelta) -> FalAppStatus:
    """The status with the moves its app's Deployments record that it does not hold: attempts ending
    no earlier than its newest (less RECORDED_LEEWAY: older ones were recorded and passed since) and not
    after `now` (plus the leeway). Of the status's and those, the newest MAX_ATTEMPTS in one total order
    stay, the status's first in their order: merging again changes nothing (what falls out of the bound
    stays out). The back-offs come with the newest attempt taken, none later than `longest_backoff` from
    now. The same status when nothing is taken."""
    newest = max((a.end or a.start for a in status.attempts), default=None)
    latest = now + RECORDED_LEEWAY
    known: set[tuple[str, str, str]] | None = None  # the status's and those taken (read once a record needs it)
    taken: list[Attempt] = []
    probes: list[ProbeBackoff] | None = None
    probes_at: datetime | None = None
    for moves in recorded:
        last = None
        for attempt in moves.attempts:
            if (attempt.end is None or attempt.end > latest
                    or (newest is not None and attempt.end < newest - RECORDED_LEEWAY)):
                continue
            if known is None:
                known = {attempt_key(a) for a in status.attempts}
            if (key := attempt_key(attempt)) not in known:
                known.add(key)
                taken.append(attempt)
                last = attempt.end if last is None else max(last, attempt.end)
        if last is not None and "probes" in moves.model_fields_set and (probes_at is None or last > probes_at):
            probes, probes_at = moves.probes, last
    if not taken:
        return status
    pool = [*status.attempts, *taken]
    kept = set(sorted(range(len(pool)), key=lambda i: _history_order(pool[i]))[-MAX_ATTEMPTS:])
    attempts = [a for i, a in enumerate(status.attempts) if i in kept] + sorted(
        (a for i, a in enumerate(taken, len(status.attempts)) if i in kept), key=_history_order)
    if attempts == list(status.attempts):
        return status
    update: dict[str, Any] = {"attempts": attempts}
    if probes is not None:
        until = now + longest_backoff
        update["probes"] = [p.model_copy(update={"next_attempt": min(p.next_attempt, until)})
                            if p.next_attempt is not None else p for p in probes]
    return status.model_copy(update=update)


def _history_order(attempt: Attempt) -> tuple[datetime, str, str, str, str, int]:
    """By end, then what tells two attempts apart: a total order, so which MAX_ATTEMPTS are the newest
    does not depend on the order they come in."""
    return (attempt.end or attempt.start, format_time(attempt.start), attempt.machine_type, attempt.outcome,
            attempt.message or "", attempt.replicas or 1)


def summarize_placements(placements: Iterable[Placement]) -> str:
    """`GPU-H100x1,GPU-A100x2` for the MACHINES column; types with no replicas are left out."""
    return ",".join(f"{p.machine_type}x{p.replicas}" for p in placements if p.replicas > 0)
