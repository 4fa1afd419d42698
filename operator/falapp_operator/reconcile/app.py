"""One reconcile of one FalApp, without I/O: snapshot in, desired children + status + events out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from falapp_operator.api import (
    FalAppSpec,
    JsonObject,
    MachineType,
    app_name_problem,
    truncate,
)
from falapp_operator.api.conditions import (
    ConditionStatus,
    ConditionType,
    condition_message,
    get_condition,
    same_news,
    set_condition,
)
from falapp_operator.api.status import (
    Attempt,
    FalAppStatus,
    Placement,
    ProbeBackoff,
    append_attempt,
    decode_recorded_moves,
    encode_recorded_moves,
    same_attempt,
    summarize_placements,
    with_recorded_moves,
)
from falapp_operator.placement import (
    PROBE_BACKOFF_MAX,
    Decision,
    Move,
    NodeFree,
    Observed,
    PastMove,
    PodView,
    Policy,
    ProbeRetry,
    Surge,
    Transition,
    decide,
)
from falapp_operator.placement.eligibility import Resolution, resolve
from falapp_operator.reconcile import children
from falapp_operator.reconcile.children import AppRef

# the longest start a startupProbe can buy a make-before-break replica before it counts as failed
STARTUP_BUDGET_MAX = timedelta(days=365)

EVENT_REASONS = {
    Move.FELL_BACK: ("Normal", "FellBack"),
    Move.RETURNED: ("Normal", "ReturnedToPreferred"),
    Move.PROBE_STARTED: ("Normal", "ReturnProbeStarted"),
    Move.PROBE_FAILED: ("Normal", "ReturnProbeFailed"),
    Move.MOVED: ("Normal", "Moved"),
    Move.PLACED_PREFERRED: ("Normal", "MovedToPreferred"),
    Move.DRAIN_STARTED: ("Normal", "DrainStarted"),
    Move.DRAINED: ("Normal", "Drained"),
    Move.COVER_STARTED: ("Normal", "CoverStarted"),
    Move.COVER_REMOVED: ("Normal", "CoverRemoved"),
    Move.COVER_FAILED: ("Normal", "CoverFailed"),
}


@dataclass(frozen=True)
class AppSnapshot:
    """Everything observed about one app at one instant."""

    ref: AppRef
    generation: int
    spec: FalAppSpec
    status: FalAppStatus  # the FalApp's current status, as read
    catalogue: Sequence[MachineType]
    counts: Mapping[str, int]  # Deployment spec.replicas per machine type object name
    surge: Surge | None  # the make-before-break replica in flight
    pods: Sequence[PodView]
    free: Mapping[str, Sequence[NodeFree]]  # per machine type object name
    now: datetime
    # why the controller manager cannot create a type's pods (e.g. quota), per machine type
    replica_failures: Mapping[str, str] = field(default_factory=dict)
    create_failing: frozenset[str] = frozenset()  # of those, where its last creates failed (FailedCreate)
    # of those, where the pods were refused for good (a quota, a ServiceAccount not there, a webhook's
    # denial: observe.refused_for_good), and since when (the Deployment's condition)
    refused_since: Mapping[str, datetime] = field(default_factory=dict)
    # labels of the app's namespace, for MachineType namespaceSelectors; None = not known (then only
    # types without a selector may be used)
    namespace_labels: Mapping[str, str] | None = None
    # types with no Ready, schedulable node at all, and since when the operator has seen them so
    nodeless_since: Mapping[str, datetime] = field(default_factory=dict)
    # when the operator last raised each type's replicas, where its Deployment says so
    grown_at: Mapping[str, datetime] = field(default_factory=dict)
    # the moves each type's Deployment records (its MOVES_ANNOTATION as written): a status written
    # without them predates a crash, and they are history all the same
    recorded_moves: Mapping[str, str] = field(default_factory=dict)
    # a Deployment without that time was raised before this (by an older version: before the operator
    # started); counted so, not written (an upgrade writes nothing for it)
    raised_before: datetime | None = None
    cover: Surge | None = None  # the second replica in flight of a held move (see Surge)
    # the controller's pod templates, kept across reconciles; None: built afresh
    templates: children.TemplateCache | None = None


@dataclass
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class AppPlan:
    deployments: list[JsonObject] = field(default_factory=list)  # to apply
    delete_deployments: list[str] = field(default_factory=list)  # machine types whose Deployment goes
    rescale_unlisted: dict[str, int] = field(default_factory=dict)  # unlisted types draining: new size
    # (such a Deployment keeps its old template; the rescale also clears its surge annotation)
    service: JsonObject | None = None
    # written as its merge patch (FalAppStatus.to_patch): the fields it sets replace the stored ones
    status: FalAppStatus = field(default_factory=FalAppStatus)
    # the status's memory of this decision (attempt history, probe back-offs, the only fields set):
    # recorded before the children change, so a crash between the child writes and the status write
    # forgets no move: on the Deployments it grows (`history_on`, written first; see with_recorded_moves),
    # else written into the status first
    history: FalAppStatus | None = None
    history_on: frozenset[str] = frozenset()  # names of the Deployments carrying it
    events: list[Event] = field(default_factory=list)
    mark_for_deletion: list[str] = field(default_factory=list)  # pods the ReplicaSets remove first
    requeue_at: datetime | None = None
    decision: Decision | None = None
    waiting_for_room: bool = False  # pending replicas or replicas off their preferred type
    # replicas off their preferred type: the types they would move up to (moving them is the operator's call;
    # of an app that never returns, only its pending replicas and those on a type no longer listed)
    better_types: frozenset[str] = frozenset()


def policy_of(spec: FalAppSpec) -> Policy:
    return Policy(
        unschedulable_timeout=timedelta(seconds=spec.fallback.unschedulable_timeout_seconds),
        scale_up_timeout=timedelta(seconds=spec.fallback.scale_up_timeout_seconds),
        startup_timeout=timedelta(seconds=max(spec.fallback.startup_timeout_seconds, _probe_budget(spec))),
        return_to_preferred=spec.fallback.return_to_preferred,
    )


def _probe_budget(spec: FalAppSpec) -> float:
    """Seconds the startupProbe lets the app take to start (Kubernetes' defaults for unset fields), plus
    a period for the readiness probe to pass once it has started."""
    probe = spec.startup_probe
    if probe is None:
        return 0.0
    period = probe.period_seconds or 10
    budget = (probe.initial_delay_seconds or 0) + period * (probe.failure_threshold or 3) + period
    # int32 fields allow 2**62 seconds, which no time holds: a year is "never judged" already
    return min(budget, STARTUP_BUDGET_MAX.total_seconds())


CLOCK_LEEWAY = timedelta(minutes=1)

# the app's Ready condition reasons (None: no status yet) under which a replica being made, bound or
# Ready only changes its counts (see _status: the other reasons turn on such news)
STEADY_READY_REASONS = frozenset({None, "ReplicasNotReady", "AllReplicasReady"})


def plan(snap: AppSnapshot) -> AppPlan:
    problem = app_name_problem(snap.ref.name, snap.spec)  # an app created before the CRD checked it
    resolution = resolve(snap.spec, snap.catalogue, snap.ref.namespace, snap.namespace_labels)
    problem = problem or resolution.problem
    if problem:
        return invalid(snap.ref, snap.generation, snap.status, problem, snap.now, snap.pods)
    by_display = {o.display: o.name for o in resolution.options}  # the names the status goes by
    options = {o.name: o for o in resolution.options}
    made: dict[str, JsonObject] = {}
    recorded = snap.status  # as the status has it; the moves the Deployments add to it are history too
    snap = replace(snap, status=with_recorded_moves(recorded, filter(None, map(
        decode_recorded_moves, snap.recorded_moves.values())), snap.now, PROBE_BACKOFF_MAX))

    def template(type_name: str) -> JsonObject:
        """Built when first needed: a reconcile uses one or two of its candidate types."""
        if type_name not in made:
            option, machine_type = options[type_name], resolution.types[type_name]
            made[type_name] = (children.pod_template(snap.ref, snap.spec, option, machine_type)
                               if snap.templates is None else
                               snap.templates.template(snap.ref, snap.spec, option, machine_type))
        return made[type_name]

    pods = tuple(replace(p, current=p.template == children.template_hash(template(p.machine_type)))
                 if p.machine_type in options else p for p in snap.pods)
    # a time to come is no time the operator wrote (anyone who may edit the Deployment can write one);
    # a minute's leeway for the clock (its offset to the API server's is known to a second)
    grown_at = {t: at for t, at in snap.grown_at.items() if at <= snap.now + CLOCK_LEEWAY}
    observed = Observed(
        counts=snap.counts,
        surge=snap.surge,
        cover=snap.cover,
        pods=pods,
        probes=_probes_from_status(snap.status, by_display),
        attempts=_attempts_from_status(snap.status, by_display),
        uncreatable=snap.replica_failures,
        nodeless_since=snap.nodeless_since,
        grown_at=grown_at if snap.raised_before is None else {t: grown_at.get(t, snap.raised_before)
                                                              for t in snap.counts},
    )
    decision = decide(resolution.options, snap.spec.replicas, policy_of(snap.spec), observed, snap.free, snap.now)
    # a pod is marked so its ReplicaSet removes it first; one whose type keeps no replica goes anyway
    # (a lost pool's hundreds of replacements would cost as many writes for nothing)
    type_of = {p.name: p.machine_type for p in snap.pods}
    result = AppPlan(decision=decision, requeue_at=decision.requeue_at,
                     mark_for_deletion=[name for name in decision.delete_first
                                        if decision.counts.get(type_of.get(name, ""), 0) > 0])
    result.status, result.events = _status(replace(snap, pods=pods), resolution, decision)
    moves = None
    if (any(tr.move not in (Move.SCALED_UP, Move.SCALED_DOWN) for tr in decision.transitions)
            or snap.status is not recorded):
        result.history = FalAppStatus(attempts=result.status.attempts, probes=result.status.probes)
        # what the status does not hold yet, onto each Deployment this grows (the first writes)
        moves = encode_recorded_moves((a for a in result.status.attempts
                                       if not any(same_attempt(known, a) for known in recorded.attempts)),
                                      result.status.probes)
    # a Deployment per type in use; at scale, zero-replica Deployments for every listed type would
    # triple the objects the API server and controller manager keep
    for option in resolution.options:
        count = decision.counts.get(option.name, 0)
        if count:
            grows = count > snap.counts.get(option.name, 0)
            grown = snap.now if grows else grown_at.get(option.name)
            carried = moves if grows and moves else snap.recorded_moves.get(option.name)
            result.deployments.append(children.deployment(snap.ref, option, template(option.name), count,
                                                          decision.extras(), grown, carried))
            if grows and moves:
                result.history_on |= {result.deployments[-1]["metadata"]["name"]}
    for type_name in snap.counts:
        if decision.counts.get(type_name, 0) == 0:
            result.delete_deployments.append(type_name)
    for type_name, count in decision.counts.items():
        if type_name not in resolution.types and count != snap.counts.get(type_name):
            result.rescale_unlisted[type_name] = count
    # a mark the decision dropped, on a type no longer listed (its Deployment is not applied): cleared
    for mark in (snap.surge, snap.cover):
        if (mark is not None and mark.to_type not in resolution.types and decision.counts.get(mark.to_type)
                and not any(e.to_type == mark.to_type and e.cover == mark.cover for e in decision.extras())):
            result.rescale_unlisted.setdefault(mark.to_type, decision.counts[mark.to_type])
    result.service = children.service(snap.ref, snap.spec)
    ranks = {o.name: i for i, o in enumerate(resolution.options)}
    worst = max((ranks.get(t, len(ranks)) for t in decision.counts), default=0)
    if not (snap.spec.fallback.return_to_preferred or worst == len(ranks)):
        # an app that never returns moves up only its pending replicas (and off a type no longer listed,
        # the drain): room above its running ones changes nothing, their progress is news no sooner
        worst = max((ranks.get(p.machine_type, len(ranks)) for p in pods if p.pending), default=0)
    result.better_types = frozenset(o.name for o in resolution.options[:worst])
    result.waiting_for_room = bool(result.better_types) or any(p.pending for p in pods)
    return result


def invalid(ref: AppRef, generation: int, status: FalAppStatus, problem: str, now: datetime,
            pods: Sequence[PodView] = (), reason: str = "InvalidSpec") -> AppPlan:
    """Stalled (InvalidSpec, or a write the API refused): nothing more is written to children; a Warning
    event when the problem is new. The rest of the status (placements, history) stays as recorded."""
    conditions = list(status.conditions)
    previous = get_condition(conditions, ConditionType.STALLED)
    states: tuple[tuple[ConditionType, ConditionStatus], ...] = (
        (ConditionType.STALLED, "True"), (ConditionType.READY, "False"), (ConditionType.RECONCILING, "False"))
    for type_, state in states:
        conditions = set_condition(conditions, type_, state, reason=reason, message=problem,
                                   observed_generation=generation, now=now)
    # a copy keeps the fields set as read, so its patch carries them too; each assigned field is set
    new_status = status.model_copy()
    new_status.observed_generation = generation
    new_status.selector = ref.selector
    new_status.replicas = len([p for p in pods if not p.terminating])
    new_status.ready_replicas = sum(p.ready for p in pods)
    new_status.conditions = conditions
    if new_status.machines is None:
        new_status.machines = ""
    if reason == "InvalidSpec":
        new_status.candidates = ""  # nothing resolves: the old list would mislead
    events = []
    if previous is None or not previous.is_true or previous.message != condition_message(problem):
        events.append(Event("Warning", reason, problem))
    return AppPlan(status=new_status, events=events)


def _probes_from_status(status: FalAppStatus, by_display: Mapping[str, str]) -> dict[str, ProbeRetry]:
    out = {}
    for p in status.probes:
        name = by_display.get(p.machine_type)
        if name and p.next_attempt is not None:
            out[name] = ProbeRetry(p.failures, p.next_attempt)
    return out


def _attempts_from_status(status: FalAppStatus, by_display: Mapping[str, str]) -> tuple[PastMove, ...]:
    return tuple(PastMove(by_display.get(a.machine_type, a.machine_type), a.outcome, a.end, a.message or "", a.start,
                          bool(a.room_seen)) for a in status.attempts)


def candidates_summary(resolution: Resolution) -> str:
    """`GPU-RTX5090(2x32Gi),GPU-H100(1x80Gi)`: each candidate with a replica's GPUs and their VRAM."""
    out = []
    for option in resolution.options:
        gpu = resolution.types[option.name].spec.gpu
        if gpu is None:
            out.append(option.display)
        else:
            out.append(f"{option.display}({option.gpus}x{gpu.vram})" if gpu.vram else
                       f"{option.display}({option.gpus} GPU{'s' if option.gpus != 1 else ''})")
    return ",".join(out)


def _status(snap: AppSnapshot, resolution: Resolution, decision: Decision) -> tuple[FalAppStatus, list[Event]]:
    display = {o.name: o.display for o in resolution.options}
    gpus = {o.name: o.gpus for o in resolution.options}
    # where the app's GPU count is chosen per type (gpuMemory), events name it with the type
    named = {t: f"{d} ({gpus[t]} GPU{'s' if gpus[t] != 1 else ''})" for t, d in display.items()
             } if snap.spec.gpu_memory is not None else display
    live = [p for p in snap.pods if not p.terminating]
    ready_by_type: dict[str, int] = {}
    for p in live:
        ready_by_type[p.machine_type] = ready_by_type.get(p.machine_type, 0) + int(p.ready)
    ready = sum(ready_by_type.values())
    wanted = snap.spec.replicas
    preferred = resolution.options[0].name
    order = {o.name: i for i, o in enumerate(resolution.options)}
    in_use = sorted(decision.counts, key=lambda t: order.get(t, len(order)))

    old_since = {p.machine_type: p.since for p in snap.status.placements}
    placements = []
    for t in in_use:
        name = display.get(t, t)
        reason = "Preferred" if t == preferred else ("Unlisted" if t not in display else "FellBack")
        placements.append(Placement(machine_type=name, replicas=decision.counts[t],
                                    ready_replicas=ready_by_type.get(t, 0), gpus_per_replica=gpus.get(t),
                                    since=old_since.get(name) or snap.now, reason=reason))

    new_attempts: list[Attempt] = []
    events: list[Event] = []
    stuck_since = {p.machine_type: p.unschedulable_since for p in live if p.unschedulable_since}
    # the same move made by several replicas in one step is one entry and one event (a burst of a
    # hundred replicas falling back must not push the history out, nor flood the namespace's events)
    groups: dict[tuple[Move, str | None, str | None], list[Transition]] = {}
    for tr in decision.transitions:
        if tr.move not in (Move.SCALED_UP, Move.SCALED_DOWN):
            groups.setdefault((tr.move, tr.from_type, tr.to_type), []).append(tr)
    for same in groups.values():
        tr, count = same[0], len(same)
        src, dst = display.get(tr.from_type or "", tr.from_type), display.get(tr.to_type or "", tr.to_type)
        src_named, dst_named = named.get(tr.from_type or "", src), named.get(tr.to_type or "", dst)
        starts = [t.start or (stuck_since.get(t.from_type or "") if t.move == Move.FELL_BACK else None) for t in same]
        start = min((s for s in starts if s is not None), default=None)
        tried = dst if tr.move in (Move.PROBE_FAILED, Move.COVER_FAILED) else src or dst
        entry = Attempt(machine_type=tried or "", start=start or snap.now, end=snap.now, outcome=tr.move.value,
                        message=truncate(tr.message or ""), replicas=count if count > 1 else None,
                        room_seen=True if any(t.room_seen for t in same) else None)
        recorded = (*snap.status.attempts, *new_attempts)
        if start is None or not any(same_attempt(a, entry) for a in recorded):  # not when decided again
            new_attempts.append(entry)
        kind, reason = EVENT_REASONS.get(tr.move, ("Normal", tr.move.value))
        src, dst = src_named, dst_named
        text = {
            Move.FELL_BACK: f"replica moved from {src} to {dst}: unschedulable on {src}: {tr.message}",
            Move.RETURNED: f"replica returned to {dst}; removed one from {src}",
            Move.MOVED: f"a replica on {dst} is Ready; removed one from {src}, so its rollout has room",
            Move.PROBE_STARTED: f"{dst} has room: started a replica there before removing one from {src}",
            Move.PROBE_FAILED: f"extra replica on {dst} failed; backing off: {tr.message}",
            Move.PLACED_PREFERRED: f"pending replica moved from {src} to {dst}, which has room",
            Move.DRAIN_STARTED: f"{src} is no longer a candidate: started a replica on {dst} first",
            Move.DRAINED: f"removed a replica from {src}, no longer a candidate",
            Move.COVER_STARTED: f"the rollout on {src} has no room and a replica leaving it would take a Ready "
                                f"one along: started one more on {dst} first",
            Move.COVER_REMOVED: f"removed the extra replica on {src}: the app has its Ready replicas without it",
            Move.COVER_FAILED: f"extra replica on {dst}, started to let a move finish, failed; backing off: "
                               f"{tr.message}",
        }.get(tr.move, tr.move.value)
        if count > 1:
            text = f"{count} replicas: {text}"
        events.append(Event(kind, reason, text))
    attempts = list(snap.status.attempts)
    for entry in new_attempts:
        attempts = append_attempt(attempts, entry)

    gen, now = snap.generation, snap.now
    conditions = list(snap.status.conditions)
    previous_ready = get_condition(conditions, ConditionType.READY)
    current_ready = sum(p.ready and p.current for p in live)
    # replicas on a type no longer listed run a spec the user has left behind too
    rolling = any(not p.current or p.machine_type not in display for p in live)
    settled = sum(decision.settled_counts().values())
    # the replicas in flight, once Ready, must not stand in for wanted ones that are down
    surge_ready = 0
    for extra in decision.extras():
        on_type = [p for p in live if p.machine_type == extra.to_type]
        surge_ready += int(bool(on_type) and all(p.ready for p in on_type))
    failures = {display.get(t, t): m for t, m in snap.replica_failures.items() if t in decision.counts}
    # (status, reason, message) of the Ready and Stalled conditions
    ready_state: tuple[ConditionStatus, str, str]
    stalled: tuple[ConditionStatus, str, str] = ("False", "SpecValid", "")
    if failures and current_ready < wanted:
        detail = "; ".join(f"{t}: {msg}" for t, msg in failures.items())
        ready_state = ("False", "ReplicaFailure", f"pods cannot be created: {detail}")
        stalled = ("True", "ReplicaFailure", ready_state[2])
    elif decision.insufficient:
        detail = "; ".join(f"{t}: {msg or 'unschedulable'}" for t, msg in decision.insufficient.items())
        ready_state = ("False", "InsufficientCapacity", f"no listed machine type has room: {detail}")
    elif (previous_ready is not None and previous_ready.reason == "InsufficientCapacity"
          and any(p.pending for p in live) and current_ready < wanted):
        # the replica is trying its next type; until it lands the app still has nowhere to run it
        ready_state = ("False", "InsufficientCapacity", previous_ready.message or "")
    elif current_ready >= wanted + surge_ready and settled == wanted and not rolling:
        # a make-before-break replica in flight is extra: the wanted replicas are all Ready
        ready_state = ("True", "AllReplicasReady", f"{current_ready}/{wanted} replicas ready")
    elif rolling:
        ready_state = ("False", "RollingOut", f"{current_ready}/{wanted} replicas ready on the current spec")
    else:
        ready_state = ("False", "ReplicasNotReady", f"{current_ready}/{wanted} replicas ready")
    conditions = set_condition(conditions, ConditionType.READY, ready_state[0], reason=ready_state[1],
                               message=ready_state[2], observed_generation=gen, now=now)
    if ready_state[0] == "False" and ready_state[1] in ("InsufficientCapacity", "ReplicaFailure") and (
            previous_ready is None or previous_ready.reason != ready_state[1]
            or not same_news(ready_state[1], ready_state[2], previous_ready.message)):
        events.append(Event("Warning", ready_state[1], ready_state[2]))
    busy = ready_state[0] != "True" and stalled[0] != "True"  # kstatus: Stalled is Failed, not InProgress
    conditions = set_condition(conditions, ConditionType.RECONCILING, "True" if busy else "False",
                               reason=ready_state[1] if busy else ("Placed" if stalled[0] != "True" else stalled[1]),
                               message=ready_state[2], observed_generation=gen, now=now)
    conditions = set_condition(conditions, ConditionType.STALLED, stalled[0], reason=stalled[1],
                               message=stalled[2], observed_generation=gen, now=now)
    off_preferred = {t: n for t, n in decision.counts.items() if t != preferred}
    if off_preferred:
        where = ", ".join(f"{n} on {named.get(t, t)}" for t, n in off_preferred.items())
        surge = decision.surge
        returning = surge is not None and order.get(surge.to_type, len(order)) < order.get(
            surge.from_type or "", len(order))
        where += f"; moving one to {display.get(surge.to_type)} make-before-break" if returning and surge else ""
        conditions = set_condition(conditions, ConditionType.FALLBACK_ACTIVE, "True",
                                   reason="Returning" if returning else "FellBack",
                                   message=f"{where} (preferred: {display[preferred]})",
                                   observed_generation=gen, now=now)
    else:
        conditions = set_condition(conditions, ConditionType.FALLBACK_ACTIVE, "False", reason="OnPreferred",
                                   message="", observed_generation=gen, now=now)

    status = FalAppStatus(
        observed_generation=gen,
        replicas=len(live),
        ready_replicas=ready,
        selector=snap.ref.selector,
        machines=summarize_placements(placements),
        candidates=truncate(candidates_summary(resolution)),
        placements=placements,
        attempts=attempts,
        probes=[ProbeBackoff(machine_type=display.get(t, t), failures=b.failures, next_attempt=b.next_attempt)
                for t, b in sorted(decision.probes.items())],
        conditions=conditions,
    )
    return status, events
