"""Choosing machine types by VRAM need (spec.gpuMemory, splitAcrossGpus): table-driven tests of the
resolution against small catalogues and the default one (fal's "Machine Types" table), and what the
planner makes of a per-type GPU count: pod requests, status and events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from falapp_operator.api import DEFAULT_CATALOG, FalAppSpec, FalAppStatus, MachineType
from falapp_operator.placement import NodeFree, PodView
from falapp_operator.placement.eligibility import candidate_types, resolve
from falapp_operator.reconcile.app import AppSnapshot, candidates_summary, plan
from falapp_operator.reconcile.children import AppRef, pod_template
from tests.builders import changed, falapp_spec, machine_type_model

GI = 1024**3
NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
REF = AppRef("llm", "team-a", "0b7f1c1e-0000-4000-8000-000000000002")


# --- builders ---------------------------------------------------------------------------------------
def gpu_type(name: str, vram: str | None, *, max_gpus: int = 8, nvenc: int = 0, price: str | None = None,
             namespace: str | None = None, cpu: str = "12", memory: str = "112Gi") -> MachineType:
    gpu = changed({"maxGpusPerReplica": max_gpus, "nvencEngines": nvenc}, {"vram": vram})
    selector = {"matchLabels": {"kubernetes.io/metadata.name": namespace}} if namespace is not None else None
    return machine_type_model(name.lower(), displayName=name, gpu=gpu, resources={"cpu": cpu, "memory": memory},
                              nodeAffinity=None, price=price, namespaceSelector=selector)


def cpu_type(name: str) -> MachineType:
    return machine_type_model(name.lower(), displayName=name, gpu=None, nodeAffinity=None,
                              resources={"cpu": "2", "memory": "2Gi"})


def app(gpu_memory: str | None = None, **spec: Any) -> FalAppSpec:
    return falapp_spec(**{"image": "registry.example.com/llm:1", "machineTypes": None, "gpuMemory": gpu_memory,
                          **spec})


def resolved(spec: FalAppSpec, catalogue: list[MachineType], namespace: str = "team-a") -> list[str]:
    """`GPU-H100x1`-style: each candidate in order with the GPUs a replica gets there."""
    resolution = resolve(spec, catalogue, namespace, {"kubernetes.io/metadata.name": namespace})
    assert resolution.problem is None, resolution.problem
    return [f"{o.display}x{o.gpus}" for o in resolution.options]


SEED = list(DEFAULT_CATALOG)


# --- the seed's table ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    spec: FalAppSpec
    want: list[str]
    catalogue: list[MachineType] = field(default_factory=lambda: SEED)


CASES = [
    # pick the smallest GPU that fits: 24 GB RTX 4090 first, up to 192 GB B200
    Case("seed-20Gi", app("20Gi"), ["GPU-RTX4090x1", "GPU-RTX5090x1", "GPU-A100x1", "GPU-L40x1", "GPU-H100x1",
                                    "GPU-H200x1", "GPU-B200x1"]),
    Case("seed-24Gi-fits-exactly", app("24Gi"), ["GPU-RTX4090x1", "GPU-RTX5090x1", "GPU-A100x1", "GPU-L40x1",
                                                 "GPU-H100x1", "GPU-H200x1", "GPU-B200x1"]),
    Case("seed-60Gi", app("60Gi"), ["GPU-H100x1", "GPU-H200x1", "GPU-B200x1"]),
    Case("seed-150Gi", app("150Gi"), ["GPU-B200x1"]),
    # split: per type the fewest of 1, 2, 4, 8 GPUs that hold 60Gi; by total VRAM, then fewer GPUs
    # (H100 1x80Gi before A100 2x40Gi; L40 2x48Gi before RTX4090 4x24Gi: 3 RTX4090 would do, but
    # counts are powers of two)
    Case("seed-60Gi-split", app("60Gi", splitAcrossGpus=True),
         ["GPU-RTX5090x2", "GPU-H100x1", "GPU-A100x2", "GPU-L40x2", "GPU-RTX4090x4", "GPU-H200x1", "GPU-B200x1"]),
    Case("seed-600Gi-split", app("600Gi", splitAcrossGpus=True),
         ["GPU-H100x8", "GPU-B200x4", "GPU-H200x8"]),
    Case("seed-20Gi-video", app("20Gi", requiresNvenc=True), ["GPU-RTX4090x1", "GPU-RTX5090x1", "GPU-L40x1"]),
    Case("seed-60Gi-split-video", app("60Gi", splitAcrossGpus=True, requiresNvenc=True),
         ["GPU-RTX5090x2", "GPU-L40x2", "GPU-RTX4090x4"]),
    Case("one-gpu-written-out", app("60Gi", numGpus=1, splitAcrossGpus=False),
         ["GPU-H100x1", "GPU-H200x1", "GPU-B200x1"]),
    # machineTypes given: the list keeps its order, gpuMemory sets the GPUs per type
    Case("listed-order-kept", app("60Gi", machineTypes=["GPU-B200", "GPU-H100"]), ["GPU-B200x1", "GPU-H100x1"]),
    Case("listed-split", app("60Gi", splitAcrossGpus=True, machineTypes=["GPU-H100", "gpu-rtx5090", "GPU-RTX4090"]),
         ["GPU-H100x1", "GPU-RTX5090x2", "GPU-RTX4090x4"]),
    # ties: equal (total) VRAM -> the cheaper, priced before unpriced, then by name
    Case("tie-price", app("40Gi"), ["B-CHEAPx1", "A-DEARx1", "C-UNPRICEDx1"],
         [gpu_type("A-DEAR", "48Gi", price="3.5"), gpu_type("B-CHEAP", "48Gi", price="1.2"),
          gpu_type("C-UNPRICED", "48Gi")]),
    Case("tie-name", app("40Gi"), ["X-ONEx1", "Y-TWOx1"], [gpu_type("Y-TWO", "48Gi"), gpu_type("X-ONE", "48Gi")]),
    Case("tie-split-price-per-replica", app("60Gi", splitAcrossGpus=True), ["BIGx1", "SMALLx2"],
         [gpu_type("SMALL", "32Gi", price="1"), gpu_type("BIG", "64Gi", price="2.5")]),
    # maxGpusPerReplica caps the counts; counts are powers of two below it
    Case("max-gpus-caps-split", app("60Gi", splitAcrossGpus=True), ["GPU-BIGx1", "GPU-FOURx4"],
         [gpu_type("GPU-TWO", "24Gi", max_gpus=2), gpu_type("GPU-FOUR", "24Gi", max_gpus=4),
          gpu_type("GPU-BIG", "80Gi", max_gpus=1)]),
    Case("max-gpus-six-allows-four", app("100Gi", splitAcrossGpus=True), ["GPU-SIXx4"],
         [gpu_type("GPU-SIX", "32Gi", max_gpus=6)]),
    # types that declare no VRAM, CPU types and types the namespace may not use are never candidates
    Case("unsized-cpu-and-entitled-skipped", app("20Gi"), ["GPU-OURSx1", "GPU-OPENx1"],
         [gpu_type("GPU-UNSIZED", None), cpu_type("XL"), gpu_type("GPU-THEIRS", "24Gi", namespace="team-b"),
          gpu_type("GPU-OURS", "24Gi", namespace="team-a"), gpu_type("GPU-OPEN", "32Gi")]),
    # at most eight candidates (as many as machineTypes may list): the smallest that fit
    Case("at-most-eight", app("1Gi"), [f"GPU-{i:02d}x1" for i in range(1, 9)],
         [gpu_type(f"GPU-{i:02d}", f"{i}Gi") for i in range(10, 0, -1)]),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_candidates_by_vram(case: Case) -> None:
    assert resolved(case.spec, case.catalogue) == case.want


def test_a_replica_requests_cpu_and_memory_per_gpu_it_gets() -> None:
    resolution = resolve(app("60Gi", splitAcrossGpus=True), SEED)
    by_type = {o.display: o for o in resolution.options}
    assert (by_type["GPU-RTX5090"].gpus, by_type["GPU-RTX5090"].cpu_milli, by_type["GPU-RTX5090"].memory_bytes) == (
        2, 28_000, 120 * GI)
    assert (by_type["GPU-H100"].gpus, by_type["GPU-H100"].cpu_milli, by_type["GPU-H100"].memory_bytes) == (
        1, 12_000, 112 * GI)


# --- what makes such a spec invalid (InvalidSpec) -----------------------------------------------------
INVALID = [
    ("too-big-for-one-gpu", app("300Gi"), SEED,
     ["spec.gpuMemory", "no machine type fits 300Gi", "192Gi on GPU-B200", "splitAcrossGpus"]),
    ("too-big-even-split", app("2Ti", splitAcrossGpus=True), SEED,
     ["spec.gpuMemory", "no machine type fits 2Ti", "8 x 192Gi on GPU-B200"]),
    ("fits-only-where-not-entitled", app("20Gi"), [gpu_type("GPU-THEIRS", "24Gi", namespace="team-b")],
     ["spec.gpuMemory", "no machine type this app may use fits 20Gi", "not available to namespace team-a"]),
    ("fits-only-without-encoders", app("100Gi", requiresNvenc=True), SEED,
     ["spec.gpuMemory", "GPU-H200 has no NVENC encoders", "GPU-B200 has no NVENC encoders"]),
    ("no-type-declares-vram", app("20Gi"), [gpu_type("GPU-UNSIZED", None)],
     ["spec.gpuMemory", "no GPU machine type declares gpu.vram"]),
    ("listed-type-too-small", app("60Gi", machineTypes=["GPU-H100", "GPU-RTX4090"]), SEED,
     ["spec.machineTypes", "GPU-RTX4090 has 24Gi per GPU, less than gpuMemory 60Gi"]),
    ("listed-type-too-small-even-split", app("200Gi", splitAcrossGpus=True, machineTypes=["GPU-TWO"]),
     [gpu_type("GPU-TWO", "80Gi", max_gpus=2)],
     ["spec.machineTypes", "GPU-TWO holds at most 2 x 80Gi per replica", "less than gpuMemory 200Gi"]),
    ("listed-cpu-type", app("20Gi", machineTypes=["GPU-H100", "M"]), SEED,
     ["spec.machineTypes", "M is a CPU type but gpuMemory is 20Gi"]),
    ("listed-type-without-vram", app("20Gi", machineTypes=["GPU-UNSIZED"]), [gpu_type("GPU-UNSIZED", None)],
     ["spec.machineTypes", "GPU-UNSIZED declares no gpu.vram"]),
    ("requests-too-large", app("60Gi", splitAcrossGpus=True, machineTypes=["GPU-HUGE"]),
     [gpu_type("GPU-HUGE", "4Gi", max_gpus=16, cpu="1P")], ["spec.gpuMemory", "16 x the cpu per GPU of GPU-HUGE"]),
]


@pytest.mark.parametrize("spec, catalogue, words", [pytest.param(s, c, w, id=i) for i, s, c, w in INVALID])
def test_invalid_when_no_type_fits(spec: FalAppSpec, catalogue: list[MachineType], words: list[str]) -> None:
    resolution = resolve(spec, catalogue, "team-a", {"kubernetes.io/metadata.name": "team-a"})
    assert resolution.options == [] and resolution.problem is not None
    for word in words:
        assert word in resolution.problem


def test_room_is_looked_up_for_the_candidates() -> None:
    names = [m.display_name for m in candidate_types(app("60Gi"), SEED)]
    assert names == ["GPU-H100", "GPU-H200", "GPU-B200"]
    listed = candidate_types(app("60Gi", machineTypes=["gpu-b200", "GPU-V100", "GPU-H100"]), SEED)
    assert [m.display_name for m in listed] == ["GPU-B200", "GPU-H100"]


# --- per-type GPU counts, as placement speaks of them --------------------------------------------------
def test_pod_templates_request_each_types_gpu_count() -> None:
    spec = app("60Gi", splitAcrossGpus=True)
    resolution = resolve(spec, SEED)
    gpus = {}
    for option in resolution.options:
        container = pod_template(REF, spec, option, resolution.types[option.name])["spec"]["containers"][0]
        resources = container["resources"]
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]
        gpus[option.display] = resources["requests"]["nvidia.com/gpu"]
    assert gpus == {"GPU-RTX5090": "2", "GPU-H100": "1", "GPU-A100": "2", "GPU-L40": "2", "GPU-RTX4090": "4",
                    "GPU-H200": "1", "GPU-B200": "1"}


def _snapshot(spec: FalAppSpec, counts: dict[str, int], pods: list[PodView],
              free: dict[str, list[NodeFree]]) -> AppSnapshot:
    resolution = resolve(spec, SEED)
    hashes = {o.name: pod_template(REF, spec, o, resolution.types[o.name])["metadata"]["annotations"]
              ["fal.ai/template-hash"] for o in resolution.options}
    pods = [PodView(p.name, p.machine_type, p.created, bound=p.bound, ready=p.ready,
                    unschedulable_since=p.unschedulable_since, scheduler_message=p.scheduler_message,
                    template=hashes[p.machine_type]) for p in pods]
    return AppSnapshot(ref=REF, generation=1, spec=spec, status=FalAppStatus(), catalogue=SEED, counts=counts,
                       surge=None, pods=pods, free=free, now=NOW)


def test_a_stuck_replica_falls_back_with_the_next_types_gpu_count() -> None:
    """60Gi split: the RTX 5090 (2 GPUs) has no room, so the replica moves on to the H100 (1 GPU); the
    Deployment there asks for one GPU, and status and the event say how many GPUs each type takes."""
    spec = app("60Gi", splitAcrossGpus=True, replicas=2)
    stuck_since = NOW - timedelta(seconds=120)
    pods = [PodView("a", "gpu-rtx5090", NOW - timedelta(minutes=10), bound=True, ready=True),
            PodView("b", "gpu-rtx5090", NOW - timedelta(minutes=3), unschedulable_since=stuck_since,
                    scheduler_message="0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")]
    free = {"gpu-rtx5090": [], "gpu-h100": [NodeFree(8, 192_000, 2048 * GI)]}
    result = plan(_snapshot(spec, {"gpu-rtx5090": 2}, pods, free))
    sizes = {d["metadata"]["labels"]["fal.ai/machine-type"]: d for d in result.deployments}
    assert {t: d["spec"]["replicas"] for t, d in sizes.items()} == {"gpu-rtx5090": 1, "gpu-h100": 1}
    requests = {t: d["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"]
                for t, d in sizes.items()}
    assert requests == {"gpu-rtx5090": "2", "gpu-h100": "1"}
    status = result.status.to_patch()
    assert status["machines"] == "GPU-RTX5090x1,GPU-H100x1"
    assert [(p["machineType"], p["gpusPerReplica"]) for p in status["placements"]] == [
        ("GPU-RTX5090", 2), ("GPU-H100", 1)]
    assert status["candidates"] == ("GPU-RTX5090(2x32Gi),GPU-H100(1x80Gi),GPU-A100(2x40Gi),GPU-L40(2x48Gi),"
                                    "GPU-RTX4090(4x24Gi),GPU-H200(1x141Gi),GPU-B200(1x192Gi)")
    [event] = [e for e in result.events if e.reason == "FellBack"]
    assert event.message.startswith("replica moved from GPU-RTX5090 (2 GPUs) to GPU-H100 (1 GPU): ")
    fallback = next(c for c in status["conditions"] if c["type"] == "FallbackActive")
    assert fallback["message"] == "1 on GPU-H100 (1 GPU) (preferred: GPU-RTX5090)"


def test_candidates_of_a_listed_app_name_gpus_and_vram() -> None:
    spec = FalAppSpec.model_validate({"image": "i", "machineTypes": ["GPU-H100", "GPU-A100"], "numGpus": 8})
    assert candidates_summary(resolve(spec, SEED)) == "GPU-H100(8x80Gi),GPU-A100(8x40Gi)"
    cpu = FalAppSpec.model_validate({"image": "i", "machineTypes": ["M", "L"], "numGpus": 0})
    assert candidates_summary(resolve(cpu, SEED)) == "M,L"


def test_an_invalid_gpu_memory_stalls_the_app_and_clears_its_candidates() -> None:
    spec = app("300Gi", replicas=1)
    snap = AppSnapshot(ref=REF, generation=2, spec=spec, status=FalAppStatus(candidates="GPU-H100(1x80Gi)"),
                       catalogue=SEED, counts={}, surge=None, pods=[], free={}, now=NOW)
    result = plan(snap)
    stalled = next(c for c in result.status.to_patch()["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidSpec")
    assert stalled["message"].startswith("spec.gpuMemory: no machine type fits 300Gi")
    assert result.status.to_patch()["candidates"] == "" and not result.deployments
    assert [e.reason for e in result.events] == ["InvalidSpec"]


def test_equal_types_are_ordered_the_same_whatever_order_the_catalogue_arrives_in() -> None:
    """Display names need not be unique: two types alike in VRAM, price and display name are ordered by
    their object names, not by the order the catalogue's watch reported them."""
    def named(name: str) -> MachineType:
        return MachineType.model_validate({"metadata": {"name": name}, "spec": {
            "displayName": "GPU-SAME", "gpu": {"maxGpusPerReplica": 8, "vram": "48Gi"},
            "resources": {"cpu": "12", "memory": "112Gi"}}})
    catalogue = [named("gpu-same-b"), named("gpu-same-a")]
    orders = {tuple(o.name for o in resolve(app("40Gi"), order, "team-a", {}).options)
              for order in (catalogue, catalogue[::-1])}
    assert orders == {("gpu-same-a", "gpu-same-b")}
