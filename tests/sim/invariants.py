"""What must hold after every step of a simulation (a, b, d, e, f) and once the cluster settled (c).

a. Ready never drops needlessly: per app, Ready pods after a step >= min(replicas, Ready pods before
   it), unless the world took Ready pods away in that step (a node lost or NotReady, a readiness flap).
   The operator's own part is also judged alone, with no exemption: Ready pods after one reconcile's
   writes (and the Deployment controller's reaction) >= min(replicas, Ready pods just before it).
b. Bounded pods: when the operator's last word stands (its last reconcile of the app did not crash),
   live pods <= replicas + 1 + the number of the app's types with a rollout in progress. The +1 is
   the one make-before-break replica in flight (return probe, drain, or the replica that unblocks a
   rollout; +2 while a cover runs, marked on a listed type's Deployment); each rolling type may hold
   one pod more than its Deployment's size (RollingUpdate maxSurge 1). After a crash the next complete
   reconcile restores the bound.
c. Convergence: with no events the cluster settles within QUIET_STEPS quiet steps (see scenario.py).
   Once settled, per app: pods == replicas, all of their Deployment's current revision (unless the
   plan says InsufficientCapacity: then a rollout may be stuck, as in b, with the replica that was
   to give it room kept while removing the origin's pod would take a Ready one); each pod Ready, or pending
   with the plan saying InsufficientCapacity and no other listed type having room for it; no pod on a
   type while a more preferred listed type has room for one more replica (for pods on listed types
   only with returnToPreferred); status Ready=True when every replica is Ready on a listed type.
d. No stuck replica left behind: a pod Unschedulable past its deadline (unschedulableTimeout, plus
   scaleUpTimeout once a node was announced for it) is gone after the first reconcile at or after the
   deadline, unless
   - the plan says InsufficientCapacity;
   - it is on a type no longer listed while a make-before-break replica (or a cover) is in flight or a
     listed type is mid-rollout (the drain goes one replica at a time, after the rollouts);
   - its type is mid-rollout and the pod is of the old revision (the rollout replaces it), or of the
     new one while a make-before-break replica is in flight (one at a time) or a cover from its type
     runs, or in the reconcile that completed a move off its type (the rollout's room is being made;
     the scheduler binds it next);
   - that reconcile made other moves: it may be left to the next reconcile (which comes right away, as
     the moves changed objects), twice at most, not in two steps in a row.
   Reconciles happen each step when anything changed, else at the plan's requeue time: a deadline
   passing with no reconcile means the plan did not ask to be woken for it, which breaks d too.
e. No ping-pong: while the cluster is stable for an app (no capacity change, no user edit and no
   rollout of one, no pod of another app removed, i.e. no room freed; the step of the change itself
   does not count), the app makes at most `replicas` completed moves in each direction between two
   types (each replica at most once).
f. Ready=True is earned: when the status says Ready=True and the operator's last word stands, the
   app's Deployments hold replicas (+1 per make-before-break mark), every pod runs its Deployment's
   current revision, at least `replicas` pods are Ready, and the only pods not Ready are the replicas
   in flight.
g. The writes realize the plan: after a complete reconcile each type's Deployment holds the count
   the plan decided (no Deployment for a type with none).
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import TYPE_CHECKING

from falapp_operator.api.names import SURGE_ANNOTATION
from falapp_operator.placement import Move
from falapp_operator.placement.eligibility import resolve
from falapp_operator.reconcile.children import decode_marks
from tests.sim.driver import CATALOGUE, build_cache, free_for
from tests.sim.objects import NAMESPACE

if TYPE_CHECKING:
    from tests.sim.scenario import Sim

COMPLETED_MOVES = (Move.FELL_BACK, Move.PLACED_PREFERRED, Move.RETURNED, Move.MOVED, Move.DRAINED)


class Violation(AssertionError):
    def __init__(self, letter: str, step: int, app: str, detail: str):
        self.letter, self.step, self.app, self.detail = letter, step, app, detail
        self.sim: Sim | None = None  # the simulation, stopped where the invariant broke
        super().__init__(f"invariant {letter} broken at step {step}, app {app}: {detail}")


def ready_condition(status: dict) -> dict | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)


def says_no_room(plan) -> bool:
    """The plan found no room for a stuck replica, or the status it writes says InsufficientCapacity."""
    return bool(plan.decision and plan.decision.insufficient) or (
        (ready_condition(plan.status.to_patch()) or {}).get("reason") == "InsufficientCapacity")


class Invariants:
    def __init__(self, sim: Sim):
        self.sim = sim
        self.moves: dict[str, Counter] = {}  # per app, (from, to) -> completed moves while stable
        self.replicas_seen: dict[str, int] = {}  # per app, most replicas while stable
        # stuck pods left for the next reconcile: the step of the last time, and how often (d)
        self.deferred: dict[str, tuple[int, int]] = {}
        self.crashed: set[str] = set()  # apps whose reconcile crashed while stable (for known_bugs)
        self._listed: dict[tuple[str, int], set[str]] = {}

    def stale(self, name: str) -> bool:
        """The app's children and status are not the operator's last word: its last reconcile crashed,
        or the operator crashed in this step before reaching the app."""
        outcome = self.sim.outcomes.get(name)
        return outcome is None or outcome.crashed or (name not in self.sim.reconciled and self.sim.restarted)

    def listed(self, name: str) -> set[str]:
        """The machine types (object names) the app's spec lists and that can host it."""
        app = self.sim.apps[name]
        key = (name, app.generation)
        if key not in self._listed:
            self._listed[key] = {o.name for o in resolve(app.validated(), CATALOGUE).options}
        return self._listed[key]

    def fail(self, letter: str, app: str, detail: str) -> None:
        raise Violation(letter, self.sim.step_no, app, detail)

    def before_step(self) -> dict[str, int]:
        return {name: self.sim.world.ready_count(name) for name in self.sim.apps}

    def after_reconcile(self, name: str, ready_before: int) -> None:
        """a, the operator's part: one reconcile's writes never take Ready pods below min(replicas, before)."""
        replicas = self.sim.apps[name].validated().replicas
        after = self.sim.world.ready_count(name)
        if after < min(replicas, ready_before):
            self.fail("a", name, f"the reconcile's writes took Ready pods from {ready_before} to {after} "
                                 f"(replicas {replicas})")

    def after_step(self, ready_before: dict[str, int], user_action: bool) -> None:
        flags = self.sim.world.flags
        for name in self.sim.apps:
            # not stable for this app: capacity or a spec changed, another app's pods left (room), or
            # one of its types is mid-rollout (a user edit still at work: a rollout on a full type
            # moves a replica off and back by design); count again from the next step
            changed = (user_action or flags.capacity_changed or bool(flags.removed_from - {name})
                       or bool(self.rolling_types(name)))
            if changed:
                self.moves.pop(name, None)
                self.replicas_seen.pop(name, None)
                self.crashed.discard(name)
            if name in self.sim.reconciled and self.sim.outcomes[name].crashed:
                self.crashed.add(name)
            self.ready_kept(name, ready_before[name])
            self.plan_written(name)
            self.pods_bounded(name)
            self.stuck_moved(name)
            if not changed:
                self.no_ping_pong(name)
            self.ready_earned(name)

    # --- a -----------------------------------------------------------------------------------------
    def ready_kept(self, name: str, before: int) -> None:
        if self.sim.world.flags.ready_lost:
            return
        replicas = self.sim.apps[name].validated().replicas
        after = self.sim.world.ready_count(name)
        if after < min(replicas, before):
            self.fail("a", name, f"Ready pods dropped from {before} to {after} (replicas {replicas})")

    # --- b -----------------------------------------------------------------------------------------
    def surges_of(self, name: str) -> list:
        """The make-before-break marks on the app's Deployments."""
        return [s for d in self.sim.world.deployments_of(name)
                for s in decode_marks(d.machine_type, d.body["metadata"]["annotations"].get(SURGE_ANNOTATION))]

    def rolling_types(self, name: str) -> set[str]:
        deployments = self.sim.world.deployments
        return {p.machine_type for p in self.sim.world.pods_of(name)
                if p.deployment in deployments and deployments[p.deployment].revision != p.revision}

    def pods_bounded(self, name: str) -> None:
        if self.stale(name):
            return
        replicas = self.sim.apps[name].validated().replicas
        rolling = self.rolling_types(name)
        live = len(self.sim.world.pods_of(name))
        # the move in flight, and a cover (a mark on an unlisted type's Deployment may be stale); while a cover
        # runs, a move whose origin's replicas were all lost meanwhile is an ordinary replica beside it for
        # a pass, its mark cleared
        in_flight = 1 + any(m.cover and m.to_type in self.listed(name) for m in self.surges_of(name))
        if live > replicas + in_flight + len(rolling):
            self.fail("b", name, f"{live} live pods > {replicas} replicas + {in_flight} + {len(rolling)} rolling types")

    # --- g -----------------------------------------------------------------------------------------
    def plan_written(self, name: str) -> None:
        if name not in self.sim.reconciled or self.stale(name):
            return
        decision = self.sim.outcomes[name].plan.decision
        if decision is None:
            return
        sizes = {d.machine_type: d.replicas for d in self.sim.world.deployments_of(name)}
        wanted = {t: n for t, n in decision.counts.items() if n > 0}
        if sizes != wanted:
            self.fail("g", name, f"the plan decided {wanted} but the Deployments hold {sizes}")

    # --- d -----------------------------------------------------------------------------------------
    def stuck_moved(self, name: str) -> None:
        if self.stale(name):
            return  # the operator is down (it crashed in this step or the last one)
        plan = self.sim.outcomes[name].plan
        decision = plan.decision
        if decision is None or says_no_room(plan):
            return
        fallback = self.sim.apps[name].validated().fallback
        timeout = timedelta(seconds=fallback.unschedulable_timeout_seconds)
        extra = timedelta(seconds=fallback.scale_up_timeout_seconds)
        now = self.sim.world.now
        rolling = self.rolling_types(name)
        listed = self.listed(name)
        deployments = self.sim.world.deployments
        for pod in self.sim.world.pods_of(name):
            if not pod.pending or pod.unschedulable_since is None or pod.created == now:
                continue
            deadline = pod.unschedulable_since + timeout + (extra if pod.scale_up_coming else timedelta())
            if deadline > now:
                continue
            current = pod.deployment in deployments and deployments[pod.deployment].revision == pod.revision
            if pod.machine_type in rolling and not current:
                continue  # a pod of the revision being replaced: the rollout removes it
            if pod.machine_type not in listed and (decision.extras() or rolling & listed):
                continue  # an unlisted type drains one replica at a time, after the listed types' rollouts
            surge, cover = decision.surge, decision.cover
            if pod.machine_type in rolling and (
                    (current and surge is not None) or (surge is not None and surge.from_type == pod.machine_type)
                    or (cover is not None and cover.from_type == pod.machine_type)
                    or any(t.move in (Move.MOVED, Move.RETURNED, Move.DRAINED) and t.from_type == pod.machine_type
                           for t in decision.transitions)):
                continue  # the rollout waits for (or just got) the room of a replica moving away
            since = f"Unschedulable since {pod.unschedulable_since:%H:%M:%S} (deadline {deadline:%H:%M:%S})"
            if name not in self.sim.reconciled:
                self.fail("d", name, f"pod {pod.name} {since}: no reconcile since (requeue_at "
                                     f"{decision.requeue_at and format(decision.requeue_at, '%H:%M:%S')})")
            last, times = self.deferred.get(pod.name, (-2, 0))
            if decision.transitions and last < self.sim.step_no - 1 and times < 2:
                self.deferred[pod.name] = (self.sim.step_no, times + 1)  # one move at a time: the next is due
                continue
            self.fail("d", name, f"pod {pod.name} {since} was not moved")

    # --- e -----------------------------------------------------------------------------------------
    def no_ping_pong(self, name: str) -> None:
        replicas = max(self.replicas_seen.get(name, 0), self.sim.apps[name].validated().replicas)
        self.replicas_seen[name] = replicas
        if name not in self.sim.reconciled:
            return
        outcome = self.sim.outcomes[name]
        decision = outcome.plan.decision
        if outcome.crashed or decision is None:
            return
        moves = self.moves.setdefault(name, Counter())
        now = self.sim.world.now
        surge = decision.surge
        for tr in decision.transitions:
            if tr.move not in COMPLETED_MOVES or tr.from_type is None or tr.to_type is None:
                continue
            if (tr.move == Move.FELL_BACK and surge is not None and surge.since == now
                    and (surge.from_type, surge.to_type) == (tr.from_type, tr.to_type)):
                continue  # only started (make-before-break); completes as Moved
            moves[(tr.from_type, tr.to_type)] += 1
            if moves[(tr.from_type, tr.to_type)] > replicas:
                self.fail("e", name, f"{moves[(tr.from_type, tr.to_type)]} moves {tr.from_type} -> {tr.to_type} "
                                     f"in a stable cluster with {replicas} replicas: {dict(moves)}")

    # --- f -----------------------------------------------------------------------------------------
    def ready_earned(self, name: str) -> None:
        app = self.sim.apps[name]
        ready = ready_condition(app.status)
        if self.stale(name) or ready is None or ready.get("status") != "True":
            return  # (a crash leaves the status of an earlier reconcile: it was not rewritten)
        replicas = app.validated().replicas
        world = self.sim.world
        deployments = world.deployments_of(name)
        surges = self.surges_of(name)
        sizes = sum(d.replicas for d in deployments)
        if sizes != replicas + len(surges):
            self.fail("f", name, f"Ready=True but the Deployments hold {sizes} replicas for {replicas} wanted "
                                 f"and {len(surges)} in flight")
        by_name = world.deployments
        pods = world.pods_of(name)
        old = [p.name for p in pods if p.deployment not in by_name
               or by_name[p.deployment].revision != p.revision]
        if old:
            self.fail("f", name, f"Ready=True while pods {old} run an old template")
        if sum(p.ready for p in pods) < replicas:
            self.fail("f", name, f"Ready=True with {sum(p.ready for p in pods)} Ready pods for {replicas} replicas")
        not_ready = [p for p in pods if not p.ready]
        in_flight = {s.to_type for s in surges}
        if len(not_ready) > len(surges) or any(p.machine_type not in in_flight for p in not_ready):
            self.fail("f", name, f"Ready=True while {[p.name for p in not_ready]} are not Ready")

    # --- c -----------------------------------------------------------------------------------------
    def settled(self) -> None:
        world = self.sim.world
        cache = build_cache(world)
        for name, app in self.sim.apps.items():
            spec = app.validated()
            options = resolve(spec, CATALOGUE).options
            rank = {o.name: i for i, o in enumerate(options)}
            free, _ = free_for(cache, spec, (NAMESPACE, name), self.sim.keys, world)
            plan = self.sim.outcomes[name].plan
            pods = world.pods_of(name)
            rolling = self.rolling_types(name)
            stuck = says_no_room(plan)  # no room anywhere: a rollout cannot finish
            in_flight = len(self.surges_of(name))
            if len(pods) != spec.replicas and not (stuck and len(pods) <= spec.replicas + in_flight + len(rolling)):
                self.fail("c", name, f"settled with {len(pods)} pods for {spec.replicas} replicas")
            if rolling and not stuck:
                self.fail("c", name, f"settled mid-rollout on {sorted(rolling)}")

            by_name = {o.name: o for o in options}

            def room(type_name: str, by_name=by_name, free=free) -> bool:
                return any(n.fits(by_name[type_name]) for n in free.get(type_name, ()))

            for pod in pods:
                if pod.pending:
                    better = [t for t in rank if t != pod.machine_type and room(t)]
                    if better:
                        self.fail("c", name, f"settled with {pod.name} pending while {better} have room")
                    if not stuck:
                        self.fail("c", name, f"settled with {pod.name} pending and no InsufficientCapacity")
                    continue
                if not pod.ready:
                    self.fail("c", name, f"settled with {pod.name} bound but not Ready")
                here = rank.get(pod.machine_type, len(options))
                if here < len(options) and not spec.fallback.return_to_preferred:
                    continue
                better = [t for t, r in rank.items() if r < here and room(t)]
                if better:
                    self.fail("c", name, f"settled with {pod.name} on {pod.machine_type} while {better} have room")
            ready = ready_condition(app.status) or {}
            if all(p.ready and p.machine_type in rank for p in pods) and ready.get("status") != "True":
                self.fail("c", name, f"settled with every replica Ready but Ready={ready.get('status')} "
                                     f"({ready.get('reason')}: {ready.get('message')})")
