"""The placement engine: how many replicas each machine type should run, decided from a snapshot.

Pure and deterministic. The state that must survive restarts lives in the cluster: Deployment sizes per
type (`Observed.counts`), make-before-break replicas in flight (`Observed.surge`, `Observed.cover`) and status
(`probes`, `attempts`). One call moves the app one consistent step towards its placement; calling it
again on the resulting state changes nothing until the cluster does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from falapp_operator.placement.decision import Decision, Move
from falapp_operator.placement.extras import ExtrasInFlight
from falapp_operator.placement.snapshot import NodeFree, Observed, PodView, Policy, Surge, TypeOption


def decide(options: Sequence[TypeOption], replicas: int, policy: Policy, observed: Observed,
           free: Mapping[str, Sequence[NodeFree]], now: datetime) -> Decision:
    return _Planner(options, replicas, policy, observed, free, now).run()


# moves that take a replica off a type: its room is free once the pod is gone
FREES_ROOM = frozenset({Move.MOVED, Move.RETURNED, Move.DRAINED, Move.SCALED_DOWN, Move.COVER_REMOVED})


class _Planner(ExtrasInFlight):
    """The steps of one pass, in order (run); the replicas in flight are judged first (extras.py)."""

    def run(self) -> Decision:
        if self.settled_total() > self.replicas:  # fewer replicas wanted: the moves in flight are cancelled
            self.decision.surge = self.decision.cover = None
        self.settle_cover()  # first: a failed cover may be replaced, and a cover turned move judged, in this pass
        self.settle_surge()
        self.reserve_pending()
        self.scale_down()
        self.scale_up()
        self.overflow()
        self.move_pending_up()
        self.start_surge()
        self.say_stuck_unlisted()
        return self.decision

    def reserve_pending(self) -> None:
        """Our pending pods will land where there is room; take it before placing anything else. Those
        the view has room on a node for are noted: a refusal of theirs the view does not explain."""
        for option in self.options:
            for pod in self.pods_on(option.name):
                if pod.pending and not self.room.take(option, on_demand=False):
                    self.room.take(option)  # an autoscaled type's: asked, no node's room taken
                elif pod.pending:
                    self.room_seen.add(pod.name)

    def scale_down(self) -> None:
        """Fewer replicas (the replicas in flight are ordinary ones now, see run): first from types whose
        shrink takes no Ready pod (least preferred type first; mid-rollout that depends on the ReplicaSets'
        sizes), Ready ones only beyond the wanted number: Ready replicas never drop needlessly (a surplus
        waits for a type to give one)."""
        d = self.decision
        if d.extras():
            return  # a surplus beside replicas in flight (a failed one left in place) waits for them
        ready = sum(p.ready for p in self.pods)
        while self.settled_total() > self.replicas:
            spare = [t for t in d.counts if not self.shrink_takes_ready(t)]
            if not spare:
                if ready <= self.replicas:
                    break  # every shrink would take one of the wanted Ready replicas: wait for a type to give one
                ready -= 1  # a Ready one beyond the wanted number goes
            spare = spare or list(d.counts)
            victim = max(spare, key=self.rank)
            self.shift(victim, None)
            self.record(Move.SCALED_DOWN, victim, None)
            self.spend_one(victim)

    def scale_up(self) -> None:
        while self.settled_total() < self.replicas:
            option = self.first_with_room() or self.options[0]
            self.shift(None, option.name)
            self.record(Move.SCALED_UP, None, option.name)

    def overflow(self) -> None:
        """Stuck replicas move, one by one, to the most preferred other type with room, else the next one.
        A stuck replica of a rollout moves make-before-break: its type's old replicas are still serving."""
        d = self.decision
        # types left and entered by stuck replicas in this pass
        left: set[str] = set()
        entered: set[str] = set()
        for option in self.options:
            if not self.converged(option.name) or self.is_surge_target(option.name):
                continue
            rolling = self.rolling(option.name)
            stuck = [p for p in self.pods_on(option.name) if p.name not in d.delete_first and self.stuck(p)]
            if not rolling:  # mid-rollout, every stuck pod is looked at: old ones are skipped below
                stuck = stuck[:self.movable(option.name)]
            for pod in stuck:
                if rolling:
                    # the new revision's pod gets room make-before-break; an old revision's stuck pod
                    # goes with the rollout (shrinking the type would take a Ready pod along)
                    if self.new_revision(pod):
                        self.unblock_rollout(option, pod)
                    continue
                # not back to a type just left: the scheduler said no there, whatever the view says
                # (room on a node only: an autoscaled type is asked in the round below, once a round)
                target = self.first_with_room(exclude=option.name, allow_cooling=False, on_demand=False)
                if target is None:
                    d.insufficient[option.display] = pod.scheduler_message
                    target = self.next_in_round(option.name, pod)
                if target is None or target.name in left or option.name in entered:
                    # onto a type a stuck replica is leaving (or off one another enters): the
                    # Deployment would not shrink, so the stuck pod would stay; swaps only churn
                    continue
                left.add(option.name)
                entered.add(target.name)
                self.shift(option.name, target.name)
                d.delete_first.append(pod.name)
                self.record(Move.FELL_BACK, option.name, target.name, pod.scheduler_message, pod.unschedulable_since,
                            room_seen=pod.name in self.room_seen)
        if d.insufficient:
            display = {o.name: o.display for o in self.options}
            for type_name, message in self.last_messages().items():
                if type_name in display:
                    d.insufficient.setdefault(display[type_name], message)
            # still stuck until capacity changes; look again after a timeout too
            d.wake_at(self.now + self.policy.unschedulable_timeout)

    def unblock_rollout(self, option: TypeOption, pod: PodView) -> None:
        """The new revision's extra pod finds no room on its type: start one replica on another type;
        when it is Ready one replica leaves this type, which gives the rollout its room. One at a time
        (while another replica is in flight or moving, the rollout waits its turn and is looked at again
        a timeout later), and none beside a surplus the scale-down could not trim (said). With no room
        on any other type the rollout has none: said, unless a replica in flight from this type is
        giving it room, or a replica leaving a listed type in this pass frees room the next pass sees
        (on this type; on another, unless a pending replica there takes it)."""
        d = self.decision
        moves = [t for t in d.transitions if t.move is not Move.COVER_REMOVED]  # (a cover's removal moves nothing)
        busy = d.surge is not None or moves or (d.cover is not None and d.cover.from_type == option.name)
        elsewhere = self.first_with_room(exclude=option.name, allow_backoff=False, take=False)
        if not busy and elsewhere is not None and self.settled_total() > self.replicas:
            # (a replica started on another type would be cancelled as a surplus by the next pass, trimmed
            # by its scale-down, and started again here: churn)
            total = sum(d.counts.values())
            self.no_room_for_rollout(option.name, pod, (
                f"; the app runs {total} replicas for {self.replicas} wanted and none can go without taking a "
                "Ready one, so none is started on another type to make room"))
            return
        if not busy and elsewhere is not None:
            self.room.take(elsewhere)
            self._start(elsewhere.name, Move.FELL_BACK, option.name, pod.scheduler_message)
            return
        if self.room_coming(option.name):
            return
        if elsewhere is None:
            self.no_room_for_rollout(option.name, pod)
        else:
            d.wake_at(self.now + self.policy.unschedulable_timeout)  # its turn, after what is in flight

    def room_coming(self, type_name: str) -> bool:
        """Room is coming for the type's stuck replica: a replica in flight from it (its move gives it
        room), or a replica leaving a type in this pass frees room the next pass sees, on this type or on
        a listed one where a pod on a node goes (not only pending ones, which would take the room)."""
        d = self.decision
        if any(e.from_type == type_name for e in d.extras()):
            return True
        freed = {t.from_type for t in d.transitions if t.move in FREES_ROOM and t.from_type is not None}
        if type_name in freed:
            return True
        # a ReplicaSet removes its pending pods first: room comes where more pods go than are pending (a
        # rolling type keeps one pod more than its count)
        for t in freed & self.by_name.keys():
            pods = self.pods_on(t)
            staying = d.counts.get(t, 0) + int(self.rolling(t) and d.counts.get(t, 0) > 0)
            if len(pods) - staying > sum(p.pending for p in pods):
                return True
        return False

    def move_pending_up(self) -> None:
        """Pending replicas on a less preferred (or unlisted) type go up as soon as a better type has room."""
        d = self.decision
        pending = sorted((p for p in self.pods if p.pending and p.name not in d.delete_first
                          and self.converged(p.machine_type)), key=lambda p: -self.rank(p.machine_type))
        for pod in pending:
            if self.is_surge_target(pod.machine_type) or (self.rolling(pod.machine_type)
                                                          and not self.nothing_runs_on_unlisted(pod.machine_type)):
                # the replica in flight, or a rollout's new pod (judged by overflow, or drained with
                # its type): moving it would shrink a type whose Ready pods run the old template
                continue
            if self.movable(pod.machine_type) <= 0:
                continue
            if pod.machine_type in self.by_name and pod.unschedulable_since is None and not pod.scale_up_coming:
                # not judged by the scheduler yet: it may be bound where it is in a moment (a replica
                # that just fell back, on a busy cluster, would otherwise go back and forth)
                continue
            rank = self.rank(pod.machine_type)
            # room on a node only: an autoscaled type is asked by a make-before-break probe (with
            # back-off) or in the round of a stuck replica, not each time a replica is pending
            target = self.first_with_room(before_rank=rank, allow_cooling=False, on_demand=False)
            if target is None and pod.machine_type not in self.by_name:
                target = self.options[0]
            if target is not None:
                self.shift(pod.machine_type, target.name)
                d.delete_first.append(pod.name)
                self.record(Move.PLACED_PREFERRED, pod.machine_type, target.name)

    def nothing_runs_on_unlisted(self, type_name: str) -> bool:
        """An unlisted type none of whose pods is on a node: however its ReplicaSets shrink, no pod that
        serves or is about to goes, so its replicas move up as any pending replica does, mid-rollout too
        (a drain, make-before-break, would wait behind any other replica in flight)."""
        return type_name not in self.by_name and not any(p.bound for p in self.pods_on(type_name))

    def start_surge(self) -> None:
        """Make-before-break: one extra replica on a better type; a worse one goes once it is Ready."""
        d = self.decision
        listed = [t for t in d.counts if t in self.by_name]
        if d.surge or d.cover or d.transitions or any(map(self.rolling, listed)) or any(
                p.pending for p in self.pods if p.machine_type in self.by_name) or self.settled_total() > self.replicas:
            return  # (a surplus the scale-down could not trim: no extra replica beside it)
        if any(not self.converged(t) for t in d.counts):
            return
        unlisted = self.least_preferred_with_replicas(below_rank=len(self.options) - 1)
        if unlisted is not None:
            target = self.probe_target(len(self.options))
            if target is not None:
                self._start(target.name, Move.DRAIN_STARTED, unlisted)
            else:
                # a replica on an unlisted type that cannot even run: say so, and look again after a timeout
                for type_name in sorted({p.machine_type for p in self.pods if p.pending and p.machine_type not in
                                         self.by_name}):
                    self.no_room_to_drain(type_name)
            return
        if not self.policy.return_to_preferred:
            return
        worst = self.least_preferred_with_replicas(below_rank=0)
        if worst is None:
            return
        target = self.probe_target(self.rank(worst))
        if target is not None:
            self._start(target.name, Move.PROBE_STARTED, worst)

    def say_stuck_unlisted(self) -> None:
        """A stuck replica on an unlisted type waits for its drain (one replica at a time, after what is
        in flight). When no listed type has room for it either, that is said now, not when its turn
        comes: the drain would say the same. (Not for a type this pass empties: its stuck pods go with it;
        nor when room is coming for it: a drain from it in flight, or room this pass frees.)"""
        d = self.decision
        stuck = {p.machine_type for p in self.pods if p.machine_type not in self.by_name and p.pending
                 and p.name not in d.delete_first and d.counts.get(p.machine_type, 0) > 0 and self.stuck(p)}
        if not stuck or self.first_with_room(allow_cooling=False, allow_backoff=False, take=False) is not None:
            return  # (the drain's target: not cooling down, not backing off)
        for type_name in sorted(stuck):
            if type_name not in d.insufficient and not self.room_coming(type_name):
                self.no_room_to_drain(type_name)

    def no_room_to_drain(self, type_name: str) -> None:
        """Said for an unlisted type whose replica cannot run there; looked at again after a timeout."""
        self.decision.insufficient[type_name] = f"no listed type has room to drain {type_name}"
        self.decision.wake_at(self.now + self.policy.unschedulable_timeout)

    def probe_target(self, before_rank: int) -> TypeOption | None:
        """The most preferred type above `before_rank` with room, not backing off, not cooling down."""
        for option in self.options[:before_rank]:
            if self.backing_off(option.name) or option.name in self.cooling:
                continue
            if self.room.take(option):
                return option
        return None

    def _start(self, to_type: str, move: Move, from_type: str, message: str = "") -> None:
        self.shift(None, to_type)
        self.decision.surge = Surge(to_type, from_type, self.now)
        self.record(move, from_type, to_type, message)
