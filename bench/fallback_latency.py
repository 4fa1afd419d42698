#!/usr/bin/env python3
"""Fallback latency on the local cluster: how long after a replica's unschedulableTimeout expires is its
replacement bound on the next machine type, and how much of that is the operator, the controller
manager and the scheduler, all measured in one run.

Each of N single-replica apps, created at once, prefers a "fast" type whose nodes show free GPUs but
accept no pods (the scheduler says "Too many pods", the capacity view cannot see it), so every replica
really goes Unschedulable there and must fall back to "slow" (room for twice the apps). Times come from
watches on this machine's clock; the timeout is counted from the PodScheduled condition's
lastTransitionTime, as the operator does. Per app:
  operator            timeout expired -> the app's "slow" Deployment asks for a replica
  controller manager  -> its replacement pod exists
  scheduler           -> the pod is bound to a node
Prints p50/p99/max of each and writes their distribution (CDF) to a PNG.

    .venv/bin/python bench/fallback_latency.py [--apps 40] [--timeout 2s] [--plot docs/fallback-latency-40.png]

Needs `hack/cluster.sh up`; starts its own operator unless --external-operator. Removes what it created.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

from common import (
    APP_LABEL,
    CLOCK_STEP_LIMIT,
    DOCS,
    TYPE_LABEL,
    Cluster,
    ControlPlaneCPU,
    Operator,
    WallClock,
    fake_node,
    load,
    one_gpu_app,
    percentile,
    pool_machine_type,
    pyplot,
    quiet_machine,
    save_plot,
    until,
)

from falapp_operator.api import parse_time

COMPONENTS = (("operator", "operator"), ("controller_manager", "controller manager"), ("scheduler", "scheduler"),
              ("expiry_to_bound", "timeout expired -> bound (sum)"))


class Bench:
    def __init__(self, cluster: Cluster, apps: int, timeout_s: float):
        self.cluster, self.apps, self.timeout_s = cluster, apps, timeout_s
        self.run_id = uuid.uuid4().hex[:6]
        self.namespace = f"bench-{self.run_id}"
        self.fast, self.slow = f"bench{self.run_id}-fast", f"bench{self.run_id}-slow"
        # pod name -> facts seen on the watches (wall clock, seconds since the epoch)
        self.created: dict[str, float] = {}
        self.bound: dict[str, float] = {}
        self.unschedulable_since: dict[str, float] = {}  # lastTransitionTime of PodScheduled=False
        self.app_of: dict[str, str] = {}
        self.type_of: dict[str, str] = {}
        self.scaled: dict[str, float] = {}  # app -> when its slow Deployment first asked for a replica

    def setup(self) -> None:
        per_pool = (self.apps + 7) // 8
        nodes = [fake_node(f"{self.fast}-{i}", self.fast, pods=0) for i in range(per_pool)]
        nodes += [fake_node(f"{self.slow}-{i}", self.slow) for i in range(2 * per_pool)]
        names = [n["metadata"]["name"] for n in nodes]
        self.cluster.install_crds()
        self.cluster.apply([pool_machine_type(self.fast), pool_machine_type(self.slow), *nodes])
        self.cluster.k("wait", "--for=condition=Ready", "--timeout=120s", *[f"node/{n}" for n in names])
        self.cluster.k("create", "namespace", self.namespace)

    def observe_deployment(self, _type: str, deployment: dict, now: float) -> None:
        labels = deployment["metadata"].get("labels") or {}
        if labels.get(TYPE_LABEL) == self.slow and (deployment["spec"].get("replicas") or 0) > 0:
            self.scaled.setdefault(labels.get(APP_LABEL, ""), now)

    def observe_pod(self, _type: str, pod: dict, now: float) -> None:
        name, labels = pod["metadata"]["name"], pod["metadata"].get("labels") or {}
        self.created.setdefault(name, now)
        self.app_of[name] = labels.get(APP_LABEL, "")
        self.type_of[name] = labels.get(TYPE_LABEL, "")
        if pod["spec"].get("nodeName"):
            self.bound.setdefault(name, now)
        for c in (pod.get("status") or {}).get("conditions") or []:
            if c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable":
                since = parse_time(c.get("lastTransitionTime"))
                if since is not None:
                    self.unschedulable_since.setdefault(name, since.timestamp())

    def settled(self) -> bool:
        on_slow = {self.app_of[p] for p, t in self.type_of.items() if t == self.slow and p in self.bound}
        return len(on_slow) == self.apps

    async def run(self) -> dict:
        stop = asyncio.Event()
        c = self.cluster
        watches = [asyncio.create_task(c.watch("v1", "Pod", self.namespace, self.observe_pod, stop)),
                   asyncio.create_task(c.watch("apps/v1", "Deployment", self.namespace, self.observe_deployment,
                                               stop))]
        print(f"  {await quiet_machine()}", flush=True)
        cpu = ControlPlaneCPU()
        before = cpu.read()
        clock = WallClock()
        started = time.monotonic()
        await c.create([one_gpu_app(f"app-{i}", self.namespace, [self.fast, self.slow], 1, self.timeout_s)
                        for i in range(self.apps)])
        try:
            await until(self.settled, 120 + 3 * self.timeout_s + self.apps, "every app bound on the slow type",
                        watches)
        finally:
            stop.set()
            for w in watches:
                w.cancel()
        result = self.report(time.monotonic() - started)
        result["control_plane_cpu_s"] = ControlPlaneCPU.spent(before, cpu.read())
        result["clock_step_s"] = clock.stepped()
        return result

    def samples(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {key: [] for key, _ in COMPONENTS}
        for app in {a for a in self.app_of.values() if a}:
            fast = [p for p in self.unschedulable_since if self.app_of[p] == app and self.type_of[p] == self.fast]
            slow = sorted((p for p in self.bound if self.app_of[p] == app and self.type_of[p] == self.slow),
                          key=self.bound.get)
            if not fast or not slow or app not in self.scaled:
                continue
            expiry = min(self.unschedulable_since[p] for p in fast) + self.timeout_s
            replacement = slow[0]
            out["expiry_to_bound"].append(self.bound[replacement] - expiry)
            out["operator"].append(self.scaled[app] - expiry)
            out["controller_manager"].append(self.created[replacement] - self.scaled[app])
            out["scheduler"].append(self.bound[replacement] - self.created[replacement])
        return out

    def report(self, wall: float) -> dict:
        samples = self.samples()
        result: dict = {"apps": self.apps, "fell_back": len(samples["operator"]), "timeout_s": self.timeout_s,
                        "wall_s": round(wall, 2), "samples": samples}
        for key, values in samples.items():
            if values:
                result[key] = {"p50": round(statistics.median(values), 3), "p99": round(percentile(values, 99), 3),
                               "max": round(max(values), 3)}
        return result

    async def cleanup(self) -> None:
        await self.cluster.remove_pools(self.namespace, (self.fast, self.slow))


def plot(result: dict, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for key, label in COMPONENTS:
        values = sorted(result["samples"][key])
        if values:
            ax.step(values, [(i + 1) / len(values) for i in range(len(values))], where="post",
                    label=f"{label}: p50 {statistics.median(values):.2f} s, p99 {percentile(values, 99):.2f} s")
    ax.set_xscale("symlog", linthresh=0.01)
    save_plot(plt, fig, ax, path, "seconds (symmetric log scale)", "fraction of fallbacks",
              f"{result['apps']} replicas falling back at once, unschedulableTimeout {result['timeout_s']:g} s",
              loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)


def operator_counts(operator: Operator) -> dict[str, float | None]:
    """The operator's CPU seconds, reconciles and API writes and reads so far (None: no such metric)."""
    return {"cpu_s": operator.cpu_seconds(), "reconciles": operator.metric("falapp_reconciles_total"),
            "api_writes": operator.metric("falapp_api_writes_total"),
            "api_reads": operator.metric("falapp_api_reads_total")}


