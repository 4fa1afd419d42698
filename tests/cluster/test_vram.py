"""Choosing machine types by VRAM need (spec.gpuMemory) on the real scheduler: the seed's table on the
default catalogue and fleet, the smallest fitting type first and fallback along the resolved list, a
GPU count per type on the pods, and catalogue edits picked up by running apps make-before-break.

Scenarios with private pools ask for more VRAM per GPU (200Gi) than any default type has (192Gi), so
only the test's own MachineTypes are candidates."""

from __future__ import annotations

from collections import Counter

from falapp_operator.api.names import TYPE_LABEL
from tests.cluster.builders import falapp
from tests.cluster.helpers import (
    Sampler,
    app_pods,
    events_for,
    ready_by_type,
    wait_condition,
    wait_placement,
)
from tests.kube import Kubectl, wait_until


def gpus_requested(pods: list[dict]) -> Counter:
    """(machine type, nvidia.com/gpu request) -> pods."""
    return Counter((p["metadata"]["labels"][TYPE_LABEL],
                    p["spec"]["containers"][0]["resources"]["requests"].get("nvidia.com/gpu")) for p in pods)


def wait_candidates(kctl: Kubectl, name: str, want: str, timeout: float = 30) -> dict:
    return wait_until(lambda: (s := kctl.get("falapp", name).get("status") or {}).get("candidates") == want and s,
                      timeout=timeout, message=f"{name} candidates {want}")


def wide_table(kctl: Kubectl) -> dict[str, dict[str, str]]:
    """`kubectl get falapps -o wide` as a user reads it: app -> column -> cell."""
    lines = kctl.run("get", "falapps", "-o", "wide").stdout.splitlines()
    header = lines[0].split()
    return {cells[0]: dict(zip(header, cells, strict=True)) for cells in (line.split() for line in lines[1:])}


def test_the_seed_table_on_the_default_catalogue(kctl: Kubectl, kubectl: Kubectl, running_operator):
    """fal's guide: pick the smallest GPU that fits. 20Gi -> RTX 4090 first; 60Gi -> H100, H200, B200;
    60Gi split across GPUs -> 2 x RTX 5090 first, with the GPU count each type needs."""
    kctl.apply(falapp("sdxl", None, gpus=None, gpuMemory="20Gi"))
    kctl.apply(falapp("llm", None, gpus=None, gpuMemory="60Gi"))
    kctl.apply(falapp("llm-split", None, gpus=None, gpuMemory="60Gi", splitAcrossGpus=True))
    assert gpus_requested(wait_placement(kctl, "sdxl", {"gpu-rtx4090": 1})) == {("gpu-rtx4090", "1"): 1}
    assert gpus_requested(wait_placement(kctl, "llm", {"gpu-h100": 1})) == {("gpu-h100", "1"): 1}
    assert gpus_requested(wait_placement(kctl, "llm-split", {"gpu-rtx5090": 1})) == {("gpu-rtx5090", "2"): 1}
    wait_candidates(kctl, "sdxl", "GPU-RTX4090(1x24Gi),GPU-RTX5090(1x32Gi),GPU-A100(1x40Gi),GPU-L40(1x48Gi),"
                                  "GPU-H100(1x80Gi),GPU-H200(1x141Gi),GPU-B200(1x192Gi)")
    wait_candidates(kctl, "llm", "GPU-H100(1x80Gi),GPU-H200(1x141Gi),GPU-B200(1x192Gi)")
    status = wait_candidates(kctl, "llm-split", "GPU-RTX5090(2x32Gi),GPU-H100(1x80Gi),GPU-A100(2x40Gi),"
                                                "GPU-L40(2x48Gi),GPU-RTX4090(4x24Gi),GPU-H200(1x141Gi),"
                                                "GPU-B200(1x192Gi)")
    assert [(p["machineType"], p["gpusPerReplica"]) for p in status["placements"]] == [("GPU-RTX5090", 2)]
    for name in ("sdxl", "llm", "llm-split"):
        wait_condition(kctl, "falapp", name, "Ready")
    table = wide_table(kctl)
    assert table["llm"]["CANDIDATES"] == "GPU-H100(1x80Gi),GPU-H200(1x141Gi),GPU-B200(1x192Gi)"
    assert table["llm-split"]["MACHINES"] == "GPU-RTX5090x1"
    machinetypes = kubectl.run("get", "machinetypes").stdout.splitlines()
    assert machinetypes[0].split()[:3] == ["NAME", "DISPLAY", "VRAM"]
    assert any(line.split()[:3] == ["gpu-h200", "GPU-H200", "141Gi"] for line in machinetypes)


def test_smallest_fitting_type_first_then_the_next_on_the_list(kctl: Kubectl, kubectl: Kubectl, running_operator,
                                                                pools):
    small, mid, big = (pools.machine_type("v128", vram="128Gi"), pools.machine_type("v256", vram="256Gi"),
                       pools.machine_type("v288", vram="288Gi"))
    pools.add_node("v128", gpus=8)
    # room for 8 GPUs but one pod: the capacity view cannot see that, the scheduler can, so the second
    # replica really goes Unschedulable on the smallest fitting type and must fall back
    node = pools.add_node("v256", gpus=8)
    kubectl.run("patch", "node", node, "--subresource=status", "--type=merge",
                "-p", '{"status":{"allocatable":{"pods":"1"},"capacity":{"pods":"1"}}}')
    pools.add_node("v288", gpus=8)
    kctl.apply(falapp("big-model", None, gpus=None, gpuMemory="200Gi", replicas=1))
    first = wait_placement(kctl, "big-model", {mid.lower(): 1})
    wait_candidates(kctl, "big-model", f"{mid}(1x256Gi),{big}(1x288Gi)")
    kctl.run("scale", "falapp/big-model", "--replicas=2")
    pods = wait_placement(kctl, "big-model", {mid.lower(): 1, big.lower(): 1})
    assert first[0]["metadata"]["uid"] in {p["metadata"]["uid"] for p in pods}, "the running replica moved"
    assert small.lower() not in {p["metadata"]["labels"][TYPE_LABEL] for p in app_pods(kctl, "big-model")}
    fell = events_for(kctl, "big-model", "FellBack")
    assert fell and fell[0]["message"].startswith(f"replica moved from {mid} (1 GPU) to {big} (1 GPU)")
    assert "Too many pods" in fell[0]["message"]


