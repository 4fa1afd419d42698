"""Status conditions shaped as Kubernetes API conventions (metav1.Condition), with kstatus semantics."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from falapp_operator.api.common import CONDITION_REASON, CONDITION_TYPE, StatusModel, Timestamp, truncate

# metav1.Condition's limit: a longer message (the scheduler's, listing hundreds of taints) is cut to it
CONDITION_MESSAGE_MAX = 32768


class ConditionType(StrEnum):
    """Condition types the operator sets."""

    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    FALLBACK_ACTIVE = "FallbackActive"


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(StatusModel):
    """One aspect of the object's current state (Kubernetes API conventions)."""

    type: str = Field(
        max_length=316,
        pattern=CONDITION_TYPE,
        description="Type of condition in CamelCase, e.g. Ready, Reconciling, Stalled, FallbackActive.",
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    reason: str | None = Field(
        None,
        max_length=1024,
        pattern=CONDITION_REASON,
        description="Machine-readable CamelCase reason for the last transition, e.g. InsufficientCapacity.",
    )
    message: str | None = Field(
        None, max_length=CONDITION_MESSAGE_MAX, description="Human-readable details about the last transition."
    )
    last_transition_time: Timestamp | None = Field(
        None, description="When the condition last changed from one status to another."
    )
    observed_generation: int | None = Field(
        None, ge=0, description="The metadata.generation the condition was computed from."
    )

    @property
    def is_true(self) -> bool:
        return self.status == "True"


def get_condition(conditions: Iterable[Condition], type_: str) -> Condition | None:
    """The condition of the given type, or None."""
    for condition in conditions:
        if condition.type == type_:
            return condition
    return None


def set_condition(
    conditions: Iterable[Condition],
    type_: str,
    status: ConditionStatus,
    *,
    reason: str,
    message: str = "",
    observed_generation: int | None = None,
    now: datetime,
) -> list[Condition]:
    """Return a new list with the condition of `type_` set.

    `lastTransitionTime` moves to `now` only when the status changes (or the condition is new), so an
    unchanged condition produces an identical list and no write is needed. Order is kept; new
    conditions are appended.
    """
    result: list[Condition] = []
    found = False
    for old in conditions:
        if old.type != type_:
            result.append(old)
            continue
        found = True
        since = old.last_transition_time if old.status == status and old.last_transition_time else now
        result.append(_condition(type_, status, reason, message, since, observed_generation))
    if not found:
        result.append(_condition(type_, status, reason, message, now, observed_generation))
    return result


def condition_message(message: str) -> str:
    """The message as a condition holds it (cut to its limit): what a later one is compared with."""
    return truncate(message, CONDITION_MESSAGE_MAX)


# the scheduler's counts ("0/7 nodes are available: 2 node(s) had untolerated taint {...}, 7 Insufficient ...") and
# the timestamps in taints such as {ToBeDeletedByClusterAutoscaler: 1712345678}
_SCHEDULER_COUNTS = re.compile(r"\b\d+/\d+(?= nodes? (?:are|is) available)|(?<=: |, )\d+(?= )|(?<=: )\d+(?=})")
_REASONS = re.compile(r"(?<=available): |, |\. ")  # between the scheduler's reasons and remarks
_QUOTA_USED = re.compile(r"(?<=used: )[^,]*")  # what others use of a quota comes and goes; the limit is news


def same_news(reason: str, message: str, earlier: str | None) -> bool:
    """Whether a new message of an InsufficientCapacity or ReplicaFailure condition tells what `earlier`
    told (both as a condition holds them). The scheduler counts nodes ("0/7 nodes are available: 7
    Insufficient nvidia.com/gpu") and sorts its reasons as text, so a node joining a cluster where the
    replica still has no room changes the numbers and may reorder the reasons: no news worth another
    Warning; nor is what others use of a quota. A new reason, another type, a quota's limit are news."""
    if earlier is None:
        return False
    if reason == "ReplicaFailure":
        return _QUOTA_USED.sub("#", condition_message(message)) == _QUOTA_USED.sub("#", earlier)
    return _scheduler_news(condition_message(message)) == _scheduler_news(earlier)


def _scheduler_news(message: str) -> list[list[list[str]]]:
    """Per type ("; "), per section (the scheduler's and its "preemption: ..."), the reasons and remarks
    ("no new claims to deallocate") as a sorted list, with the counts put aside."""
    return [[sorted(part for part in _REASONS.split(section.rstrip(". ")) if part)
             for section in segment.split("preemption: ")]
            for segment in _SCHEDULER_COUNTS.sub("#", message).split("; ")]


def _condition(type_: str, status: ConditionStatus, reason: str, message: str, since: datetime,
               observed_generation: int | None) -> Condition:
    return Condition(type=type_, status=status, reason=reason, message=condition_message(message),
                     last_transition_time=since, observed_generation=observed_generation)
