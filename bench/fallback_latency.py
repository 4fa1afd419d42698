#!/usr/bin/env python3
"""Fallback latency on the local cluster: how long after a replica's unschedulableTimeout expires is its
replacement bound on the next machine type, and how much of that is the operator vs the scheduler.

Each of N single-replica apps prefers a "fast" type whose nodes show free GPUs but accept no pods (the
scheduler says "Too many pods", the capacity view cannot see it), so every replica really goes
Unschedulable there and must fall back to "slow". Times come from one watch on this machine's clock;
the timeout is counted from the PodScheduled condition's lastTransitionTime, as the operator does.

    .venv/bin/python bench/fallback_latency.py [--apps 40] [--timeout 2s]

Needs `hack/cluster.sh up`; starts its own operator unless --external-operator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from kubernetes_asyncio import client, config, watch

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "hack" / "cluster.sh"


def sh(*args: str, input: str | None = None) -> str:
    return subprocess.run(args, input=input, capture_output=True, text=True, check=True).stdout


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


class Bench:
    def __init__(self, apps: int, timeout_s: float):
        self.apps, self.timeout_s = apps, timeout_s
        self.kubectl = [str(Path(sh(str(CLUSTER), "bindir").strip()) / "kubectl"),
                        "--kubeconfig", sh(str(CLUSTER), "kubeconfig").strip()]
        self.run_id = uuid.uuid4().hex[:6]
        self.namespace = f"bench-{self.run_id}"
        self.fast, self.slow = f"bench{self.run_id}-fast", f"bench{self.run_id}-slow"
        self.nodes: list[str] = []
        # pod name -> facts seen on the watch (local monotonic-free wall clock, seconds since epoch)
        self.created: dict[str, float] = {}
        self.bound: dict[str, float] = {}
        self.unschedulable_since: dict[str, float] = {}  # lastTransitionTime of PodScheduled=False
        self.app_of: dict[str, str] = {}
        self.scaled: dict[str, float] = {}  # app -> when its slow Deployment first asked for a replica
        self.type_of: dict[str, str] = {}

    def k(self, *args: str, input: str | None = None) -> str:
        return sh(*self.kubectl, *args, input=input)

    def apply(self, objects: list[dict]) -> None:
        self.k("apply", "--server-side", "-f", "-", input="\n".join(json.dumps(o) for o in objects))

    def setup(self) -> None:
        types = [{"apiVersion": "fal.ai/v1alpha1", "kind": "MachineType", "metadata": {"name": name},
                  "spec": {"gpu": {"maxGpusPerReplica": 8, "vram": "80Gi"}, "resources": {"cpu": "1", "memory": "1Gi"},
                           "nodeSelector": {"fal.test/pool": name},
                           "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}}
                 for name in (self.fast, self.slow)]
        nodes = []
        slow_nodes = (self.apps + 7) // 8
        for pool, count, pods in ((self.fast, slow_nodes, "0"), (self.slow, slow_nodes, "110")):
            for i in range(count):
                name = f"{pool}-{i}"
                self.nodes.append(name)
                alloc = {"cpu": "256", "memory": "2Ti", "pods": pods, "nvidia.com/gpu": "8"}
                nodes.append({"apiVersion": "v1", "kind": "Node",
                              "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake"},
                                           "labels": {"fal.test/pool": pool, "type": "kwok"}},
                              "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present",
                                                   "effect": "NoSchedule"}]},
                              "status": {"allocatable": alloc, "capacity": alloc}})
        self.apply(types + nodes)
        self.k("wait", "--for=condition=Ready", "--timeout=60s", *[f"node/{n}" for n in self.nodes])
        self.k("create", "namespace", self.namespace)

    def app(self, i: int) -> dict:
        return {"apiVersion": "fal.ai/v1alpha1", "kind": "FalApp",
                "metadata": {"name": f"app-{i}", "namespace": self.namespace},
                "spec": {"image": "registry.example.com/app:1", "machineTypes": [self.fast, self.slow],
                         "numGpus": 1, "replicas": 1,
                         "fallback": {"unschedulableTimeout": f"{self.timeout_s}s", "returnToPreferred": False}}}

    async def watch(self, done: asyncio.Event) -> None:
        await config.load_kube_config(config_file=self.kubectl[2])
        async with client.ApiClient() as api:
            await asyncio.gather(self._watch(client.CoreV1Api(api).list_namespaced_pod, self.observe, done),
                                 self._watch(client.AppsV1Api(api).list_namespaced_deployment,
                                             self.observe_deployment, done))

    async def _watch(self, lister, observe, done: asyncio.Event) -> None:
        while not done.is_set():
            async for event in watch.Watch().stream(lister, self.namespace, timeout_seconds=30):
                observe(event["object"], time.time())
                if done.is_set():
                    break

    def observe_deployment(self, deployment, now: float) -> None:
        labels = deployment.metadata.labels or {}
        if labels.get("fal.ai/machine-type") == self.slow and (deployment.spec.replicas or 0) > 0:
            self.scaled.setdefault(labels.get("fal.ai/app", ""), now)

    def observe(self, pod, now: float) -> None:
        name = pod.metadata.name
        self.created.setdefault(name, now)
        self.app_of[name] = pod.metadata.labels.get("fal.ai/app", "")
        self.type_of[name] = pod.metadata.labels.get("fal.ai/machine-type", "")
        if pod.spec.node_name:
            self.bound.setdefault(name, now)
        for c in pod.status.conditions or []:
            if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable":
                self.unschedulable_since.setdefault(name, c.last_transition_time.timestamp())

    def settled(self) -> bool:
        on_slow = {self.app_of[p] for p, t in self.type_of.items() if t == self.slow and p in self.bound}
        return len(on_slow) == self.apps

    async def run(self) -> dict:
        self.setup()
        done = asyncio.Event()
        watcher = asyncio.create_task(self.watch(done))
        await asyncio.sleep(1)
        started = time.time()
        self.apply([self.app(i) for i in range(self.apps)])
        deadline = time.monotonic() + 120 + 3 * self.timeout_s
        while not self.settled() and time.monotonic() < deadline:
            if watcher.done():
                watcher.result()  # surfaces the watch's error
            await asyncio.sleep(0.2)
        done.set()
        watcher.cancel()
        return self.report(time.time() - started)

    def report(self, wall: float) -> dict:
        total, operator, controllers, scheduler = [], [], [], []
        for app in {a for a in self.app_of.values() if a}:
            fast = [p for p in self.unschedulable_since if self.app_of[p] == app and self.type_of[p] == self.fast]
            slow = [p for p in self.bound if self.app_of[p] == app and self.type_of[p] == self.slow]
            if not fast or not slow:
                continue
            expiry = self.unschedulable_since[fast[0]] + self.timeout_s
            replacement = slow[0]
            total.append(self.bound[replacement] - expiry)
            operator.append(self.scaled[app] - expiry)
            controllers.append(self.created[replacement] - self.scaled[app])
            scheduler.append(self.bound[replacement] - self.created[replacement])
        result = {"apps": self.apps, "fell_back": len(total), "timeout_s": self.timeout_s, "wall_s": round(wall, 2)}
        for label, values in (("expiry_to_bound", total), ("operator_added", operator),
                              ("controller_manager", controllers), ("scheduler", scheduler)):
            if values:
                result[label] = {"p50": round(statistics.median(values), 3), "p99": round(percentile(values, 99), 3),
                                 "max": round(max(values), 3)}
        return result

    def cleanup(self) -> None:
        self.k("delete", "namespace", self.namespace, "--wait=false")
        self.k("delete", "node", *self.nodes, "--wait=false")
        self.k("delete", "machinetype", self.fast, self.slow, "--wait=false")


def start_operator(kubeconfig: str) -> subprocess.Popen:
    env = {"FALAPP_METRICS_PORT": "0", **os.environ, "KUBECONFIG": kubeconfig}
    log = open(REPO / ".state" / "bench-operator.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "falapp_operator", "run"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    time.sleep(3)
    return proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=40)
    parser.add_argument("--timeout", default="2s", help="unschedulableTimeout of every app (seconds, e.g. 2s)")
    parser.add_argument("--external-operator", action="store_true", help="an operator is already running")
    args = parser.parse_args()
    bench = Bench(args.apps, float(args.timeout.rstrip("s")))
    operator = None if args.external_operator else start_operator(bench.kubectl[2])
    try:
        result = asyncio.run(bench.run())
    finally:
        bench.cleanup()
        if operator is not None:
            operator.terminate()
            operator.wait(15)
    print(json.dumps(result, indent=2))
    print(f"\nfallback of {result['fell_back']}/{result['apps']} replicas, timeout {result['timeout_s']}s "
          f"(stamped {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
    for label in ("expiry_to_bound", "operator_added", "controller_manager", "scheduler"):
        if label in result:
            r = result[label]
            print(f"  {label:<18} p50 {r['p50']:7.3f}s   p99 {r['p99']:7.3f}s   max {r['max']:7.3f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
