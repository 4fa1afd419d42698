"""One reconcile of one FalApp, without I/O: snapshot in, desired children + status + events out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from falapp_operator.api import MAX_ATTEMPTS, FalAppSpec, MachineType, format_time
from falapp_operator.api.conditions import Condition, ConditionType, get_condition, set_condition
from falapp_operator.placement import (
    Attempt,
    Decision,
    Move,
    NodeFree,
    Observed,
    PodView,
    Policy,
    ProbeBackoff,
    decide,
)
from falapp_operator.placement.eligibility import Resolution, resolve
from falapp_operator.reconcile import children
from falapp_operator.reconcile.children import AppRef

EVENT_REASONS = {
    Move.FELL_BACK: ("Normal", "FellBack"),
    Move.RETURNED: ("Normal", "ReturnedToPreferred"),
    Move.PROBE_STARTED: ("Normal", "ReturnProbeStarted"),
    Move.PROBE_FAILED: ("Normal", "ReturnProbeFailed"),
    Move.PLACED_PREFERRED: ("Normal", "MovedToPreferred"),
    Move.DRAIN_STARTED: ("Normal", "DrainStarted"),
    Move.DRAINED: ("Normal", "Drained"),
}


@dataclass(frozen=True)
class AppSnapshot:
    """Everything observed about one app at one instant."""

    ref: AppRef
    generation: int
    spec: FalAppSpec
    status: Mapping  # the FalApp's current status (camelCase dict)
    catalogue: Sequence[MachineType]
    counts: Mapping[str, int]  # Deployment spec.replicas per machine type object name
    surges: Mapping[str, int]
    pods: Sequence[PodView]
    free: Mapping[str, Sequence[NodeFree]]  # per machine type object name
    now: datetime


@dataclass
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class AppPlan:
    deployments: list[dict] = field(default_factory=list)  # to apply
    delete_deployments: list[str] = field(default_factory=list)  # machine types whose Deployment goes
    rescale_unlisted: dict[str, int] = field(default_factory=dict)  # unlisted types draining: new size
    service: dict | None = None
    status: dict = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    mark_for_deletion: list[str] = field(default_factory=list)  # pods the ReplicaSets remove first
    requeue_at: datetime | None = None
    decision: Decision | None = None
    waiting_for_room: bool = False  # pending replicas or replicas off their preferred type


def policy_of(spec: FalAppSpec) -> Policy:
    return Policy(
        unschedulable_timeout=timedelta(seconds=spec.fallback.unschedulable_timeout_seconds),
        scale_up_timeout=timedelta(seconds=spec.fallback.scale_up_timeout_seconds),
        return_to_preferred=spec.fallback.return_to_preferred,
    )


def plan(snap: AppSnapshot) -> AppPlan:
    resolution = resolve(snap.spec, snap.catalogue)
    if resolution.problem:
        return invalid(snap.ref, snap.generation, snap.status, resolution.problem, snap.now, snap.pods)
    by_display = {m.display_name: m.metadata.name for m in resolution.types.values()}
    observed = Observed(
        counts=snap.counts,
        surges=snap.surges,
        pods=tuple(snap.pods),
        probes=_probes_from_status(snap.status, by_display),
        attempts=_attempts_from_status(snap.status, by_display),
    )
    decision = decide(resolution.options, snap.spec.replicas, policy_of(snap.spec), observed, snap.free, snap.now)
    result = AppPlan(decision=decision, requeue_at=decision.requeue_at,
                     mark_for_deletion=list(decision.delete_first))
    # a Deployment per type in use; at scale, zero-replica Deployments for every listed type would
    # triple the objects the API server and controller manager keep
    for option in resolution.options:
        count = decision.counts.get(option.name, 0)
        if count:
            result.deployments.append(children.deployment(
                snap.ref, snap.spec, option, resolution.types[option.name], count,
                decision.surges.get(option.name, 0)))
    for type_name in snap.counts:
        if decision.counts.get(type_name, 0) == 0:
            result.delete_deployments.append(type_name)
    for type_name, count in decision.counts.items():
        if type_name not in resolution.types and count != snap.counts.get(type_name):
            result.rescale_unlisted[type_name] = count
    result.service = children.service(snap.ref, snap.spec)
    result.status, result.events = _status(snap, resolution, decision)
    preferred = resolution.options[0].name
    result.waiting_for_room = any(p.pending for p in snap.pods) or any(
        t != preferred for t in decision.counts)
    return result


def invalid(ref: AppRef, generation: int, status: Mapping, problem: str, now: datetime,
            pods: Sequence[PodView] = ()) -> AppPlan:
    """Stalled/InvalidSpec: no children are created or changed; a Warning event when the problem is new."""
    conditions = _conditions(status)
    previous = get_condition(conditions, ConditionType.STALLED)
    for type_, state in ((ConditionType.STALLED, "True"), (ConditionType.READY, "False"),
                         (ConditionType.RECONCILING, "False")):
        conditions = set_condition(conditions, type_, state, reason="InvalidSpec", message=problem,
                                   observed_generation=generation, now=now)
    new_status = dict(status)
    new_status.update({"observedGeneration": generation, "selector": ref.selector,
                       "replicas": len([p for p in pods if not p.terminating]),
                       "readyReplicas": sum(p.ready for p in pods),
                       "conditions": _dump_conditions(conditions)})
    new_status.setdefault("machines", "")
    events = []
    if previous is None or not previous.is_true or previous.message != problem:
        events.append(Event("Warning", "InvalidSpec", problem))
    return AppPlan(status=new_status, events=events)


def _conditions(status: Mapping) -> list[Condition]:
    return [Condition.model_validate(c) for c in status.get("conditions") or []]


def _dump_conditions(conditions: list[Condition]) -> list[dict]:
    return [c.model_dump(by_alias=True, exclude_none=True, mode="json") for c in conditions]


def _probes_from_status(status: Mapping, by_display: Mapping[str, str]) -> dict[str, ProbeBackoff]:
    out = {}
    for p in status.get("probes") or []:
        name = by_display.get(p.get("machineType"))
        if name and p.get("nextAttempt"):
            out[name] = ProbeBackoff(int(p.get("failures", 1)), _parse_time(p["nextAttempt"]))
    return out


def _attempts_from_status(status: Mapping, by_display: Mapping[str, str]) -> tuple[Attempt, ...]:
    return tuple(Attempt(by_display.get(a.get("machineType"), a.get("machineType", "")), a.get("outcome", ""),
                         _parse_time(a["end"]) if a.get("end") else None)
                 for a in status.get("attempts") or [])


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _status(snap: AppSnapshot, resolution: Resolution, decision: Decision) -> tuple[dict, list[Event]]:
    display = {o.name: o.display for o in resolution.options}
    live = [p for p in snap.pods if not p.terminating]
    ready_by_type: dict[str, int] = {}
    for p in live:
        ready_by_type[p.machine_type] = ready_by_type.get(p.machine_type, 0) + int(p.ready)
    ready = sum(ready_by_type.values())
    wanted = snap.spec.replicas
    preferred = resolution.options[0].name
    order = {o.name: i for i, o in enumerate(resolution.options)}
    in_use = sorted(decision.counts, key=lambda t: order.get(t, len(order)))

    old_since = {p.get("machineType"): p.get("since") for p in snap.status.get("placements") or []}
    placements = []
    for t in in_use:
        name = display.get(t, t)
        reason = "Preferred" if t == preferred else ("Unlisted" if t not in display else "FellBack")
        placements.append({"machineType": name, "replicas": decision.counts[t],
                           "readyReplicas": ready_by_type.get(t, 0),
                           "since": old_since.get(name) or format_time(snap.now), "reason": reason})

    attempts = list(snap.status.get("attempts") or [])
    events: list[Event] = []
    stuck_since = {p.machine_type: p.unschedulable_since for p in live if p.unschedulable_since}
    for tr in decision.transitions:
        if tr.move in (Move.SCALED_UP, Move.SCALED_DOWN):
            continue
        src, dst = display.get(tr.from_type or "", tr.from_type), display.get(tr.to_type or "", tr.to_type)
        start = stuck_since.get(tr.from_type or "") if tr.move == Move.FELL_BACK else None
        attempts.append({"machineType": src or dst, "start": format_time(start or snap.now),
                         "end": format_time(snap.now), "outcome": tr.move.value,
                         "message": (tr.message or "")[:1024]})
        kind, reason = EVENT_REASONS.get(tr.move, ("Normal", tr.move.value))
        text = {
            Move.FELL_BACK: f"replica moved from {src} to {dst}: unschedulable on {src}: {tr.message}",
            Move.RETURNED: f"replica returned to {dst}; removed one from {src}",
            Move.PROBE_STARTED: f"{dst} has room: started a replica there before removing one from {src}",
            Move.PROBE_FAILED: f"replica on {dst} could not be scheduled; backing off: {tr.message}",
            Move.PLACED_PREFERRED: f"pending replica moved from {src} to {dst}, which has room",
            Move.DRAIN_STARTED: f"{src} is no longer listed: started a replica on {dst} first",
            Move.DRAINED: f"removed a replica from unlisted {src}",
        }.get(tr.move, tr.move.value)
        events.append(Event(kind, reason, text))
    attempts = attempts[-MAX_ATTEMPTS:]

    gen, now = snap.generation, snap.now
    conditions = _conditions(snap.status)
    previous_ready = get_condition(conditions, ConditionType.READY)
    if decision.insufficient:
        detail = "; ".join(f"{t}: {msg or 'unschedulable'}" for t, msg in decision.insufficient.items())
        ready_state = ("False", "InsufficientCapacity", f"no listed machine type has room: {detail}")
    elif (previous_ready is not None and previous_ready.reason == "InsufficientCapacity"
          and any(p.pending for p in live) and ready < wanted):
        # the replica is trying its next type; until it lands the app still has nowhere to run it
        ready_state = ("False", "InsufficientCapacity", previous_ready.message or "")
    elif ready >= wanted and not decision.surges and sum(decision.counts.values()) == wanted:
        ready_state = ("True", "AllReplicasReady", f"{ready}/{wanted} replicas ready")
    else:
        ready_state = ("False", "ReplicasNotReady", f"{ready}/{wanted} replicas ready")
    conditions = set_condition(conditions, ConditionType.READY, ready_state[0], reason=ready_state[1],
                               message=ready_state[2], observed_generation=gen, now=now)
    if ready_state[1] == "InsufficientCapacity" and (
            previous_ready is None or previous_ready.reason != "InsufficientCapacity"
            or previous_ready.message != ready_state[2]):
        events.append(Event("Warning", "InsufficientCapacity", ready_state[2]))
    busy = ready_state[0] != "True"
    conditions = set_condition(conditions, ConditionType.RECONCILING, "True" if busy else "False",
                               reason="Placing" if busy else "Placed",
                               message=ready_state[2], observed_generation=gen, now=now)
    conditions = set_condition(conditions, ConditionType.STALLED, "False", reason="SpecValid", message="",
                               observed_generation=gen, now=now)
    off_preferred = {t: n for t, n in decision.counts.items() if t != preferred}
    if off_preferred:
        where = ", ".join(f"{n} on {display.get(t, t)}" for t, n in off_preferred.items())
        conditions = set_condition(conditions, ConditionType.FALLBACK_ACTIVE, "True", reason="FellBack",
                                   message=f"{where} (preferred: {display[preferred]})",
                                   observed_generation=gen, now=now)
    else:
        conditions = set_condition(conditions, ConditionType.FALLBACK_ACTIVE, "False", reason="OnPreferred",
                                   message="", observed_generation=gen, now=now)

    status = {
        "observedGeneration": gen,
        "replicas": len(live),
        "readyReplicas": ready,
        "selector": snap.ref.selector,
        "machines": ",".join(f"{display.get(t, t)}x{decision.counts[t]}" for t in in_use),
        "placements": placements,
        "attempts": attempts,
        "probes": [{"machineType": display.get(t, t), "failures": b.failures,
                    "nextAttempt": format_time(b.next_attempt)} for t, b in sorted(decision.probes.items())],
        "conditions": _dump_conditions(conditions),
    }
    return status, events
