"""Scenarios (apps, nodes, steps of events) and the loop that runs them through world and operator.

One step of `dt` seconds, in this order:
1. the clock advances; the step's event happens (a node lost, a user edit, ...);
2. the kubelet: announced nodes arrive, NotReady nodes come back, pods turn Ready;
3. the Deployment controller catches up; 4. the scheduler binds pending pods (creation order);
5. the operator reconciles each app that is due (name order): after its (re)start, when any object
   changed since it last looked, when its spec changed, or when the requeue time its last plan asked
   for has come. It may crash after k writes; the next step it restarts and reconciles every app.
   After each app's writes the Deployment controller catches up (its new pods are the next app's
   claims);
6. the invariants are checked.
After the steps, a quiet phase (no events, no crashes): 5 s after a step that changed something (as
the watch events would wake the operator), else a jump to the next timer (a pod turning Ready, a
requeue the operator asked for, a probe back-off's end), until nothing changed for the longest wait an
app has (unschedulableTimeout, + scaleUpTimeout once a node was announced, + 10 s), no probe back-off
is pending and the world has no timer left (a node coming back or arriving, a pod turning Ready); the
cluster must have settled within QUIET_STEPS steps that change something and QUIET_TIME (invariant c).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from falapp_operator.api import parse_time
from falapp_operator.api.names import DELETION_COST
from falapp_operator.placement import Transition
from tests.sim.driver import App, Outcome, reconcile
from tests.sim.invariants import Invariants, Violation
from tests.sim.objects import EPOCH, NAMESPACE, Pod
from tests.sim.world import World

H100, A100, L40 = "gpu-h100", "gpu-a100", "gpu-l40"
QUIET_STEPS = 100  # most steps that change something in the quiet phase before it counts as not settling
QUIET_TIME = timedelta(hours=2)  # nor may it take longer (the longest probe back-off is 1 h)
QUIET_REACT = 5  # seconds to the next step after one that changed something


# --- what a scenario is made of ---------------------------------------------------------------------
@dataclass(frozen=True)
class AppConfig:
    name: str
    types: tuple[str, ...]  # spec.machineTypes, most preferred first
    replicas: int = 1
    gpus: int = 1
    unschedulable: int = 30  # fallback.unschedulableTimeout, seconds
    scale_up: int = 60  # fallback.scaleUpTimeout, seconds
    returns: bool = True  # fallback.returnToPreferred
    ready_after: int = 10  # seconds from binding to Ready (the kubelet, the image's start-up)

    def spec(self) -> dict:
        return {"image": "registry.example.com/app:1", "machineTypes": list(self.types), "numGpus": self.gpus,
                "replicas": self.replicas,
                "fallback": {"unschedulableTimeout": f"{self.unschedulable}s", "scaleUpTimeout": f"{self.scale_up}s",
                             "returnToPreferred": self.returns}}


@dataclass(frozen=True)
class LoseNode:
    index: int  # of the nodes in creation order, modulo their number


@dataclass(frozen=True)
class AddNode:
    machine_type: str
    gpus: int = 1


@dataclass(frozen=True)
class Cordon:
    index: int
    on: bool = True


@dataclass(frozen=True)
class NodeDown:
    index: int
    seconds: int = 30


@dataclass(frozen=True)
class Flap:
    index: int  # of the Ready pods in creation order, modulo their number
    seconds: int = 10


@dataclass(frozen=True)
class Announce:
    machine_type: str
    node_in: int | None = 30  # seconds until the node arrives; None: it never does


@dataclass(frozen=True)
class SetImage:
    app: str
    image: str


@dataclass(frozen=True)
class Scale:
    app: str
    replicas: int


@dataclass(frozen=True)
class SetTypes:
    app: str
    types: tuple[str, ...]


Event = LoseNode | AddNode | Cordon | NodeDown | Flap | Announce | SetImage | Scale | SetTypes


@dataclass(frozen=True)
class Crash:
    app: str
    after: int  # writes made before the operator dies (the status write is the last one)


@dataclass(frozen=True)
class Step:
    dt: int = 10
    event: Event | None = None
    crash: Crash | None = None


@dataclass(frozen=True)
class Scenario:
    apps: tuple[AppConfig, ...]
    nodes: tuple[tuple[str, int], ...]  # (machine type, GPUs) at the start
    steps: tuple[Step, ...] = ()


# --- running one ---------------------------------------------------------------------------------------
class Sim:
    def __init__(self, scenario: Scenario, trace: bool = False):
        self.scenario = scenario
        self.world = World()
        for machine_type, gpus in scenario.nodes:
            self.world.add_node(machine_type, gpus)
        self.configs = {c.name: c for c in scenario.apps}
        self.apps = {c.name: App(c.name, c.spec()) for c in scenario.apps}
        self.keys = {(NAMESPACE, name) for name in self.apps}
        for c in scenario.apps:
            self.world.ready_delay[c.name] = timedelta(seconds=c.ready_after)
        self.outcomes: dict[str, Outcome] = {}  # each app's latest reconcile (maybe from an earlier step)
        self.reconciled: set[str] = set()  # apps reconciled in the current step
        self.seen: dict[str, tuple[int, int]] = {}  # per app: world version and generation it last read
        self.restarted = True  # the operator (re)started: it reconciles every app
        self.history: list[tuple[int, str, Transition]] = []  # (step, app, move) of complete reconciles
        self.step_no = 0
        self.log: list[str] | None = [] if trace else None
        self.invariants = Invariants(self)

    def run(self) -> Sim:
        try:
            for step in self.scenario.steps:
                self.step(step.dt, step.event, step.crash)
            self.settle()
        except Violation as violation:
            violation.sim = self
            raise
        return self

    def step(self, dt: int, event: Event | None = None, crash: Crash | None = None) -> bool:
        """One step; whether anything changed (world, children or status)."""
        world = self.world
        before = self.invariants.before_step()
        world.begin_step(timedelta(seconds=dt))
        self.step_no += 1
        user = self._event(event) if event is not None else False
        world.kubelet()
        world.sync_deployments()
        world.schedule()
        self.reconciled = set()
        ready: dict[str, int] = {}
        crashed = False
        for name, app in self.apps.items():
            if not self._due(name):
                continue
            self.seen[name] = (world.version, app.generation)
            ready[name] = world.ready_count(name)
            outcome = reconcile(world, app, self.keys, crash.after if crash and crash.app == name else None)
            self.outcomes[name] = outcome
            self.reconciled.add(name)
            if outcome.crashed:  # the operator is gone for the rest of the step
                crashed = True
                break
        self.restarted = crashed
        for name in sorted(self.reconciled):
            outcome = self.outcomes[name]
            if not outcome.crashed and outcome.plan.decision is not None:
                self.history += [(self.step_no, name, t) for t in outcome.plan.decision.transitions]
        if self.log is not None:
            self._trace(dt, event, crash)
        for name in self.reconciled:
            self.invariants.after_reconcile(name, ready[name])
        self.invariants.after_step(before, user)
        return world.flags.changed or any(self.outcomes[n].wrote for n in self.reconciled)

    def _due(self, name: str) -> bool:
        """The controller reconciles an app when it (re)starts, when any object changed (a superset of
        its watch triggers), when the spec changed, and at the requeue time the last plan asked for."""
        last = self.outcomes.get(name)
        if self.restarted or last is None or self.seen.get(name) != (self.world.version, self.apps[name].generation):
            return True
        return last.plan.requeue_at is not None and last.plan.requeue_at <= self.world.now

    def settle(self) -> None:
        """The quiet phase: no events, timers only, until nothing has changed for the longest wait
        (see the module doc). It fails (c) after QUIET_STEPS steps that changed something, or when the
        clock has gone QUIET_TIME past its start."""
        start, quiet_since, changed, changes = self.world.now, self.world.now, True, 0
        writers: set[str] = set()
        while changes < QUIET_STEPS and self.world.now - start < QUIET_TIME:
            now = self.world.now
            until = max([quiet_since + self._longest_wait(), *self._backoffs()])
            if not changed and now >= until and not self.world.timers():
                self.invariants.settled()
                return
            if changed:  # the changes are watch events: the operator looks again right away
                dt = QUIET_REACT
            else:
                timers = self.world.timers() + [o.plan.requeue_at for o in self.outcomes.values()
                                                if o.plan.requeue_at]
                dt = max(int((min([t for t in timers if t > now] + [until]) - now).total_seconds()), 1)
            changed = self.step(dt)
            if changed:
                quiet_since, changes = self.world.now, changes + 1
                writers |= {n for n in self.reconciled if self.outcomes[n].wrote}
        raise Violation("c", self.step_no, ",".join(sorted(writers)) or "*",
                        f"still changing after {changes} quiet steps that changed something, "
                        f"{int((self.world.now - start).total_seconds())} s")

    def _longest_wait(self) -> timedelta:
        """The longest an app may wait before acting on what it sees: unschedulableTimeout (a stuck
        pod, a type cooling down), plus scaleUpTimeout once a node was announced for one of its pods."""
        announced = {p.app for p in self.world.pods.values() if p.scale_up_coming}
        return timedelta(seconds=max((c.unschedulable + (c.scale_up if c.name in announced else 0)
                                      for c in self.configs.values()), default=0) + 10)

    def _backoffs(self) -> list:
        return [parse_time(p["nextAttempt"]) for app in self.apps.values()
                for p in app.status.get("probes") or [] if p.get("nextAttempt")]

    def _event(self, event: Event) -> bool:
        """Make the event happen; whether it was a user action that changed a spec."""
        world = self.world
        nodes = list(world.nodes)
        match event:
            case LoseNode(index) if nodes:
                world.lose_node(nodes[index % len(nodes)])
            case AddNode(machine_type, gpus):
                world.add_node(machine_type, gpus)
            case Cordon(index, on) if nodes:
                world.set_cordon(nodes[index % len(nodes)], on)
            case NodeDown(index, seconds) if nodes:
                world.node_down(nodes[index % len(nodes)], seconds)
            case Flap(index, seconds):
                world.flap(index, seconds)
            case Announce(machine_type, node_in):
                world.announce(machine_type, node_in)
            case SetImage(name, image) if name in self.apps:
                return self._edit(name, image=image)
            case Scale(name, replicas) if name in self.apps:
                return self._edit(name, replicas=replicas)
            case SetTypes(name, types) if name in self.apps:
                return self._edit(name, machineTypes=list(types))
        return False

    def _edit(self, name: str, **changes) -> bool:
        app = self.apps[name]
        generation = app.generation
        app.edit(**changes)
        return app.generation != generation

    # --- tracing (for failure reports) ----------------------------------------------------------------
    def _trace(self, dt: int, event: Event | None, crash: Crash | None) -> None:
        world = self.world
        head = f"#{self.step_no} t={int((world.now - EPOCH).total_seconds())}s (+{dt})"
        extra = " ".join(str(x) for x in (event, crash) if x is not None)
        self.log.append(f"{head} {extra}".rstrip())
        nodes = ", ".join(f"{n.name}:{n.gpus}g{'' if n.ready else ' NotReady'}{' cordoned' if n.cordoned else ''}"
                          for n in world.nodes.values())
        self.log.append(f"    nodes: {nodes or '-'}")
        for name, outcome in self.outcomes.items():
            if name not in self.reconciled:
                self.log.append(f"    {name}: not reconciled")
                continue
            app, decision = self.apps[name], outcome.plan.decision
            pods = " ".join(self._pod_text(p) for p in world.pods_of(name))
            deps = " ".join(f"{d.machine_type}={d.replicas}" for d in world.deployments_of(name))
            moves = ", ".join(f"{t.move.value}({t.from_type}->{t.to_type})" for t in decision.transitions) \
                if decision else ""
            ready = next((c for c in app.status.get("conditions") or [] if c["type"] == "Ready"), None)
            self.log.append(f"    {name} r={app.validated().replicas} deps[{deps}] pods[{pods}]")
            crashed = f" CRASHED after {outcome.applied}/{len(outcome.writes)} writes" if outcome.crashed else ""
            surge = "".join(f" {'cover' if e.cover else 'surge'}={e.from_type}->{e.to_type}"
                            for e in (decision.extras() if decision else ()))
            insufficient = sorted(decision.insufficient) if decision else []
            self.log.append(f"      moves[{moves}]{surge} insufficient={insufficient}"
                            f" Ready={ready['status'] if ready else '?'}/{ready.get('reason') if ready else ''}"
                            f"{crashed}")

    def _pod_text(self, pod: Pod) -> str:
        state = "R" if pod.ready else ("b" if pod.node else ("U" if pod.unschedulable_since else "p"))
        dep = self.world.deployments.get(pod.deployment)
        old = "" if dep is None or dep.revision == pod.revision else "(old)"
        marked = "*" if pod.annotations.get(DELETION_COST) else ""
        return f"{pod.machine_type.removeprefix('gpu-')}#{pod.seq}{state}{old}{marked}"


def run(scenario: Scenario) -> Sim:
    """Run a scenario; on a violated invariant, run it again with a trace and raise with the trace."""
    try:
        return Sim(scenario).run()
    except Violation as violation:
        sim = Sim(scenario, trace=True)
        try:
            sim.run()
        except Violation:
            pass
        traced = Violation(violation.letter, violation.step, violation.app,
                           violation.detail + "\n" + "\n".join(sim.log or []))
        traced.sim = sim
        raise traced from None