async def measure(args: argparse.Namespace) -> dict:
    cluster = Cluster()
    bench = Bench(cluster, args.apps, float(args.timeout.rstrip("s")))
    operator = None if args.external_operator else Operator(cluster.kubeconfig, "fallback-latency", args.operator_rev)
    async with cluster:
        try:
            bench.setup()
            if operator:
                operator.start()
                before = operator_counts(operator)
            result = await bench.run()
            if operator:
                after = operator_counts(operator)
                result["operator_during_run"] = {k: None if after[k] is None else round(after[k] - (before[k] or 0), 1)
                                                 for k in after}
                result["operator_revision"] = operator.revision
        finally:
            if operator:
                operator.stop()
            await bench.cleanup()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=40)
    parser.add_argument("--timeout", default="2s", help="unschedulableTimeout of every app (seconds, e.g. 2s)")
    parser.add_argument("--plot", default=None, help="PNG to write (default docs/fallback-latency-<apps>.png); "
                        "'none' for no picture")
    parser.add_argument("--external-operator", action="store_true", help="an operator is already running")
    parser.add_argument("--operator-rev", default=None, help="run operator/ as of this git revision (e.g. HEAD) "
                        "instead of the working tree")
    args = parser.parse_args()
    load_before = load()
    result = asyncio.run(measure(args))
    samples = result.pop("samples")
    result["load_before"], result["load_after"] = load_before, load()
    print(json.dumps(result, indent=2))
    print(f"\nfallback of {result['fell_back']}/{result['apps']} replicas at once, timeout {result['timeout_s']:g}s; "
          f"load {result['load_before']} before, {result['load_after']} after")
    if abs(result["clock_step_s"]) > CLOCK_STEP_LIMIT:
        print(f"  the wall clock stepped by {result['clock_step_s']:.1f}s during the run: the times below are off; "
              "run it again")
    for key, label in COMPONENTS:
        if key in result:
            r = result[key]
            print(f"  {label:<32} p50 {r['p50']:7.3f}s   p99 {r['p99']:7.3f}s   max {r['max']:7.3f}s")
    if args.plot != "none":
        result["samples"] = samples
        plot(result, Path(args.plot) if args.plot else DOCS / f"fallback-latency-{args.apps}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
