#!/usr/bin/env python3
"""What one write of a FalApp costs the API server: its CPU per status write (counts changing, the spec
as it is) and per metadata write, against the same writes to a ConfigMap, on an otherwise idle cluster.
A status write is what the operator sends most. The API server evaluates every CEL rule of the spec on
each write, the status's included, although the spec did not change; ratcheting drops an unchanged
value's errors only after evaluating its rule.

    .venv/bin/python bench/write_cost.py [--writes 600] [--objects 50] [--concurrency 16]

Needs `hack/cluster.sh up`; installs the CRDs of the working tree; removes what it created. Each app has
an unschedulableTimeout, cpu and memory, a liveness probe and pod labels (fields with rules); writes go
round-robin over `--objects` objects, so they do not conflict.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

from common import Cluster, ControlPlaneCPU, falapp, fallback


async def patch(cluster: Cluster, path: str, body: dict) -> None:
    response = await cluster.api.call_api(path, "PATCH", body=body, _preload_content=False,
                                          header_params={"Content-Type": "application/merge-patch+json"})
    try:
        data = await response.read()
        if response.status >= 300:
            raise RuntimeError(f"PATCH {path}: {response.status} {data[:300].decode(errors='replace')}")
    finally:
        response.release()


async def measure(args: argparse.Namespace) -> dict:
    namespace = f"writecost-{uuid.uuid4().hex[:6]}"
    async with Cluster() as c:
        c.install_crds()
        c.k("create", "namespace", namespace)
        try:
            apps = [falapp(f"app-{i}", namespace=namespace, fallback=fallback("30s"),
                           resources={"cpu": "4", "memory": "16Gi"}, podLabels={"team": "research"},
                           livenessProbe={"httpGet": {"path": "/healthz", "port": 8080}})
                    for i in range(args.objects)]
            await c.create(apps)
            for i in range(args.objects):
                c.k("create", "configmap", f"cm-{i}", "-n", namespace)
            falapps = c.path("fal.ai/v1alpha1", "FalApp", namespace)
            configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
            kinds = {
                "FalApp status": (lambda i: f"{falapps}/app-{i % args.objects}/status",
                                  lambda i: {"status": {"replicas": i % 7, "readyReplicas": i % 5}}),
                "FalApp metadata": (lambda i: f"{falapps}/app-{i % args.objects}",
                                    lambda i: {"metadata": {"annotations": {"bench": str(i)}}}),
                "ConfigMap data": (lambda i: f"{configmaps}/cm-{i % args.objects}",
                                   lambda i: {"data": {"bench": str(i)}}),
            }
            cpu, limit, result = ControlPlaneCPU(), asyncio.Semaphore(args.concurrency), {}
            for kind, (path, body) in kinds.items():
                async def one(i: int) -> None:
                    async with limit:
                        await patch(c, path(i), body(i))  # noqa: B023 (awaited within the iteration)

                before, started = cpu.read(), time.monotonic()
                await asyncio.gather(*(one(i) for i in range(args.writes)))
                after, wall = cpu.read(), time.monotonic() - started
                result[kind] = {"apiserver_ms": round((after["kube-apiserver"] - before["kube-apiserver"])
                                                      / args.writes * 1000, 2),
                                "etcd_ms": round((after["etcd"] - before["etcd"]) / args.writes * 1000, 2),
                                "writes_per_s": round(args.writes / wall)}
            return result
        finally:
            c.k("delete", "namespace", namespace, "--wait=false")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=600, help="writes of each kind")
    parser.add_argument("--objects", type=int, default=50, help="objects of each kind the writes go round")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    result = asyncio.run(measure(args))
    print(json.dumps(result, indent=2))
    print(f"\nAPI server CPU per write ({args.writes} writes each, {args.concurrency} at a time, "
          f"over {args.objects} objects):")
    for kind, numbers in result.items():
        print(f"  {kind:16} {numbers['apiserver_ms']:5.2f} ms (etcd {numbers['etcd_ms']:.2f} ms), "
              f"{numbers['writes_per_s']} writes/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
