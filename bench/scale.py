#!/usr/bin/env python3
"""Scale on the local cluster: many FalApps and replicas on many fake nodes.

Prints the time until every app is Ready, the operator's steady-state RSS, and the API writes it makes
per minute once nothing changes (the target is zero).

    .venv/bin/python bench/scale.py [--apps 1000] [--replicas 5] [--nodes 2000] [--idle 60]

Needs `hack/cluster.sh up`. Creates its own MachineTypes, nodes and namespace, and removes them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "hack" / "cluster.sh"
POOLS = ("a", "b", "c", "d")


def sh(*args: str, input: str | None = None) -> str:
    return subprocess.run(args, input=input, capture_output=True, text=True, check=True).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Scale:
    def __init__(self, apps: int, replicas: int, nodes: int):
        self.apps, self.replicas, self.node_count = apps, replicas, nodes
        self.kubectl = [str(Path(sh(str(CLUSTER), "bindir").strip()) / "kubectl"),
                        "--kubeconfig", sh(str(CLUSTER), "kubeconfig").strip()]
        rid = uuid.uuid4().hex[:6]
        self.namespace, self.prefix = f"scale-{rid}", f"scale{rid}"
        self.port = free_port()
        self.operator: subprocess.Popen | None = None

    def k(self, *args: str, input: str | None = None) -> str:
        return sh(*self.kubectl, *args, input=input)

    def apply(self, objects: list[dict]) -> None:
        for i in range(0, len(objects), 200):
            self.k("apply", "--server-side", "-f", "-", input="\n".join(json.dumps(o) for o in objects[i:i + 200]))

    def setup(self) -> None:
        types = [{"apiVersion": "fal.ai/v1alpha1", "kind": "MachineType", "metadata": {"name": f"{self.prefix}-{p}"},
                  "spec": {"gpu": {"maxGpusPerReplica": 8, "vram": "80Gi"}, "resources": {"cpu": "1", "memory": "1Gi"},
                           "nodeSelector": {"fal.test/pool": f"{self.prefix}-{p}"},
                           "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}}
                 for p in POOLS]
        alloc = {"cpu": "256", "memory": "2Ti", "pods": "110", "nvidia.com/gpu": "8"}
        nodes = [{"apiVersion": "v1", "kind": "Node",
                  "metadata": {"name": f"{self.prefix}-n{i}", "annotations": {"kwok.x-k8s.io/node": "fake"},
                               "labels": {"fal.test/pool": f"{self.prefix}-{POOLS[i % len(POOLS)]}", "type": "kwok"}},
                  "spec": {"taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
                  "status": {"allocatable": alloc, "capacity": alloc}} for i in range(self.node_count)]
        self.apply(types + nodes)
        self.k("create", "namespace", self.namespace)

    def start_operator(self) -> None:
        env = {**os.environ, "KUBECONFIG": self.kubectl[2], "FALAPP_METRICS_PORT": str(self.port)}
        log = open(REPO / ".state" / "scale-operator.log", "w")
        self.operator = subprocess.Popen([sys.executable, "-m", "falapp_operator", "run"], env=env, stdout=log,
                                         stderr=subprocess.STDOUT)

    def metric(self, name: str) -> float:
        """The sum of the metric over all its label values."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()
        return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M))

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.operator.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024

    def ready_apps(self) -> int:
        items = json.loads(self.k("get", "falapps", "-n", self.namespace, "-o", "json"))["items"]
        return sum(1 for a in items if any(c["type"] == "Ready" and c["status"] == "True"
                                           for c in (a.get("status") or {}).get("conditions", [])))

    def run(self, idle: float) -> dict:
        self.setup()
        self.start_operator()
        time.sleep(3)
        order = [[f"{self.prefix}-{p}".upper() for p in POOLS[i:] + POOLS[:i]][:3] for i in range(len(POOLS))]
        apps = [{"apiVersion": "fal.ai/v1alpha1", "kind": "FalApp",
                 "metadata": {"name": f"app-{i}", "namespace": self.namespace},
                 "spec": {"image": "registry.example.com/app:1", "machineTypes": order[i % len(order)],
                          "numGpus": 1, "replicas": self.replicas}} for i in range(self.apps)]
        started = time.monotonic()
        self.apply(apps)
        applied = time.monotonic() - started
        ready = 0
        while ready < self.apps and time.monotonic() - started < 1800:
            time.sleep(5)
            ready = self.ready_apps()
            print(f"  {time.monotonic() - started:6.0f}s  {ready}/{self.apps} apps Ready", flush=True)
        placed = time.monotonic() - started
        time.sleep(10)  # let the last status writes land
        writes_before = self.metric("falapp_api_writes_total")
        time.sleep(idle)
        writes_after = self.metric("falapp_api_writes_total")
        return {"apps": self.apps, "replicas": self.apps * self.replicas, "nodes": self.node_count,
                "apply_s": round(applied, 1), "all_ready_s": round(placed, 1), "ready_apps": ready,
                "rss_mib": round(self.rss_mib(), 1),
                "idle_writes_per_min": round((writes_after - writes_before) * 60 / idle, 2),
                "reconciles": self.metric('falapp_reconciles_total{result="ok"}')}

    def cleanup(self) -> None:
        if self.operator is not None:
            self.operator.terminate()
            self.operator.wait(30)
        self.k("delete", "namespace", self.namespace, "--wait=false")
        pools = ",".join(f"{self.prefix}-{p}" for p in POOLS)
        self.k("delete", "nodes", "-l", f"fal.test/pool in ({pools})", "--wait=false")
        self.k("delete", "machinetypes", *[f"{self.prefix}-{p}" for p in POOLS], "--wait=false")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--idle", type=float, default=60, help="seconds to count idle API writes")
    args = parser.parse_args()
    bench = Scale(args.apps, args.replicas, args.nodes)
    try:
        result = bench.run(args.idle)
    finally:
        bench.cleanup()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