def test_fallback_with_split_requests_each_types_gpu_count(kctl: Kubectl, kubectl: Kubectl, running_operator,
                                                           pools):
    """100Gi split over GPUs: one 141Gi GPU, or four 48Gi ones (two hold 96Gi; three is no allowed count)."""
    big, small = pools.machine_type("v141", vram="141Gi"), pools.machine_type("v48", vram="48Gi")
    node = pools.add_node("v141", gpus=8)
    kubectl.run("patch", "node", node, "--subresource=status", "--type=merge",
                "-p", '{"status":{"allocatable":{"pods":"1"},"capacity":{"pods":"1"}}}')
    pools.add_node("v48", gpus=8)
    kctl.apply(falapp("split", [big, small], gpus=None, gpuMemory="100Gi", splitAcrossGpus=True, replicas=2))
    pods = wait_placement(kctl, "split", {big.lower(): 1, small.lower(): 1})
    assert gpus_requested(pods) == {(big.lower(), "1"): 1, (small.lower(), "4"): 1}
    status = kctl.get("falapp", "split")["status"]
    assert status["candidates"] == f"{big}(1x141Gi),{small}(4x48Gi)"
    assert [(p["machineType"], p["gpusPerReplica"]) for p in status["placements"]] == [(big, 1), (small, 4)]
    fell = events_for(kctl, "split", "FellBack")
    assert fell and fell[0]["message"].startswith(f"replica moved from {big} (1 GPU) to {small} (4 GPUs)")


def test_catalogue_edits_re_resolve_a_running_app_make_before_break(kctl: Kubectl, running_operator, pools):
    big = pools.machine_type("v288", vram="288Gi")
    pools.add_node("v288", gpus=8)
    kctl.apply(falapp("grow", None, gpus=None, gpuMemory="200Gi", replicas=1, timeout="3s"))
    wait_placement(kctl, "grow", {big.lower(): 1})
    wait_condition(kctl, "falapp", "grow", "Ready")
    with Sampler(lambda: sum(ready_by_type(kctl, "grow").values())) as ready:
        # a new type with a smaller GPU that still fits comes first: the replica moves there
        pools.add_node("v256", gpus=8)
        mid = pools.machine_type("v256", vram="256Gi")
        wait_candidates(kctl, "grow", f"{mid}(1x256Gi),{big}(1x288Gi)")
        wait_placement(kctl, "grow", {mid.lower(): 1})
        wait_until(lambda: events_for(kctl, "grow", "ReturnedToPreferred"), timeout=30, message="returned")
        # its VRAM turns out smaller than the model: it is no candidate any more, the replica drains back
        pools.machine_type("v256", vram="128Gi")
        wait_candidates(kctl, "grow", f"{big}(1x288Gi)")
        wait_placement(kctl, "grow", {big.lower(): 1})
        wait_until(lambda: events_for(kctl, "grow", "Drained"), timeout=30, message="drained")
    assert all(isinstance(n, int) for n in ready.samples), ready.samples
    assert min(ready.samples) >= 1, f"a Ready replica went before its replacement was Ready: {ready.samples}"
    started = events_for(kctl, "grow", "ReturnProbeStarted")
    assert started and started[0]["message"].startswith(f"{mid} (1 GPU) has room: started a replica there")
    drain = events_for(kctl, "grow", "DrainStarted")
    assert drain and drain[0]["message"].startswith(f"{mid.lower()} is no longer a candidate")


def test_a_changed_vram_changes_the_gpu_count_on_the_same_type_make_before_break(kctl: Kubectl, running_operator,
                                                                                 pools):
    """The type stays the app's only candidate but its GPUs shrink: a replica needs 4 of them instead of 2.
    The replicas are replaced on the type with the new count, none of the Ready ones going first."""
    split = pools.machine_type("v160", vram="160Gi")
    pools.add_node("v160", gpus=16)  # room for the two new replicas beside one old one
    kctl.apply(falapp("resplit", [split], gpus=None, gpuMemory="300Gi", splitAcrossGpus=True, replicas=2))
    assert gpus_requested(wait_placement(kctl, "resplit", {split.lower(): 2})) == {(split.lower(), "2"): 2}
    wait_condition(kctl, "falapp", "resplit", "Ready")
    with Sampler(lambda: sum(ready_by_type(kctl, "resplit").values())) as ready:
        pools.machine_type("v160", vram="80Gi")
        wait_candidates(kctl, "resplit", f"{split}(4x80Gi)")
        wait_until(lambda: gpus_requested(app_pods(kctl, "resplit")) == {(split.lower(), "4"): 2}
                   and sum(ready_by_type(kctl, "resplit").values()) == 2, timeout=60, message="two 4-GPU replicas")
    assert all(isinstance(n, int) for n in ready.samples), ready.samples
    assert min(ready.samples) >= 2, f"a Ready replica went before its replacement was Ready: {ready.samples}"
    status = kctl.get("falapp", "resplit")["status"]
    assert [(p["machineType"], p["gpusPerReplica"]) for p in status["placements"]] == [(split, 4)]
