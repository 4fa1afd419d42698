#!/usr/bin/env python3
"""Render a fleet file into KWOK-managed Node manifests (YAML on stdout).

Shared by hack/cluster.sh (local control plane) and hack/kind-up.sh (kind + in-cluster KWOK), so both
simulate the same GPU fleet. Fleet file: `pools: [{name, count, cpu, memory, [product, gpus,
gpuMemoryMiB, family, instanceType, labels]}]`.

A fleet may also declare pools that grow from zero on demand, run by Karpenter's KWOK provider
(hack/cluster.sh only): `karpenter: {nodeRegistrationDelay, consolidateAfter, nodePools: [{name,
maxNodes, cpu, memory, instanceType, [product, gpus, gpuMemoryMiB, family, labels]}]}`. Each becomes a
NodePool whose nodes carry the same labels and GPU taint as a fixed pool's, and an instance type
(`--output instance-types`, the JSON Karpenter's `--instance-types-file-path` reads).
"""

from __future__ import annotations

import argparse
import json
import sys

import yaml

KWOK_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"
FLEET_LABEL = "fal.ai/fleet-pool"
REQUIRED = ("name", "count", "cpu", "memory")
NODEPOOL_REQUIRED = ("name", "maxNodes", "cpu", "memory", "instanceType")
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
NODE_CLASS = "falapp-local"
ZONE = "local-a"


def gpu_labels(pool: dict) -> dict:
    """NVIDIA GPU Feature Discovery labels of a GPU pool's nodes."""
    return {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": pool["product"],
        "nvidia.com/gpu.count": str(pool["gpus"]),
        "nvidia.com/gpu.memory": str(pool.get("gpuMemoryMiB", 0)),
        "nvidia.com/gpu.family": pool.get("family", "unknown"),
    }


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
        labels.update(gpu_labels(pool))
        capacity[GPU_RESOURCE] = str(pool["gpus"])
        taints.append(dict(GPU_TAINT))
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


def karpenter_pools(fleet: dict) -> list[dict]:
    """The fleet's autoscaled pools (none when it has no `karpenter` section), checked."""
    section = fleet.get("karpenter")
    if section is None:
        return []
    pools = section.get("nodePools") if isinstance(section, dict) else None
    if not isinstance(pools, list) or not pools:
        raise ValueError("fleet: `karpenter.nodePools` must be a non-empty list")
    for i, pool in enumerate(pools):
        missing = [k for k in NODEPOOL_REQUIRED if k not in pool]
        if missing:
            raise ValueError(f"fleet: karpenter.nodePools[{i}] is missing {', '.join(missing)}")
        if pool.get("gpus") and "product" not in pool:
            raise ValueError(f"fleet: karpenter.nodePools[{i}] ({pool['name']}) has gpus but no product")
        if not isinstance(pool["maxNodes"], int) or pool["maxNodes"] < 0:
            raise ValueError(f"fleet: karpenter.nodePools[{i}].maxNodes must be a whole number >= 0")
    return pools


def render_instance_types(fleet: dict) -> list[dict]:
    """One KWOK instance type per autoscaled pool: its shape, one on-demand offering in one zone."""
    types = []
    for pool in karpenter_pools(fleet):
        resources = {"cpu": str(pool["cpu"]), "memory": str(pool["memory"]), "pods": str(pool.get("pods", 110))}
        if pool.get("gpus"):
            resources[GPU_RESOURCE] = str(pool["gpus"])
        types.append({
            "name": pool["instanceType"],
            "offerings": [{"Price": 1.0, "Available": True, "Requirements": [
                {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": [ZONE]},
            ]}],
            "architecture": "amd64",
            "operatingSystems": ["linux"],
            "resources": resources,
        })
    return types


def render_nodepools(fleet: dict) -> list[dict]:
    """The KWOKNodeClass and one NodePool per autoscaled pool."""
    section = fleet.get("karpenter") or {}
    pools = karpenter_pools(fleet)
    if not pools:
        return []
    node_class = {
        "apiVersion": "karpenter.kwok.sh/v1alpha1", "kind": "KWOKNodeClass", "metadata": {"name": NODE_CLASS},
        # models the time a cloud instance takes to boot and join
        "spec": {"nodeRegistrationDelay": str(section.get("nodeRegistrationDelay", "5s"))},
    }
    out = [node_class]
    for pool in pools:
        labels = {"type": "kwok", **(gpu_labels(pool) if pool.get("gpus") else {}), **pool.get("labels", {})}
        out.append({
            "apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": pool["name"]},
            "spec": {
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeClassRef": {"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": NODE_CLASS},
                        "requirements": [
                            {"key": "node.kubernetes.io/instance-type", "operator": "In",
                             "values": [pool["instanceType"]]},
                            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                        ],
                        "taints": [dict(GPU_TAINT)] if pool.get("gpus") else [],
                        "expireAfter": "Never",
                    },
                },
                "limits": {"nodes": str(pool["maxNodes"])},
                # empty nodes go quickly so a test or demo sees scale-down within seconds
                "disruption": {"consolidationPolicy": "WhenEmptyOrUnderutilized",
                               "consolidateAfter": str(section.get("consolidateAfter", "10s")),
                               "budgets": [{"nodes": "100%"}]},
            },
        })
    return out


OUTPUTS = {
    "nodes": lambda fleet: yaml.safe_dump_all(render_fleet(fleet), sort_keys=False),
    "nodepools": lambda fleet: yaml.safe_dump_all(render_nodepools(fleet), sort_keys=False),
    "instance-types": lambda fleet: json.dumps(render_instance_types(fleet), indent=1) + "\n",
    "autoscaled-pools": lambda fleet: "".join(f"{p['name']}\n" for p in karpenter_pools(fleet)),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fleet_file")
    parser.add_argument("--output", choices=sorted(OUTPUTS), default="nodes",
                        help="nodes (default); the autoscaled pools' NodePools, instance types, or names")
    args = parser.parse_args()
    with open(args.fleet_file) as f:
        try:
            fleet = yaml.safe_load(f) or {}
            render_fleet(fleet)  # the fixed pools are checked whatever is printed
            text = OUTPUTS[args.output](fleet)
        except ValueError as e:
            print(f"{args.fleet_file}: {e}", file=sys.stderr)
            return 1
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
