#!/usr/bin/env python3
"""Render a fleet file into KWOK-managed Node manifests (YAML on stdout).

Shared by hack/cluster.sh (local control plane) and hack/kind-up.sh (kind + in-cluster KWOK), so both
simulate the same GPU fleet. Fleet file: `pools: [{name, count, cpu, memory, [product, gpus,
gpuMemoryMiB, family, instanceType, labels]}]`.
"""

from __future__ import annotations

import argparse
import sys

import yaml

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"
FLEET_LABEL = "fal.ai/fleet-pool"
REQUIRED = ("name", "count", "cpu", "memory")


def render_node(pool: dict, index: int) -> dict:
    name = f"{pool['name']}-{index}"
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        FLEET_LABEL: pool["name"],
        **({"node.kubernetes.io/instance-type": pool["instanceType"]} if "instanceType" in pool else {}),
        **pool.get("labels", {}),
    }
    capacity = {"cpu": str(pool["cpu"]), "memory": str(pool["memory"]), "pods": str(pool.get("pods", 110))}
    taints = []
    if pool.get("gpus"):
        labels.update({
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": pool["product"],
            "nvidia.com/gpu.count": str(pool["gpus"]),
            "nvidia.com/gpu.memory": str(pool.get("gpuMemoryMiB", 0)),
            "nvidia.com/gpu.family": pool.get("family", "unknown"),
        })
        capacity[GPU_RESOURCE] = str(pool["gpus"])
        taints.append({"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": {KWOK_ANNOTATION: "fake"}},
        "spec": {"taints": taints, "providerID": f"kwok://{name}"},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "nodeInfo": {"kubeletVersion": "fake", "kubeProxyVersion": "fake", "architecture": "amd64",
                         "operatingSystem": "linux"},
        },
    }


def render_fleet(fleet: dict) -> list[dict]:
    pools = fleet.get("pools")
    if not isinstance(pools, list) or not pools:
        raise ValueError("fleet: `pools` must be a non-empty list")
    nodes = []
    for i, pool in enumerate(pools):
        missing = [k for k in REQUIRED if k not in pool]
        if missing:
            raise ValueError(f"fleet: pools[{i}] is missing {', '.join(missing)}")
        if pool.get("gpus") and "product" not in pool:
            raise ValueError(f"fleet: pools[{i}] ({pool['name']}) has gpus but no product")
        nodes.extend(render_node(pool, n) for n in range(int(pool["count"])))
    return nodes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fleet_file")
    args = parser.parse_args()
    with open(args.fleet_file) as f:
        try:
            nodes = render_fleet(yaml.safe_load(f) or {})
        except ValueError as e:
            print(f"{args.fleet_file}: {e}", file=sys.stderr)
            return 1
    yaml.safe_dump_all(nodes, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
