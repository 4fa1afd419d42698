#!/usr/bin/env python3
"""Scale on the local cluster: many FalApps and replicas on many fake nodes, against the same replicas as
plain Deployments (one per app, no operator), in one run.

Four machine types of --nodes/4 nodes each; app i prefers three of them starting at type i mod 4, and
its first choice has room, so all runs place every replica on the same type. In order:
  scheduler alone  no operator running: --apps plain Deployments of --replicas pods each, the operator's
                   own Deployment for the app's first type made by hand (the same pods: requests, node
                   selector, toleration, labels, security settings), from the first create request
                   until every pod is Ready; then they are deleted (and their pods gone);
  operator         the operator started (its startup LISTs are not counted), --apps FalApps created at
                   once, from the first create request until every replica is Ready, and until every
                   FalApp says Ready; then --idle seconds with nothing changing; then the operator is
                   stopped and the apps deleted (and their pods gone);
  scheduler again  the first run once more. The same plain run takes 50-68 s from run to run (the run
                   after was the faster in four of five runs, by 1-8 s, and 13 s slower in one), and
                   the operator's run always comes second: it is compared with the mean of a plain run
                   before it and one after it, not with one of them.
With --rounds N the operator's run and the plain run after it are repeated N times (each plain run is
the one after a round and the one before the next); the round with the median ratio is reported in full,
every round's times and ratio besides, and all operator runs against all plain runs (pooled).
Prints the times and the ratios (against the mean, and against each plain run), the operator's RSS, its
API writes and reads per minute when idle, its CPU seconds per 1,000 reconciles, and the control plane's
CPU in each run; writes Ready-over-time of the runs to a PNG (--plot).

    .venv/bin/python bench/scale.py [--apps 1000] [--replicas 5] [--nodes 2000] [--idle 60] [--rounds 1]

Needs `hack/cluster.sh up`; starts its own operator unless --external-operator (then the operator keeps
running through both plain runs, watching their pods: they share the machine with it, which makes them
slower and the ratio kinder; the operator's own numbers are not measured). Removes what it created.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
import uuid
from pathlib import Path

from common import (
    APP_LABEL,
    BASELINE_APP_LABEL,
    CLOCK_STEP_LIMIT,
    POOL_LABEL,
    Cluster,
    ControlPlaneCPU,
    Operator,
    ReadyPods,
    WallClock,
    app_ready,
    fake_node,
    load,
    machine_busy,
    machine_cpu_seconds,
    metric_samples,
    metric_value,
    one_gpu_app,
    plain_deployment,
    pool_machine_type,
    pyplot,
    quiet_machine,
    save_plot,
    until,
)

POOLS = ("a", "b", "c", "d")
RSS_SAMPLE_S = 30  # seconds between the operator's RSS samples while idle
SETTLE_S = 10  # after everything is Ready, before the idle window: the last status writes land


class Progress:
    """When each object of a run first reached each stage (FalApp made, Deployment made, ReplicaSet asking,
    pod created, bound), from the namespace's watches: where the time between the creates and Ready goes."""

    STAGES = ("falapps", "deployments", "replicasets", "pods created", "pods bound")

    def __init__(self) -> None:
        self.first: dict[str, dict[str, float]] = {stage: {} for stage in self.STAGES}

    def _mark(self, stage: str, name: str, now: float) -> None:
        self.first[stage].setdefault(name, now)

    def observe_falapp(self, event: str, app: dict, now: float) -> None:
        self._mark("falapps", app["metadata"]["name"], now)

    def observe_deployment(self, event: str, deployment: dict, now: float) -> None:
        self._mark("deployments", deployment["metadata"]["name"], now)

    def observe_replicaset(self, event: str, replicaset: dict, now: float) -> None:
        if (replicaset.get("spec") or {}).get("replicas"):
            self._mark("replicasets", replicaset["metadata"]["name"], now)

    def observe_pod(self, event: str, pod: dict, now: float) -> None:
        self._mark("pods created", pod["metadata"]["name"], now)
        if (pod.get("spec") or {}).get("nodeName"):
            self._mark("pods bound", pod["metadata"]["name"], now)

    def summary(self, started: float) -> dict[str, str]:
        """Per stage: seconds after `started` when half and when all had reached it."""
        out = {}
        for stage, times in self.first.items():
            ordered = sorted(t - started for t in times.values())
            if ordered:
                out[stage] = f"{ordered[len(ordered) // 2]:.1f} / {ordered[-1]:.1f} s ({len(ordered)})"
        return out


