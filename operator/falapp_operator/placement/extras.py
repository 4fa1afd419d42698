"""Judging the replicas in flight beyond the wanted number (see snapshot.Surge): the make-before-break
replica of a move, a return or a drain, and the cover that lets a held move finish. Each is failed, done,
held, or still on its way; the engine's first steps in every pass (engine.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from falapp_operator.api.units import format_duration
from falapp_operator.placement.decision import Move, probe_backoff
from falapp_operator.placement.planner_state import PlannerState
from falapp_operator.placement.snapshot import ProbeRetry, Surge, TypeOption

SINCE_SLACK = timedelta(seconds=2)


class ExtrasInFlight(PlannerState):
    """The steps that judge the replicas in flight (a layer of the planner, not a kind of state)."""

    def settle_surge(self) -> None:
        """Judge the make-before-break replica in flight: failed, done, or still on its way."""
        d = self.decision
        surge = d.surge
        if surge is None:
            return
        option = self.by_name.get(surge.to_type)
        # its type was unlisted meanwhile, or the replica it was to replace is gone already: the extra
        # replica is an ordinary one now (it may be the only Ready one), and so is the cover that was to
        # let the move finish; scale-down and the drain of an unlisted type remove them in the right order
        if option is None or (surge.from_type is not None and self.movable(surge.from_type) <= 0):
            d.surge = None
            if d.cover is not None and d.cover.from_type == surge.from_type:
                d.cover = None
            return
        on_type = self.pods_on(surge.to_type)
        if self.failed_extra(surge, option):
            return
        # done when the type has all its replicas, the extra one included, and they are Ready, and
        # removing one from the origin keeps the app at its Ready count (a replica may be down elsewhere)
        ready = sum(p.ready for p in self.pods)
        loses_ready = surge.from_type is not None and self.shrink_takes_ready(surge.from_type)
        type_ready = len(on_type) >= d.counts[surge.to_type] and sum(p.ready for p in on_type) >= d.counts[
            surge.to_type]
        if type_ready and ready - loses_ready >= min(self.replicas, ready):
            victim = surge.from_type if surge.from_type is not None else self.least_preferred_with_replicas(
                below_rank=self.rank(surge.to_type))
            d.surge = None
            d.probes.pop(surge.to_type, None)
            if victim is not None:
                self.shift(victim, None)
                self.spend_one(victim)
                if victim not in self.by_name:
                    move = Move.DRAINED
                elif self.rank(victim) > self.rank(surge.to_type):
                    move = Move.RETURNED
                else:
                    move = Move.MOVED
                self.record(move, victim, surge.to_type, start=surge.since)
            return
        if type_ready and surge.ready_at is None:
            d.surge = replace(surge, ready_at=self.now)  # held: from now on it is a serving replica
        if surge.from_type is not None and self.rolling(surge.from_type):
            # the origin's rollout is blocked and its shrink would take a Ready pod of the old revision
            # (room was lost since the move started): keep serving, start a cover where there is room,
            # else say the rollout has no room
            blocked = self.blocked_rollout(surge.from_type)
            if blocked is not None and type_ready and loses_ready and d.cover is None and ready >= self.replicas:
                # (with fewer Ready, one more would not let the move finish: a replica is down elsewhere)
                target = self.cover_target(surge)
                if target is not None:
                    self.shift(None, target.name)
                    d.cover = Surge(target.name, surge.from_type, self.now, cover=True)
                    self.record(Move.COVER_STARTED, surge.from_type, target.name, blocked.scheduler_message)
                    return
            if blocked is not None and d.cover is None:  # a cover on its way is the answer
                self.no_room_for_rollout(surge.from_type, blocked)
        if (own := self.blocked_rollout(surge.to_type)) is not None:
            # a rollout on its own type since it was Ready, with no room there: the move is finished first
            self.no_room_for_rollout(surge.to_type, own)

    def failed_extra(self, extra: Surge, option: TypeOption | None) -> bool:
        """Whether a replica in flight failed (stuck, never Ready, or its pod cannot be created): then it
        goes, and its type backs off as a failed probe's does."""
        d = self.decision
        on_type = [p for p in self.pods_on(extra.to_type) if p.name not in d.delete_first]  # not judged already
        # pods that may be the extra one: created since it was started (timestamps have whole seconds
        # and the operator's estimate of the server's clock is not exact: allow some slack)
        started = extra.since - SINCE_SLACK if extra.since is not None else None
        recent = [p for p in on_type if started is None or p.created >= started]
        # once it was Ready its start-up is over: losing readiness later is not a failed start; and a pod
        # stuck beside a Ready one in a rollout there since is the rollout's (a shrink could take the Ready one)
        serving = extra.ready_at is not None and self.rolling(extra.to_type) and any(p.ready for p in on_type)
        # and a rollout there begun since it started: its new revision's pods are the rollout's
        judged = on_type
        if self.rolling(extra.to_type) and any(not self.new_revision(p) for p in recent):
            judged = [p for p in on_type if not self.new_revision(p)]
        failed = None if serving else next((p for p in judged if self.stuck(p)), None) or (
            None if extra.ready_at else next((p for p in recent if self.never_ready(p)), None))
        uncreatable = extra.to_type in self.uncreatable and len(on_type) < d.counts[extra.to_type]
        if failed is None and not uncreatable:
            return False
        if failed is not None:
            d.delete_first.append(failed.name)
        if extra.cover:
            d.cover = None
        else:
            d.surge = None
        if not self.shrink_takes_ready(extra.to_type):
            self.shift(extra.to_type, None)
        # else (its type mid-rollout, whose shrink goes by ReplicaSet size): an ordinary replica now, the
        # scale-down trims the surplus where that takes no Ready pod
        failure = Move.COVER_FAILED if extra.cover else Move.PROBE_FAILED
        previous = d.probes.get(extra.to_type)
        failures = previous.failures if previous else 0
        lost_race = failed is not None and failed.pending and (option is None or not self.room.fits(option))
        if failed is None:
            message = f"its pod cannot be created: {self.uncreatable[extra.to_type]}"
        elif lost_race:  # the room it was started for is gone (another app took it): no penalty
            message = f"lost the room to another pod: {failed.scheduler_message}"
        elif not failed.pending:
            timeout = format_duration(self.policy.startup_timeout)
            message = failed.failing or f"not Ready {timeout} after it was scheduled"
        else:
            message = failed.scheduler_message
        # decided before, and the operator stopped before the children were written: status has
        # its back-off already
        counted = previous is not None and extra.since is not None and any(
            a.outcome == failure and a.machine_type == extra.to_type and a.start == extra.since
            for a in self.attempts)
        if lost_race:
            d.probes[extra.to_type] = ProbeRetry(failures, self.now + self.policy.unschedulable_timeout)
        elif not counted:
            d.probes[extra.to_type] = ProbeRetry(failures + 1, self.now + probe_backoff(failures + 1))
        self.record(failure, extra.from_type, extra.to_type, message, extra.since)
        return True

    def cover_target(self, surge: Surge) -> TypeOption | None:
        """Where a cover may run: the most preferred listed type with room on a node, other than the move's
        origin, not cooling down or backing off."""
        for option in self.options:
            if option.name == surge.from_type or option.name in self.cooling or self.backing_off(option.name):
                continue
            if self.room.take(option, on_demand=False):
                return option
        return None

    def settle_cover(self) -> None:
        """Judge the cover: failed; needed while its move is in flight; once the move is done, a move of
        its own if the origin's rollout still has no room (one more replica must leave it), else kept while
        that rollout runs with fewer Ready replicas than wanted without it; then it goes."""
        d = self.decision
        cover = d.cover
        if cover is None:
            return
        option = self.by_name.get(cover.to_type)
        if self.failed_extra(cover, option) or option is None:
            return  # (its type unlisted: it serves until its move is done, then it is ordinary and drained)
        # Ready when its type is (any revision: a rollout there may have begun since)
        cover_ready = sum(p.ready for p in self.pods_on(cover.to_type)) >= d.counts[cover.to_type]
        if cover_ready and cover.ready_at is None:
            d.cover = cover = replace(cover, ready_at=self.now)
        if d.surge is not None or (cover.from_type in d.counts and not self.converged(cover.from_type)):
            # its move is in flight (or another: it is not overwritten), or was done by the last pass and
            # the view has not seen it yet
            return
        ready = sum(p.ready for p in self.pods)
        rolling = cover.from_type is not None and self.rolling(cover.from_type)
        if rolling and cover.from_type is not None and self.blocked_rollout(cover.from_type):
            # (not Ready yet: its start-up is judged as the move's)
            d.surge, d.cover = replace(cover, cover=False), None  # a move now: settle_surge judges it next
            return
        if cover_ready and ready - 1 < self.replicas:
            if not rolling:
                # it serves in place of a wanted replica that is down: an ordinary one now, and the
                # scale-down trims the surplus, a replica that is not Ready
                d.cover = None
            return
        d.cover = None
        self.shift(cover.to_type, None)
        self.spend_one(cover.to_type)
        self.record(Move.COVER_REMOVED, cover.to_type, None, start=cover.since)
