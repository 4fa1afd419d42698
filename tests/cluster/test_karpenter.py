"""Autoscaled GPU pools with a real Karpenter (its KWOK provider) on a second local cluster, started with
hack/fleets/autoscaled.yaml: an H100 NodePool that grows from no node to at most two nodes of 8 GPUs,
beside two fixed A100 nodes. The default catalogue's GPU-H100 type is found autoscaled from the
NodePool; nothing is simulated: Karpenter's own Nominated/FailedScheduling events and nodes decide.

The cluster has its own state and ports (FALAPP_STATE + "-autoscaled", the API and etcd ports + 1, or
FALAPP_AUTOSCALED_API_PORT / FALAPP_AUTOSCALED_ETCD_PORT), so the default fleet other tests use is
untouched; it is started for this module and stopped after it (kept with FALAPP_KEEP_CLUSTER=1).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from falapp_operator.api.names import KARPENTER_NODEPOOL_LABEL, TYPE_LABEL
from hack.rigs import autoscaled_env
from tests.cluster.builders import falapp
from tests.cluster.conftest import OperatorProcess
from tests.cluster.helpers import (
    Sampler,
    app_pods,
    events_for,
    node_of,
    pod_events,
    pool_nodes,
    ready_by_type,
    wait_placement,
)
from tests.conftest import CLUSTER, REPO
from tests.kube import Kubectl, wait_until

FLEET = REPO / "hack" / "fleets" / "autoscaled.yaml"
POOL = "h100"  # the fleet's NodePool
POOL_LIMIT = 2
H100, A100 = "GPU-H100", "GPU-A100"
H100_OBJ, A100_OBJ = "gpu-h100", "gpu-a100"
# Karpenter removes a node some 30-60 s after it went empty (consolidateAfter 10s, then its own checks)
NODE_REMOVAL = 150


def _cluster(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLUSTER), *args], env=env, check=check, capture_output=True, text=True)


@pytest.fixture(scope="module")
def ak() -> Kubectl:
    """Admin kubectl for the autoscaled cluster; starts it (Karpenter included) unless it runs."""
    env = autoscaled_env()
    started = False
    if _cluster(env, "status", check=False).returncode != 0:
        up = _cluster(env, "up", "--fleet", str(FLEET), check=False)
        assert up.returncode == 0, f"hack/cluster.sh up --fleet {FLEET} failed:\n{up.stderr}"
        started = True
    binary = Path(_cluster(env, "bindir").stdout.strip()) / "kubectl"
    yield Kubectl(binary, Path(_cluster(env, "kubeconfig").stdout.strip()))
    if started and not os.environ.get("FALAPP_KEEP_CLUSTER"):
        _cluster(env, "down", check=False)


@pytest.fixture(scope="module")
def aoperator(ak: Kubectl, tmp_path_factory) -> OperatorProcess:
    """CRDs, the default catalogue and one operator on the autoscaled cluster."""
    ak.run("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for crd in ("falapps.fal.ai", "machinetypes.fal.ai"):
        ak.run("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    ak.run("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "catalog" / "default.yaml"))
    proc = OperatorProcess(ak.kubeconfig, tmp_path_factory.mktemp("operator-autoscaled"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def akctl(ak: Kubectl, aoperator: OperatorProcess) -> Kubectl:
    """kubectl bound to a fresh namespace on the autoscaled cluster, with the operator running."""
    if aoperator.proc is None or aoperator.proc.poll() is not None:
        aoperator.start()
    name = f"t-{uuid.uuid4().hex[:8]}"
    ak.run("create", "namespace", name)
    yield ak.in_namespace(name)
    ak.run("delete", "namespace", name, "--wait=false", check=False)


def wait_pool_empty(ak: Kubectl) -> None:
    """No node of the pool left (earlier tests' load is gone and Karpenter removed its nodes)."""
    wait_until(lambda: not ak.get("nodes", None, "-l", f"{KARPENTER_NODEPOOL_LABEL}={POOL}")["items"],
               timeout=NODE_REMOVAL, interval=1, message=f"NodePool {POOL} without nodes")


def machinetype_status(ak: Kubectl, name: str) -> dict:
    return ak.get("machinetype", name).get("status") or {}


def machinetypes_table(ak: Kubectl) -> dict[str, dict[str, str]]:
    """`kubectl get machinetypes` as a user reads it: row name -> column header -> cell (cut at the
    headers' positions: a cell may be empty)."""
    lines = ak.run("get", "machinetypes").stdout.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
    names = lines[0].split()
    rows = [{name: line[a:b].strip() for name, a, b in zip(names, starts, [*starts[1:], None], strict=True)}
            for line in lines[1:]]
    return {row["NAME"]: row for row in rows}


def karpenter_refusals(kctl: Kubectl) -> list[dict]:
    """Karpenter's FailedScheduling events in the namespace (their pods may be gone by now)."""
    return kctl.get("events", None, "--field-selector", "source=karpenter,reason=FailedScheduling")["items"]


def fill_pool(akctl: Kubectl) -> set[str]:
    """An app that takes the whole pool (two replicas of 8 GPUs): returns the pool's nodes."""
    akctl.apply(falapp("fill", [H100], gpus=8, replicas=POOL_LIMIT, timeout="4s", scale_up_timeout="3m"))
    wait_placement(akctl, "fill", {H100_OBJ: POOL_LIMIT}, timeout=120)
    nodes = {n["metadata"]["name"] for n in pool_nodes(akctl, POOL)}
    assert len(nodes) == POOL_LIMIT, f"the pool should be at its limit of {POOL_LIMIT} nodes: {nodes}"
    return nodes


def test_preferred_type_without_nodes_waits_for_the_pool_to_grow(ak, akctl):
    wait_pool_empty(ak)
    # found autoscaled from the NodePool (the catalogue does not say so)
    wait_until(lambda: machinetype_status(ak, H100_OBJ).get("autoscaled") is True, timeout=60,
               message=f"{H100_OBJ} status.autoscaled")
    assert machinetypes_table(ak)[H100_OBJ]["AUTOSCALED"] == "true"
    assert ak.get("machinetype", H100_OBJ)["spec"].get("autoscaled") is None  # absent: detected
    # unschedulableTimeout (4s) is shorter than a node takes to come (about 7 s): only Karpenter's
    # Nominated keeps the replica waiting
    with Sampler(lambda: {p["metadata"]["labels"][TYPE_LABEL] for p in app_pods(akctl, "grow")}) as seen:
        akctl.apply(falapp("grow", [H100, A100], gpus=8, timeout="4s", scale_up_timeout="3m"))
        pods = wait_placement(akctl, "grow", {H100_OBJ: 1}, timeout=90)
    node = node_of(akctl, pods[0])
    assert node["metadata"]["labels"].get(KARPENTER_NODEPOOL_LABEL) == POOL, "the replica should run on a new pool node"
    nominated = [e for e in pod_events(akctl, pods[0]["metadata"]["name"], "karpenter") if e["reason"] == "Nominated"]
    assert nominated and nominated[0]["message"].startswith("Pod should schedule on: nodeclaim/")
    assert not events_for(akctl, "grow", "FellBack")
    assert all(A100_OBJ not in s for s in seen.samples if isinstance(s, set)), "a replica was created on A100"


def test_pool_at_its_limit_falls_back_at_once(ak, akctl):
    wait_pool_empty(ak)
    fill_pool(akctl)
    # both timeouts far away: only Karpenter's refusal can move the replica on quickly
    start = time.monotonic()
    akctl.apply(falapp("over", [H100, A100], gpus=8, timeout="5m", scale_up_timeout="10m"))
    wait_placement(akctl, "over", {A100_OBJ: 1}, timeout=90)
    assert time.monotonic() - start < 90
    assert events_for(akctl, "over", "FellBack"), "a FellBack event should say the replica moved on"
    assert any("node limits have been exhausted" in e["message"] for e in karpenter_refusals(akctl))
    assert len(pool_nodes(ak, POOL)) == POOL_LIMIT


def test_type_no_pool_offers_falls_back_at_once(ak, akctl):
    # declared autoscaled (as for cluster-autoscaler), but no NodePool makes H200 nodes
    name = f"h200-{uuid.uuid4().hex[:6]}"
    ak.apply({"apiVersion": "fal.ai/v1alpha1", "kind": "MachineType", "metadata": {"name": name},
              "spec": {"gpu": {"maxGpusPerReplica": 8, "vram": "141Gi"}, "resources": {"cpu": "12", "memory": "112Gi"},
                       "nodeAffinity": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H200"]}],
                       "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                       "autoscaled": True}})
    try:
        start = time.monotonic()
        akctl.apply(falapp("nopool", [name.upper(), A100], gpus=8, timeout="5m", scale_up_timeout="10m"))
        wait_placement(akctl, "nopool", {A100_OBJ: 1}, timeout=90)
        assert time.monotonic() - start < 90
        assert events_for(akctl, "nopool", "FellBack")
        # "incompatible requirements ... nvidia.com/gpu.product" (or "node limits have been exhausted"
        # while an earlier test's nodes still fill the pool: Karpenter checks limits first)
        assert karpenter_refusals(akctl), "Karpenter should have refused the H200 replica"
    finally:
        ak.run("delete", "machinetype", name, "--wait=false", check=False)


def test_empty_node_is_removed_and_machinetypes_follow(ak, akctl):
    wait_pool_empty(ak)
    akctl.apply(falapp("brief", [H100, A100], gpus=8, timeout="4s", scale_up_timeout="3m"))
    pods = wait_placement(akctl, "brief", {H100_OBJ: 1}, timeout=90)
    node = pods[0]["spec"]["nodeName"]
    wait_until(lambda: (s := machinetype_status(ak, H100_OBJ)).get("nodes") == 1 and s.get("allocatableGpus") == 8
               and s.get("freeGpus") == 0 and s.get("placedReplicas") == 1, timeout=60,
               message=f"{H100_OBJ} status with one full node")
    akctl.run("delete", "falapp", "brief")
    wait_until(lambda: node not in {n["metadata"]["name"] for n in ak.get("nodes")["items"]},
               timeout=NODE_REMOVAL, interval=1, message=f"Karpenter removing the empty node {node}")
    status = wait_until(lambda: (s := machinetype_status(ak, H100_OBJ)).get("nodes") == 0 and s, timeout=60,
                        message=f"{H100_OBJ} status without nodes")
    assert status.get("allocatableGpus") == 0 and status.get("placedReplicas") == 0 and status.get("autoscaled")
    row = machinetypes_table(ak)[H100_OBJ]
    assert row["NODES"] == "0" and row["AUTOSCALED"] == "true", row


def test_replica_that_fell_back_returns_when_the_pool_can_grow_again(ak, akctl):
    wait_pool_empty(ak)
    fill_nodes = fill_pool(akctl)
    # refused at once; then the type cools for unschedulableTimeout (90s), longer than Karpenter takes
    # to remove the filler's nodes once they are empty, so the return needs the pool to grow again
    akctl.apply(falapp("back", [H100, A100], gpus=8, timeout="90s", scale_up_timeout="3m"))
    wait_placement(akctl, "back", {A100_OBJ: 1}, timeout=60)
    with Sampler(lambda: ready_by_type(akctl, "back")) as ready:
        akctl.run("delete", "falapp", "fill")
        wait_until(lambda: not fill_nodes & {n["metadata"]["name"] for n in pool_nodes(ak, POOL)},
                   timeout=NODE_REMOVAL, interval=1, message="the filler's nodes removed")
        pods = wait_placement(akctl, "back", {H100_OBJ: 1}, timeout=300)
    node = node_of(akctl, pods[0])
    assert node["metadata"]["labels"].get(KARPENTER_NODEPOOL_LABEL) == POOL
    assert node["metadata"]["name"] not in fill_nodes, "the replica should return onto a node the pool added"
    samples = [s for s in ready.samples if isinstance(s, Counter)]
    assert samples and all(sum(s.values()) >= 1 for s in samples), "make-before-break: never without a Ready replica"
    assert events_for(akctl, "back", "ReturnedToPreferred")