class Scale:
    def __init__(self, cluster: Cluster, operator: Operator | None, apps: int, replicas: int, nodes: int):
        self.cluster, self.operator = cluster, operator
        self.apps, self.replicas, self.node_count = apps, replicas, nodes
        rid = uuid.uuid4().hex[:6]
        self.prefix = f"scale{rid}"
        self.types = [f"{self.prefix}-{p}" for p in POOLS]
        self.total = apps * replicas
        self.namespaces: list[str] = []

    def preference(self, i: int) -> list[str]:
        start = i % len(self.types)
        return (self.types[start:] + self.types[:start])[:3]

    async def setup(self) -> None:
        c = self.cluster
        c.install_crds()
        c.apply([pool_machine_type(t) for t in self.types])
        started = time.monotonic()
        await c.create([fake_node(f"{self.prefix}-n{i}", self.types[i % len(self.types)])
                        for i in range(self.node_count)])
        await c.wait_nodes_ready(f"{POOL_LABEL} in ({','.join(self.types)})", self.node_count, 900)
        print(f"  {self.node_count} nodes Ready in {time.monotonic() - started:.0f}s", flush=True)

    async def scheduler_alone(self, run: str) -> dict:
        c, stop = self.cluster, asyncio.Event()
        namespace = self.namespace(run)
        pods, progress = ReadyPods(BASELINE_APP_LABEL), Progress()
        watches = self.watch_progress(namespace, pods, progress, stop)
        try:
            quiet = await quiet_machine()
            print(f"  {quiet}", flush=True)
            cpu = ControlPlaneCPU()
            before, machine_before = cpu.read(), machine_cpu_seconds()
            started = time.time()
            await c.create([plain_deployment(f"plain-{i}", namespace, self.preference(i)[0], self.replicas)
                            for i in range(self.apps)])
            created = time.time() - started
            await until(lambda: pods.total() == self.total, 3600, f"{self.total} plain pods Ready", watches)
            series = [(t - started, n) for t, n in pods.total_series]
            result = {"before_start": quiet, "create_requests_s": round(created, 1),
                      "all_ready_s": round(series[-1][0], 1),
                      "stages_half_all": progress.summary(started),
                      "control_plane_cpu_s": ControlPlaneCPU.spent(before, cpu.read()),
                      **machine_use(machine_before, started), "series": series}
        finally:
            stop.set()
            for w in watches:
                w.cancel()
        print(f"  scheduler alone: {self.total} pods Ready in {result['all_ready_s']:.0f}s; deleting them", flush=True)
        await self.remove(namespace)
        return result

    def namespace(self, run: str) -> str:
        """A new namespace for one run, removed at the end if a run left it."""
        namespace = f"{self.prefix}-{run}"
        self.cluster.k("create", "namespace", namespace)
        self.namespaces.append(namespace)
        return namespace

    async def remove(self, namespace: str) -> None:
        """The namespace deleted, and gone: its pods, and the rest (the FalApps, Deployments, ReplicaSets,
        Events) too, so their deletion does not run into the next run."""
        self.cluster.k("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")
        await self.cluster.wait_gone("v1", "Pod", namespace, within=1800)
        await self.cluster.wait_gone("v1", "Namespace", selector=f"kubernetes.io/metadata.name={namespace}",
                                     within=1800)

    def watch_progress(self, namespace: str, pods: ReadyPods, progress: Progress,
                       stop: asyncio.Event) -> list[asyncio.Task]:
        c = self.cluster

        def observe_pod(event: str, pod: dict, now: float) -> None:
            pods.observe(event, pod, now)
            progress.observe_pod(event, pod, now)

        return [asyncio.create_task(c.watch("v1", "Pod", namespace, observe_pod, stop)),
                asyncio.create_task(c.watch("apps/v1", "Deployment", namespace, progress.observe_deployment, stop)),
                asyncio.create_task(c.watch("apps/v1", "ReplicaSet", namespace, progress.observe_replicaset, stop))]

    async def with_operator(self, idle: float, run: str) -> dict:
        c, stop, op = self.cluster, asyncio.Event(), self.operator
        namespace = self.namespace(run)
        pods, progress = ReadyPods(APP_LABEL), Progress()
        apps_ready: dict[str, float] = {}

        def observe_app(event: str, app: dict, now: float) -> None:
            progress.observe_falapp(event, app, now)
            if event != "DELETED" and app_ready(app):
                apps_ready.setdefault(app["metadata"]["name"], now)

        watches = [*self.watch_progress(namespace, pods, progress, stop),
                   asyncio.create_task(c.watch("fal.ai/v1alpha1", "FalApp", namespace, observe_app, stop))]
        result: dict = {}
        try:
            result["before_start"] = await quiet_machine()
            print(f"  {result['before_start']}", flush=True)
            cpu = ControlPlaneCPU()
            before, machine_before = cpu.read(), machine_cpu_seconds()
            if op:
                op_cpu, op_reconciles = op.cpu_seconds(), op.metric("falapp_reconciles_total") or 0
                metrics_before = op.metrics()  # one scrape: the counts below are of the same moment
                writes_before = metric_samples(metrics_before, "falapp_api_writes_total")
                waits_before = {m: metric_samples(metrics_before, f"falapp_api_request_wait_seconds_{m}")
                                for m in ("sum", "count")}
            started = time.time()
            await c.create([one_gpu_app(f"app-{i}", namespace, self.preference(i), self.replicas)
                            for i in range(self.apps)])
            result["create_requests_s"] = round(time.time() - started, 1)
            await until(lambda: pods.total() == self.total, 3600, f"{self.total} replicas Ready", watches)
            series = [(t - started, n) for t, n in pods.total_series]
            result["all_ready_s"] = round(series[-1][0], 1)
            print(f"  operator: {self.total} replicas Ready in {result['all_ready_s']:.0f}s", flush=True)
            await until(lambda: len(apps_ready) == self.apps, 3600, f"{self.apps} FalApps Ready", watches)
            result["apps_ready_s"] = round(max(apps_ready.values()) - started, 1)
            result["stages_half_all"] = progress.summary(started)
            result["control_plane_cpu_s"] = ControlPlaneCPU.spent(before, cpu.read())
            result.update(machine_use(machine_before, started))
            if op:  # over the same span as the components'
                result["operator_cpu_s_until_ready"] = round(op.cpu_seconds() - op_cpu, 1)
                result["request_wait_s"] = request_waits(op.metrics(), waits_before)
            result["series"] = series
            if op:
                await asyncio.sleep(SETTLE_S)
                reconciles = (op.metric("falapp_reconciles_total") or 0) - op_reconciles
                result["reconciles"] = int(reconciles)
                result["operator_cpu_s"] = round(op.cpu_seconds() - op_cpu, 1)
                result["cpu_s_per_1000_reconciles"] = round(result["operator_cpu_s"] * 1000 / max(reconciles, 1), 1)
                result["writes"] = {labels: int(n - writes_before.get(labels, 0)) for labels, n
                                    in metric_samples(op.metrics(), "falapp_api_writes_total").items()
                                    if n != writes_before.get(labels, 0)}
                result.update(await self.idle(idle))
        finally:
            stop.set()
            for w in watches:
                w.cancel()
        return result

    async def idle(self, seconds: float) -> dict:
        """API writes and reads per minute (and which), CPU and RSS of the operator while nothing changes."""
        op = self.operator
        before, cpu, started = op.metrics(), op.cpu_seconds(), time.monotonic()
        rss = [round(op.rss_mib(), 1)]  # every RSS_SAMPLE_S: when it grows (a resync's LISTs, or steadily)
        while (left := seconds - (time.monotonic() - started)) > 0:
            await asyncio.sleep(min(RSS_SAMPLE_S, left))
            rss.append(round(op.rss_mib(), 1))
        after, per_min = op.metrics(), 60 / seconds
        out: dict = {"idle_s": seconds, "idle_cpu_percent": round((op.cpu_seconds() - cpu) * 100 / seconds, 1),
                     "rss_mib": rss[-1], "rss_mib_idle_start": rss[0], "rss_mib_idle_max": max(rss),
                     "rss_mib_idle_samples": rss}
        for what, name in (("writes", "falapp_api_writes_total"), ("reads", "falapp_api_reads_total")):
            if metric_value(after, name) is None:
                out[f"idle_{what}_per_min"] = f"n/a (no {name} metric)"
                continue
            out[f"idle_{what}_per_min"] = round((metric_value(after, name) - (metric_value(before, name) or 0))
                                                * per_min, 2)
            earlier = metric_samples(before, name)
            out[f"idle_{what}_by_label"] = {labels: round(value - earlier.get(labels, 0), 1)
                                            for labels, value in metric_samples(after, name).items()
                                            if value != earlier.get(labels, 0)}
        return out

    async def cleanup(self) -> None:
        c = self.cluster
        if self.operator:
            self.operator.stop()
        for namespace in self.namespaces:
            c.k("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")
        for namespace in self.namespaces:
            await c.wait_gone("v1", "Pod", namespace, within=1800)
        await c.delete_all("v1", "Node", selector=f"{POOL_LABEL} in ({','.join(self.types)})")
        c.k("delete", "machinetypes", *self.types, "--wait=false", "--ignore-not-found")


