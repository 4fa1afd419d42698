#!/usr/bin/env python3
"""Mass fallback on the local cluster: every node of one machine type removed at once, against the
scheduler alone placing the same pods and the same loss moved by hand, in one run.

Apps prefer [H100, A100] (unschedulableTimeout --timeout, never returning); the A100 pool has room for
all of them. Once every replica is Ready on H100, every H100 node is deleted and the replicas on them
force-deleted (a lost pool: nothing is left to drain; `--pods gc` leaves them bound to the deleted nodes
for the pod garbage collector, as a real node deletion does). Then:
  operator run    from the node deletion request until every replica is Ready on A100; the apps wait
                  their unschedulableTimeout by design, so the compared time is this minus the timeout;
  moved by hand   the operator stopped and the FalApps deleted, the H100 nodes back; the same pods as
                  plain Deployments on H100, the same loss, and the moment the timeout runs out
                  (from the last node's deletion, as the operator counts) the operator's writes of
                  the move with nothing to decide, no status and no events: each app's A100
                  Deployment created at its full size, then its H100 one deleted (in the
                  background, its pods left to the garbage collector: the operator deletes those
                  no node runs itself, with their ReplicaSets, which the hand does not); until
                  every replica is Ready on A100, less the timeout. What the drain costs the
                  control plane without the operator;
  scheduler alone the same number of replicas as plain Deployments on A100 with the operator's own
                  pod template (the same pods) on a quiet cluster, from the first create request
                  until every pod is Ready.
The runs go in that order in every round. Prints the three, the operator's time against the scheduler
alone (the target) and against the move by hand, each stage, the control plane's, the operator's and the
benchmark's own CPU, and writes Ready-over-time of the three to a PNG.

    .venv/bin/python bench/mass_fallback.py [--apps 100] [--replicas 4] [--nodes 100] [--timeout 3s] [--pods force|gc]
        [--rounds 1]

Needs `hack/cluster.sh up`; starts its own operator unless --external-operator (then the runs by hand and
of the scheduler alone share the machine with it, its watches included). Removes what it created.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

from common import (
    CLOCK_STEP_LIMIT,
    DOCS,
    POOL_LABEL,
    TYPE_LABEL,
    Cluster,
    ControlPlaneCPU,
    Operator,
    ReadyPods,
    WallClock,
    fake_node,
    load,
    metric_samples,
    one_gpu_app,
    plain_deployment,
    pod_ready,
    pool_machine_type,
    pyplot,
    quiet_machine,
    save_plot,
    until,
)

WRITES = "falapp_api_writes_total"
STAGES = (("replaced", "replacements created on the lost type (controller manager)"),
          ("unschedulable", "replacements seen Unschedulable (scheduler)"),
          ("gone", "replacements on the lost type deleted (controller manager)"),
          ("asked", "replicas the next type's Deployments ask for (operator, by hand)"),
          ("replicasets", "replicas the next type's ReplicaSets ask for (controller manager)"),
          ("created", "pods created on the next type (controller manager)"),
          ("bound", "pods bound (scheduler)"),
          ("ready", "pods Ready (KWOK)"))


class Stages:
    """Where a run's time goes: how many replicas have reached each stage (STAGES) since the nodes were
    removed (since the first create, alone), over time, as the watches see them."""

    def __init__(self, first: str, next_: str):
        self.first, self.next = first, next_
        self.since: float | None = None  # set when the nodes are removed
        self.lost: set[str] = set()  # pods there were before
        self.seen: dict[str, set[str]] = {name: set() for name, _ in STAGES}
        self.asked: dict[str, dict[str, int]] = {"Deployment": {}, "ReplicaSet": {}}  # next type's -> spec.replicas
        self.series: dict[str, list[tuple[float, int]]] = {name: [] for name, _ in STAGES}

    def _mark(self, stage: str, key: str, now: float) -> None:
        if key not in self.seen[stage]:
            self.seen[stage].add(key)
            self.series[stage].append((now - self.since, len(self.seen[stage])))

    def observe_pod(self, event: str, pod: dict, now: float) -> None:
        name, kind = pod["metadata"]["name"], (pod["metadata"].get("labels") or {}).get(TYPE_LABEL)
        if self.since is None:
            self.lost.add(name)
            return
        if name in self.lost:
            return
        if event == "DELETED":
            if name in self.seen["replaced"]:
                self._mark("gone", name, now)
            return
        if kind == self.first:
            self._mark("replaced", name, now)
        if kind == self.first and any(c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
                                      for c in (pod.get("status") or {}).get("conditions") or []):
            self._mark("unschedulable", name, now)
        elif kind == self.next:
            self._mark("created", name, now)
            if pod["spec"].get("nodeName"):
                self._mark("bound", name, now)
            if pod_ready(pod):
                self._mark("ready", name, now)

    def observe_deployment(self, event: str, deployment: dict, now: float) -> None:
        self._observe_asking("Deployment", "asked", event, deployment, now)

    def observe_replicaset(self, event: str, replicaset: dict, now: float) -> None:
        self._observe_asking("ReplicaSet", "replicasets", event, replicaset, now)

    def _observe_asking(self, kind: str, stage: str, event: str, obj: dict, now: float) -> None:
        if (obj["metadata"].get("labels") or {}).get(TYPE_LABEL) != self.next:
            return
        asking = self.asked[kind]
        asking[obj["metadata"]["name"]] = 0 if event == "DELETED" else obj["spec"].get("replicas", 0)
        asked = sum(asking.values())
        if self.since is not None and asked > (self.series[stage][-1][1] if self.series[stage] else 0):
            self.series[stage].append((now - self.since, asked))

    def report(self, total: int) -> dict:
        out = {}
        for name, _ in STAGES:
            series = self.series[name]
            half = next((t for t, n in series if n >= total / 2), None)
            out[name] = {"count": series[-1][1] if series else 0,
                         "half_s": None if half is None else round(half, 2),
                         "last_s": round(series[-1][0], 2) if series else None}
        return out


def stop_watching(stop: asyncio.Event, watches: list[asyncio.Task]) -> None:
    stop.set()
    for w in watches:
        w.cancel()


class MassFallback:
    def __init__(self, cluster: Cluster, operator: Operator | None, apps: int, replicas: int, nodes: int,
                 timeout_s: float, force_delete_pods: bool = True):
        self.cluster, self.operator = cluster, operator
        self.apps, self.replicas, self.node_count, self.timeout_s = apps, replicas, nodes, timeout_s
        self.force_delete_pods = force_delete_pods
        rid = uuid.uuid4().hex[:6]
        self.namespace = f"massfb-{rid}"
        self.first, self.next = f"massfb{rid}-h100", f"massfb{rid}-a100"
        self.total = apps * replicas

    async def setup(self) -> None:
        c = self.cluster
        if self.total > 8 * self.node_count:
            raise ValueError(f"{self.total} one-GPU replicas do not fit on {self.node_count} nodes of 8 GPUs")
        c.install_crds()
        c.apply([pool_machine_type(self.first), pool_machine_type(self.next)])
        await c.create([fake_node(f"{pool}-{i}", pool) for pool in (self.first, self.next)
                        for i in range(self.node_count)])
        await c.wait_nodes_ready(f"{POOL_LABEL} in ({self.first},{self.next})", 2 * self.node_count, 300)
        c.k("create", "namespace", self.namespace)

    def watch_stages(self, pods: ReadyPods, stages: Stages, stop: asyncio.Event) -> list[asyncio.Task]:
        """The namespace's pods, Deployments and ReplicaSets, as `pods` and `stages` count them."""
        c = self.cluster

        def observe_pod(event: str, pod: dict, now: float) -> None:
            pods.observe(event, pod, now)
            stages.observe_pod(event, pod, now)

        return [asyncio.create_task(c.watch("v1", "Pod", self.namespace, observe_pod, stop)),
                asyncio.create_task(c.watch("apps/v1", "Deployment", self.namespace, stages.observe_deployment, stop)),
                asyncio.create_task(c.watch("apps/v1", "ReplicaSet", self.namespace, stages.observe_replicaset, stop))]

    def run_result(self, series: list[tuple[float, int]], stages: Stages, cpu: ControlPlaneCPU,
                   cpu_before: dict[str, float], bench_cpu_before: float) -> dict:
        """What every run reports: Ready over time (`series`, seconds since its start), when all and half
        were Ready, each stage, and the CPU since the readings taken at its start."""
        return {"all_ready_s": round(series[-1][0], 2),
                "half_ready_s": round(next(t for t, n in series if n >= self.total / 2), 2),
                "stages": stages.report(self.total),
                "control_plane_cpu_s": ControlPlaneCPU.spent(cpu_before, cpu.read()), "series": series,
                "bench_cpu_s": round(time.process_time() - bench_cpu_before, 1)}

    async def remove_first_type(self, removed: float) -> tuple[float, asyncio.Task[float]]:
        """Every node of the first type deleted at once: when the last request was answered, in seconds
        since `removed`; and their pods being force-deleted (unless left to the pod garbage collector),
        a task ending when the last request was answered."""
        c = self.cluster
        await c.delete_all("v1", "Node", selector=f"{POOL_LABEL}={self.first}")
        nodes_deleted = time.time() - removed

        async def pods() -> float:
            if self.force_delete_pods:
                await c.delete_all("v1", "Pod", self.namespace, selector=f"{TYPE_LABEL}={self.first}", grace=0)
            deleted = time.time() - removed
            print(f"  nodes deleted in {nodes_deleted:.2f}s, their pods "
                  + (f"by {deleted:.2f}s" if self.force_delete_pods else "left to the pod garbage collector"),
                  flush=True)
            return deleted
        return nodes_deleted, asyncio.create_task(pods())

    async def operator_run(self) -> dict:
        c, stop = self.cluster, asyncio.Event()
        pods, stages = ReadyPods(TYPE_LABEL), Stages(self.first, self.next)

        watches = self.watch_stages(pods, stages, stop)
        try:
            types = [self.first, self.next]
            await c.create([one_gpu_app(f"app-{i}", self.namespace, types, self.replicas, self.timeout_s)
                            for i in range(self.apps)])
            placed = await until(lambda: pods.counts[self.first] == self.total, 600,
                                 f"{self.total} replicas Ready on {self.first}", watches)
            print(f"  {self.total} replicas Ready on {self.first} in {placed:.1f}s; removing its {self.node_count} "
                  "nodes", flush=True)
            await asyncio.sleep(5)  # status writes of the start settle
            print(f"  {await quiet_machine()}", flush=True)
            cpu, operator_cpu = ControlPlaneCPU(), self.operator.cpu_seconds() if self.operator else 0.0
            writes_before = metric_samples(self.operator.metrics(), WRITES) if self.operator else {}
            reconciles_before = (self.operator.metric("falapp_reconciles_total") or 0) if self.operator else 0
            before, bench_cpu = cpu.read(), time.process_time()
            removed = stages.since = time.time()
            _, pods_deleted = await self.remove_first_type(removed)
            deleted = await pods_deleted
            await until(lambda: pods.counts[self.next] == self.total, 600,
                        f"{self.total} replicas Ready on {self.next}", watches)
            result = {**self.run_result([(t - removed, n) for t, n in pods.series[self.next]], stages,
                                        cpu, before, bench_cpu),
                      "delete_requests_s": round(deleted, 2), "asked_series": stages.series["asked"]}
            if self.operator:
                result["operator_cpu_s"] = round(self.operator.cpu_seconds() - operator_cpu, 1)
                result["operator_reconciles"] = int((self.operator.metric("falapp_reconciles_total") or 0)
                                                    - reconciles_before)
                result["operator_writes"] = {labels: int(n - writes_before.get(labels, 0)) for labels, n
                                             in metric_samples(self.operator.metrics(), WRITES).items()
                                             if n != writes_before.get(labels, 0)}
            return result
        finally:
            stop_watching(stop, watches)

    async def clear_operator_run(self) -> None:
        """The operator stopped and the FalApps deleted, their pods gone."""
        if self.operator:
            self.operator.stop()
        await self.cluster.delete_all("fal.ai/v1alpha1", "FalApp", self.namespace)
        await self.cluster.wait_gone("v1", "Pod", self.namespace)

    async def by_hand_run(self) -> dict:
        """The same loss of the same pods as plain Deployments, moved by hand the moment the timeout runs
        out (counted, as the operator counts, from when the type's last node was gone) with nothing to
        decide: the writes of the operator's moves (each app's Deployment on the next type created at its
        full size, then the lost type's deleted) without their wait, history, status or events, nor the
        deletion of the lost type's waiting pods and their ReplicaSets (the garbage collector's here)."""
        c, stop = self.cluster, asyncio.Event()
        pods, stages = ReadyPods(TYPE_LABEL), Stages(self.first, self.next)
        await c.create([fake_node(f"{self.first}-{i}", self.first) for i in range(self.node_count)])
        await c.wait_nodes_ready(f"{POOL_LABEL}={self.first}", self.node_count, 300)
        watches = self.watch_stages(pods, stages, stop)
        lost = [plain_deployment(f"hand-{i}", self.namespace, self.first, self.replicas) for i in range(self.apps)]
        grown = [plain_deployment(f"hand-{i}", self.namespace, self.next, self.replicas) for i in range(self.apps)]
        pods_deleted: asyncio.Task[float] | None = None
        try:
            await c.create(lost)
            await until(lambda: pods.counts[self.first] == self.total, 600,
                        f"{self.total} plain pods Ready on {self.first}", watches)
            await asyncio.sleep(5)  # as in the operator run
            print(f"  {await quiet_machine()}", flush=True)
            cpu = ControlPlaneCPU()
            before, bench_cpu = cpu.read(), time.process_time()
            removed = stages.since = time.time()
            nodes_gone, pods_deleted = await self.remove_first_type(removed)
            # the operator's rule: the timeout runs from when the type has no node left (the pods' deletion
            # goes on meanwhile, as in the operator run)
            await asyncio.sleep(max(0.0, removed + nodes_gone + self.timeout_s - time.time()))
            await c.create(grown)  # the growth first, as the operator sends it
            await c.delete_all("apps/v1", "Deployment", self.namespace, selector=f"{TYPE_LABEL}={self.first}")
            moved = time.time() - removed
            await pods_deleted
            await until(lambda: pods.counts[self.next] == self.total, 600,
                        f"{self.total} plain pods Ready on {self.next}", watches)
            return {**self.run_result([(t - removed, n) for t, n in pods.series[self.next]], stages,
                                      cpu, before, bench_cpu), "moved_s": round(moved, 2)}
        finally:
            stop_watching(stop, watches)
            if pods_deleted is not None and not pods_deleted.done():  # the run failed before it ended
                pods_deleted.cancel()
                await asyncio.gather(pods_deleted, return_exceptions=True)
            await c.delete_all("apps/v1", "Deployment", self.namespace)
            await c.wait_gone("v1", "Pod", self.namespace)

    async def scheduler_run(self) -> dict:
        c, stop = self.cluster, asyncio.Event()
        pods, stages = ReadyPods(TYPE_LABEL), Stages(self.first, self.next)

        watches = self.watch_stages(pods, stages, stop)
        deployments = [plain_deployment(f"plain-{i}", self.namespace, self.next, self.replicas)
                       for i in range(self.apps)]
        try:
            print(f"  {await quiet_machine()}", flush=True)
            cpu = ControlPlaneCPU()
            before, bench_cpu = cpu.read(), time.process_time()
            started = stages.since = time.time()
            await c.create(deployments)
            created = time.time() - started
            await until(lambda: pods.total() == self.total, 600, f"{self.total} plain pods Ready", watches)
            return {**self.run_result([(t - started, n) for t, n in pods.total_series], stages,
                                      cpu, before, bench_cpu), "create_requests_s": round(created, 2)}
        finally:
            stop_watching(stop, watches)

    async def cleanup(self) -> None:
        await self.cluster.remove_pools(self.namespace, (self.first, self.next))


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    timeout = result["timeout_s"]
    op, base = result["operator"], result["scheduler_alone"]
    fig, ax = plt.subplots(figsize=(8, 4.5))

    def line(series, shift, **style):
        xs, ys = [0.0], [0]
        for t, n in series:
            xs += [t + shift, t + shift]
            ys += [ys[-1], n]
        ax.plot(xs, ys, **style)

    line(op["asked_series"], 0, color="tab:blue", linestyle=":", alpha=0.6,
         label="operator run: replicas the A100 Deployments ask for")
    line(op["series"], 0, color="tab:blue",
         label=f"operator: H100 nodes removed at 0, all Ready on A100 at {op['all_ready_s']:.1f} s")
    line(result["by_hand"]["series"], 0, color="tab:green", linestyle="-.",
         label=f"moved by hand as the timeout ran out (plain Deployments): {result['by_hand']['all_ready_s']:.1f} s")
    line(base["series"], timeout, color="tab:orange", linestyle="--",
         label=f"scheduler alone (plain Deployments on A100, created at {timeout:g} s): {base['all_ready_s']:.1f} s")
    ax.axvline(timeout, color="grey", linestyle=":", label=f"unschedulableTimeout {timeout:g} s")
    save_plot(plt, fig, ax, path, "seconds since every H100 node was removed", "replicas Ready on A100",
              f"{result['replicas']} replicas of {result['apps']} apps lose their machine type:\n"
              f"{result['ratio']:.2f}x the scheduler alone, {result['ratio_to_by_hand']:.2f}x a move by hand")


