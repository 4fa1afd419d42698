#!/usr/bin/env python3
"""What one write of a FalApp costs the API server: its CPU per status write (counts changing, the spec
as it is) and per metadata write, against the same writes to a ConfigMap, on an otherwise quiet cluster.
A status write is what the operator sends most. The API server evaluates every CEL rule of the spec on
each write, the status's included, although the spec did not change; ratcheting drops an unchanged
value's errors only after evaluating its rule.

    .venv/bin/python bench/write_cost.py [--writes 500] [--rounds 3] [--objects 50] [--concurrency 16]

Needs `hack/cluster.sh up`; installs the CRDs of the working tree; removes what it created. Each app has
an unschedulableTimeout, cpu and memory, a liveness probe and pod labels (fields with rules); the status
it writes holds two counts only (a real one is bigger: a lower bound). Writes go round-robin over
`--objects` objects of each kind, so they do not conflict; after a warm-up, the kinds take turns in each
round, and the API server's idle CPU (its rate measured before the rounds) over each kind's time is
subtracted. Prints JSON and, per kind, the median over the rounds of the API server's and etcd's CPU
per write.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections.abc import Callable

from common import Cluster, ControlPlaneCPU, falapp, fallback, quiet_machine

MERGE_PATCH = "application/merge-patch+json"
Kind = tuple[Callable[[int], str], Callable[[int], dict]]  # (path of write i, its body)


async def idle_rate(cpu: ControlPlaneCPU, seconds: float = 5.0) -> dict[str, float]:
    """CPU seconds per second each component spends with nothing asked of it."""
    before, started = cpu.read(), time.monotonic()
    await asyncio.sleep(seconds)
    after, spent = cpu.read(), time.monotonic() - started
    return {c: (after[c] - before[c]) / spent for c in before}


async def write_all(cluster: Cluster, kind: Kind, writes: int, concurrency: int) -> None:
    path, body = kind
    limit = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with limit:
            await cluster.request("PATCH", path(i), body(i), content_type=MERGE_PATCH)

    await asyncio.gather(*(one(i) for i in range(writes)))


async def measure(args: argparse.Namespace) -> dict:
    namespace = f"writecost-{uuid.uuid4().hex[:6]}"
    async with Cluster() as c:
        c.install_crds()
        c.k("create", "namespace", namespace)
        try:
            await c.create([falapp(f"app-{i}", namespace=namespace, fallback=fallback("30s"),
                                   resources={"cpu": "4", "memory": "16Gi"}, podLabels={"team": "research"},
                                   livenessProbe={"httpGet": {"path": "/healthz", "port": 8080}})
                            for i in range(args.objects)])
            for i in range(args.objects):
                c.k("create", "configmap", f"cm-{i}", "-n", namespace)
            falapps = c.path("fal.ai/v1alpha1", "FalApp", namespace)
            configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
            n = args.objects
            kinds: dict[str, Kind] = {
                "FalApp status": (lambda i: f"{falapps}/app-{i % n}/status",
                                  lambda i: {"status": {"replicas": i % 7, "readyReplicas": i // n % 5}}),
                "FalApp metadata": (lambda i: f"{falapps}/app-{i % n}",
                                    lambda i: {"metadata": {"annotations": {"bench": str(i)}}}),
                "ConfigMap data": (lambda i: f"{configmaps}/cm-{i % n}", lambda i: {"data": {"bench": str(i)}}),
            }
            for kind in kinds.values():  # warm-up: the first writes of each object cost more
                await write_all(c, kind, 2 * n, args.concurrency)
            print(f"  {await quiet_machine()}", flush=True)
            cpu = ControlPlaneCPU()
            idle = await idle_rate(cpu)
            per_write: dict[str, dict[str, list[float]]] = {k: {"apiserver_ms": [], "etcd_ms": []} for k in kinds}
            for _ in range(args.rounds):
                for name, kind in kinds.items():
                    before, started = cpu.read(), time.monotonic()
                    await write_all(c, kind, args.writes, args.concurrency)
                    after, wall = cpu.read(), time.monotonic() - started
                    for component, key in (("kube-apiserver", "apiserver_ms"), ("etcd", "etcd_ms")):
                        spent = after[component] - before[component] - idle[component] * wall
                        per_write[name][key].append(round(spent / args.writes * 1000, 2))
            return {"writes": args.writes, "rounds": args.rounds, "concurrency": args.concurrency,
                    "objects": args.objects, "idle_apiserver_cores": round(idle["kube-apiserver"], 3),
                    "per_write": per_write}
        finally:
            c.k("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=500, help="writes of each kind in each round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--objects", type=int, default=50, help="objects of each kind the writes go round")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    result = asyncio.run(measure(args))
    print(json.dumps(result, indent=2))
    print(f"\nCPU per write, the median of {args.rounds} rounds ({args.writes} writes of each kind a round, "
          f"{args.concurrency} at a time over {args.objects} objects, less the idle API server's "
          f"{result['idle_apiserver_cores']:.3f} cores):")
    for kind, numbers in result["per_write"].items():
        print(f"  {kind:16} API server {statistics.median(numbers['apiserver_ms']):5.2f} ms "
              f"(rounds {', '.join(f'{v:.2f}' for v in numbers['apiserver_ms'])}), "
              f"etcd {statistics.median(numbers['etcd_ms']):.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