def request_waits(metrics: str, before: dict[str, dict[str, float]]) -> dict[str, str]:
    """Per priority: the operator's requests in the run, and their mean wait for a slot in its gate."""
    sums, counts = (metric_samples(metrics, f"falapp_api_request_wait_seconds_{m}") for m in ("sum", "count"))
    out = {}
    for labels, count in counts.items():
        priority = re.search(r'priority="([^"]*)"', labels)
        n = count - before["count"].get(labels, 0)
        if priority and n:
            waited = sums.get(labels, 0) - before["sum"].get(labels, 0)
            out[priority.group(1)] = f"{int(n)} requests, mean wait {waited / n:.3f} s"
    return out


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for key, label, style in (("operator", "FalApps (operator)", "-"),
                              ("scheduler_alone", "plain Deployments (scheduler alone), before", "--"),
                              ("scheduler_again", "plain Deployments (scheduler alone), after", ":")):
        run = result[key]
        xs, ys = [0.0], [0]
        for t, n in run["series"]:
            xs += [t, t]
            ys += [ys[-1], n]
        ax.plot(xs, ys, linestyle=style, label=f"{label}: all Ready at {run['all_ready_s']:.0f} s")
    save_plot(plt, fig, ax, path, "seconds since the first create request", "replicas Ready",
              f"{result['apps']} apps, {result['replicas']} replicas, {result['nodes']} nodes: "
              f"{result['ratio']:.2f}x the plain runs' mean")