async def measure(args: argparse.Namespace) -> dict:
    """One round: a fresh namespace and pools, the operator run, the move by hand, then the scheduler alone."""
    cluster = Cluster()
    operator = None if args.external_operator else Operator(cluster.kubeconfig, "mass-fallback", args.operator_rev)
    clock = WallClock()
    async with cluster:
        bench = MassFallback(cluster, operator, args.apps, args.replicas, args.nodes, float(args.timeout.rstrip("s")),
                             force_delete_pods=args.pods == "force")
        try:
            await bench.setup()
            if operator:
                operator.start()
            result = {"apps": args.apps, "replicas": bench.total, "nodes_removed": args.nodes, "pods": args.pods,
                      "timeout_s": bench.timeout_s, "load_before": load(),
                      "operator_revision": operator.revision if operator else "external"}
            result["operator"] = await bench.operator_run()
            result["load_operator_run"] = load()
            await bench.clear_operator_run()
            result["by_hand"] = await bench.by_hand_run()
            result["scheduler_alone"] = await bench.scheduler_run()
        finally:
            if operator:
                operator.stop()
            await bench.cleanup()
    result["load_after"] = load()
    result["clock_step_s"] = clock.stepped()
    compared = result["operator"]["all_ready_s"] - bench.timeout_s
    by_hand = result["by_hand"]["all_ready_s"] - bench.timeout_s
    alone = result["scheduler_alone"]["all_ready_s"]
    result["operator_minus_timeout_s"] = round(compared, 2)
    result["ratio"] = round(compared / alone, 2)  # the target's
    result["by_hand_minus_timeout_s"] = round(by_hand, 2)
    result["ratio_to_by_hand"] = round(compared / by_hand, 2)
    result["by_hand_ratio"] = round(by_hand / alone, 2)
    return result


async def measure_rounds(args: argparse.Namespace) -> dict:
    """`--rounds` rounds one after the other (on 2 shared cores one round's ratio varies by a fifth);
    the round with the median ratio (the target's) is reported in full, with every round's ratios and
    the median of each."""
    rounds: list[dict] = []
    discarded: list[dict] = []  # rounds across which the wall clock stepped: their times are off
    while len(rounds) < args.rounds and len(discarded) <= args.rounds:
        result = await measure(args)
        if abs(result["clock_step_s"]) > CLOCK_STEP_LIMIT:
            discarded.append({"ratio": result["ratio"], "clock_step_s": result["clock_step_s"]})
            print(f"  the wall clock stepped by {result['clock_step_s']:.1f}s during this round (ratio "
                  f"{result['ratio']:.2f}x): its times are off; it is not counted", flush=True)
            continue
        rounds.append(result)
        if args.rounds > 1:
            print(f"  round {len(rounds)}/{args.rounds}: ratio {rounds[-1]['ratio']:.2f}x", flush=True)
    if not rounds:
        raise RuntimeError(f"the wall clock stepped in every round ({discarded}): nothing can be measured")
    median = sorted(rounds, key=lambda r: r["ratio"])[(len(rounds) - 1) // 2]
    ratios = ("ratio", "ratio_to_by_hand", "by_hand_ratio")
    return {**median, "discarded_rounds": discarded,
            "medians": {k: sorted(r[k] for r in rounds)[(len(rounds) - 1) // 2] for k in ratios},
            "rounds": [{k: r[k] for k in (*ratios, "operator_minus_timeout_s", "by_hand_minus_timeout_s")}
                       | {"scheduler_alone_s": r["scheduler_alone"]["all_ready_s"]} for r in rounds]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=4, help="replicas per app")
    parser.add_argument("--nodes", type=int, default=100, help="nodes of each type (8 GPUs each)")
    parser.add_argument("--timeout", default="3s", help="unschedulableTimeout of every app (seconds, e.g. 3s)")
    parser.add_argument("--pods", choices=("force", "gc"), default="force",
                        help="the lost nodes' pods: force-deleted with them (then replaced on the lost type), or "
                             "left to the pod garbage collector, as after a real node deletion (it takes ~40 s)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds to run; the one with the median ratio is "
                        "reported (and plotted)")
    parser.add_argument("--plot", default=str(DOCS / "mass-fallback.png"), help="PNG to write; 'none' for none")
    parser.add_argument("--external-operator", action="store_true", help="an operator is already running")
    parser.add_argument("--operator-rev", default=None, help="run operator/ as of this git revision (e.g. HEAD) "
                        "instead of the working tree")
    args = parser.parse_args()
    result = asyncio.run(measure_rounds(args))
    series = {k: result[k].pop("series") for k in ("operator", "by_hand", "scheduler_alone")}
    asked = result["operator"].pop("asked_series")
    print(json.dumps(result, indent=2))
    op, base = result["operator"], result["scheduler_alone"]
    print(f"\n{result['replicas']} replicas of {result['apps']} apps, {result['nodes_removed']} H100 nodes removed at "
          f"once, unschedulableTimeout {result['timeout_s']:g}s; load {result['load_before']} before, "
          f"{result['load_operator_run']} after the operator run")
    print(f"  operator:        all Ready on A100 {op['all_ready_s']:.1f}s after the nodes went "
          f"({result['operator_minus_timeout_s']:.1f}s beyond the timeout; half at {op['half_ready_s']:.1f}s)")
    print(f"  scheduler alone: all Ready {base['all_ready_s']:.1f}s after the first create (half at "
          f"{base['half_ready_s']:.1f}s)")
    hand = result["by_hand"]
    print(f"  moved by hand:   all Ready on A100 {hand['all_ready_s']:.1f}s after the nodes went "
          f"({result['by_hand_minus_timeout_s']:.1f}s beyond the timeout; half at {hand['half_ready_s']:.1f}s; "
          f"moved by {hand['moved_s']:.1f}s)")
    for key, what in (("ratio", "(operator - timeout) / scheduler alone, the target's"),
                      ("ratio_to_by_hand", "(operator - timeout) / (moved by hand - timeout)"),
                      ("by_hand_ratio", "(moved by hand - timeout) / scheduler alone")):
        each = ", ".join(f"{r[key]:.2f}x" for r in result["rounds"])
        print(f"  {what}: {result[key]:.2f}x"
              + (f" (this round; median of {len(result['rounds'])} rounds {result['medians'][key]:.2f}x: {each})"
                 if len(result["rounds"]) > 1 else ""))
    if result["discarded_rounds"]:
        print("  not counted, the wall clock having stepped across them: " + ", ".join(
            f"a round of {d['ratio']:.2f}x (a step of {d['clock_step_s']:.1f}s)" for d in result["discarded_rounds"]))
    print("  stage by stage (replicas reaching it; seconds since the nodes went in the operator run and by "
          "hand, since the first create alone):")

    def at(stage: dict) -> str:
        return f"half at {'-' if stage['half_s'] is None else str(stage['half_s']) + 's'}, last at {stage['last_s']}s"
    for name, label in STAGES:
        stage, by_hand, alone = op["stages"][name], hand["stages"][name], base["stages"][name]
        print(f"    {label:<66} {stage['count']:>4}  {at(stage)}"
              + (f"  (by hand: {at(by_hand)})" if by_hand["count"] else "")
              + (f"  (alone: {at(alone)})" if alone["count"] else ""))
    if args.plot != "none":
        for k, s in series.items():
            result[k]["series"] = s
        result["operator"]["asked_series"] = asked
        plot(result, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