async def measure(args: argparse.Namespace) -> dict:
    """A plain run, then `--rounds` times: the operator's run and a plain run after it. Each round is
    compared with the plain runs on either side of it; the round with the median ratio is reported in
    full, the others by their times."""
    cluster = Cluster()
    operator = None if args.external_operator else Operator(cluster.kubeconfig, "scale", args.operator_rev)
    result = {"apps": args.apps, "replicas": args.apps * args.replicas, "nodes": args.nodes,
              "operator_revision": operator.revision if operator else "external", "load_before": load()}
    rounds: list[dict] = []
    clock = WallClock()
    async with cluster:
        bench = Scale(cluster, operator, args.apps, args.replicas, args.nodes)
        try:
            await bench.setup()
            plains = [await bench.scheduler_alone("plain-0")]
            loads = [load()]
            for i in range(args.rounds):
                if operator:
                    operator.start(timeout=300)
                run = await bench.with_operator(args.idle, f"apps-{i}")
                load_operator = load()
                if operator:
                    operator.stop()
                await bench.remove(f"{bench.prefix}-apps-{i}")
                plains.append(await bench.scheduler_alone(f"plain-{i + 1}"))
                loads.append(load())
                took, before, after = (run["all_ready_s"], plains[i]["all_ready_s"], plains[i + 1]["all_ready_s"])
                rounds.append({"operator": run, "scheduler_alone": plains[i], "scheduler_again": plains[i + 1],
                               "load_scheduler_run": loads[i], "load_operator_run": load_operator,
                               "load_again_run": loads[i + 1], "ratio": round(took / ((before + after) / 2), 2),
                               "ratio_to_before": round(took / before, 2), "ratio_to_after": round(took / after, 2)})
                if args.rounds > 1:
                    print(f"  round {i + 1}/{args.rounds}: {took:.0f}s against {before:.0f} / {after:.0f}s: "
                          f"{rounds[-1]['ratio']:.2f}x", flush=True)
        finally:
            await bench.cleanup()
    median = sorted(rounds, key=lambda r: r["ratio"])[len(rounds) // 2]  # of two, the worse
    operator_mean = sum(r["operator"]["all_ready_s"] for r in rounds) / len(rounds)
    plain_mean = sum(p["all_ready_s"] for p in plains) / len(plains)
    return {**result, **median, "rounds": [
        {"operator_s": r["operator"]["all_ready_s"], "before_s": r["scheduler_alone"]["all_ready_s"],
         "after_s": r["scheduler_again"]["all_ready_s"], "ratio": r["ratio"],
         "machine_cpu_s": [r[k]["machine_cpu_s"] for k in ("scheduler_alone", "operator", "scheduler_again")],
         "operator_cpu_s": r["operator"].get("operator_cpu_s"), "reconciles": r["operator"].get("reconciles"),
         "status_writes": (r["operator"].get("writes") or {}).get('write="status"'),
         "stages_all": {k: r["operator"]["stages_half_all"].get(k) for k in Progress.STAGES}} for r in rounds],
        "pooled_ratio": round(operator_mean / plain_mean, 2), "clock_step_s": clock.stepped()}


def machine_use(machine_before: float, started: float) -> dict:
    """The whole machine's CPU from `machine_before` (read just before `started`) until now."""
    spent = machine_cpu_seconds() - machine_before
    return {"machine_cpu_s": round(spent, 1), "machine_busy_percent": machine_busy(spent, time.time() - started)}


def cpu_line(run: dict, operator_cpu: float | None = None) -> str:
    components = sum(run["control_plane_cpu_s"].values()) + (operator_cpu or 0)
    return (f"{components:.0f} CPU-s in the components{' and the operator' if operator_cpu is not None else ''}, "
            f"{run['machine_cpu_s']:.0f} in the whole machine: {run['machine_busy_percent']:.0f}% of its "
            f"{os.cpu_count()} cores busy")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=5, help="replicas per app")
    parser.add_argument("--nodes", type=int, default=2000, help="fake nodes (8 GPUs each), over 4 machine types")
    parser.add_argument("--idle", type=float, default=60, help="seconds to count idle API writes and reads")
    parser.add_argument("--plot", default="none", help="PNG of Ready-over-time to write (default: none)")
    parser.add_argument("--external-operator", action="store_true", help="an operator is already running")
    parser.add_argument("--rounds", type=int, default=1, help="operator runs, each followed by a plain run; the "
                        "round with the median ratio is reported in full")
    parser.add_argument("--operator-rev", default=None, help="run operator/ as of this git revision (e.g. HEAD) "
                        "instead of the working tree")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if -(-args.apps // len(POOLS)) * args.replicas > 8 * (args.nodes // len(POOLS)):
        parser.error("every app's first machine type must have room: apps/4 * replicas <= 8 GPUs * nodes/4")
    result = asyncio.run(measure(args))
    runs = ("operator", "scheduler_alone", "scheduler_again")
    series = {k: result[k].pop("series") for k in runs}
    print(json.dumps(result, indent=2))
    op, base, again = result["operator"], result["scheduler_alone"], result["scheduler_again"]
    print(f"\n{result['apps']} apps, {result['replicas']} replicas, {result['nodes']} nodes; operator "
          f"{result['operator_revision']}; load {result['load_before']} before, {result['load_operator_run']} "
          "after the operator run")
    print(f"  scheduler alone: all Ready {base['all_ready_s']:.0f}s after the first create "
          f"(creates took {base['create_requests_s']:.0f}s); run again after the operator's: "
          f"{again['all_ready_s']:.0f}s (creates took {again['create_requests_s']:.0f}s)")
    print(f"  operator:        all replicas Ready {op['all_ready_s']:.0f}s, all FalApps Ready "
          f"{op['apps_ready_s']:.0f}s after the first create (creates took {op['create_requests_s']:.0f}s)")
    if abs(result["clock_step_s"]) > CLOCK_STEP_LIMIT:
        print(f"  the wall clock stepped by {result['clock_step_s']:.1f}s during the runs: a run's times are off; "
              "run it again")
    print(f"  ratio (replicas Ready): {result['ratio']:.2f}x the mean of the plain runs; "
          f"{result['ratio_to_before']:.2f}x the run before, {result['ratio_to_after']:.2f}x the run after")
    if len(result["rounds"]) > 1:
        print("  rounds (operator / plain before / after: ratio): " + ", ".join(
            f"{r['operator_s']:.0f} / {r['before_s']:.0f} / {r['after_s']:.0f}s: {r['ratio']:.2f}x"
            for r in result["rounds"]) + f"; the median above; all operator runs against all plain runs: "
            f"{result['pooled_ratio']:.2f}x")
    print(f"  CPU alone:             {cpu_line(base)}")
    print(f"  CPU alone, again:      {cpu_line(again)}")
    print(f"  CPU with the operator: {cpu_line(op, op.get('operator_cpu_s_until_ready'))}")
    for stage in Progress.STAGES:
        print(f"  {stage + ':':14} half / all at {base['stages_half_all'].get(stage, '-'):>22} alone, "
              f"{op['stages_half_all'].get(stage, '-'):>22} with the operator, "
              f"{again['stages_half_all'].get(stage, '-'):>22} alone again")
    if "rss_mib" in op:
        print(f"  operator: RSS {op['rss_mib']:.0f} MiB ({op['rss_mib_idle_start']:.0f} as the idle window began, "
              f"{op['rss_mib_idle_max']:.0f} at most); idle {op['idle_writes_per_min']} writes/min, "
              f"{op['idle_reads_per_min']} reads/min {op.get('idle_reads_by_label', '')}; "
              f"{op['cpu_s_per_1000_reconciles']} CPU-s per 1,000 reconciles "
              f"({op['reconciles']} reconciles, {op['operator_cpu_s']} CPU-s)")
    if "request_wait_s" in op:
        for priority, waits in op["request_wait_s"].items() or [("app", "n/a (no falapp_api_request_wait_seconds)")]:
            print(f"  operator's {priority} requests until all Ready: {waits}")
    if args.plot != "none":
        for k, s in series.items():
            result[k]["series"] = s
        plot(result, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
