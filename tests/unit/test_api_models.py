"""FalApp / MachineType models: parsing, defaults, validation tables, helpers, catalogue."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from falapp_operator.api import (
    DEFAULT_CATALOG,
    MAX_ATTEMPTS,
    Attempt,
    Condition,
    ConditionType,
    FalApp,
    FalAppSpec,
    FalAppStatus,
    Fallback,
    MachineType,
    Placement,
    append_attempt,
    default_catalog,
    find_machine_type,
    get_condition,
    set_condition,
    summarize_placements,
)
from tests.builders import falapp, machine_type, model

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


# --- FalApp ---------------------------------------------------------------------------------------------


def test_falapp_defaults() -> None:
    spec = FalAppSpec.model_validate({"image": "img", "machineTypes": ["GPU-H100"]})
    assert spec.replicas == 1
    assert spec.num_gpus is None
    assert spec.requires_nvenc is False
    assert spec.fallback == Fallback(
        unschedulable_timeout="60s", scale_up_timeout="15m", return_to_preferred=True
    )
    assert spec.fallback.unschedulable_timeout_seconds == 60.0
    assert spec.fallback.scale_up_timeout_seconds == 900.0
    assert spec.env == [] and spec.volumes == [] and spec.pod_labels == {}


def test_falapp_wire_names_round_trip() -> None:
    body = falapp(
        numGpus=2,
        fallback={"unschedulableTimeout": "1m30s"},
        readinessProbe={"exec": {"command": ["true"]}},
        resources={"cpu": 4},
    )
    app = FalApp.model_validate(body)
    assert app.spec.num_gpus == 2
    assert app.spec.fallback.unschedulable_timeout_seconds == 90.0
    assert app.spec.fallback.scale_up_timeout == "15m"  # partially set: the rest defaults
    assert app.spec.readiness_probe is not None and app.spec.readiness_probe.exec_ is not None
    assert app.spec.resources is not None and app.spec.resources.cpu == "4"  # int quantity kept as a string
    wire = app.spec.to_wire()
    assert wire["numGpus"] == 2 and wire["readinessProbe"] == {"exec": {"command": ["true"]}}
    assert FalAppSpec.model_validate(wire) == app.spec
    # python names work too
    assert FalAppSpec(image="i", machine_types=["XS"], num_gpus=0).num_gpus == 0


def test_falapp_from_body_accepts_mappings_and_ignores_unknown_metadata() -> None:
    from types import MappingProxyType

    body = falapp()
    body["metadata"] = {**body["metadata"], "generation": 3, "managedFields": [{"manager": "kubectl"}]}
    body["status"] = {"observedGeneration": 2, "futureField": 1}
    app = FalApp.from_body(MappingProxyType(body))
    assert app.metadata.generation == 3
    assert app.status.observed_generation == 2


# --- status ---------------------------------------------------------------------------------------------


def test_status_wire_format() -> None:
    status = FalAppStatus(
        observed_generation=1,
        replicas=3,
        placements=[Placement(machine_type="GPU-H100", replicas=1, since=NOW)],
        conditions=[
            Condition(type="Ready", status="True", reason="AllReplicasReady", last_transition_time=NOW)
        ],
    )
    wire = status.to_wire()
    assert wire["observedGeneration"] == 1
    assert wire["placements"] == [
        {"machineType": "GPU-H100", "replicas": 1, "readyReplicas": 0, "since": "2026-01-02T03:04:05Z"}
    ]
    assert wire["conditions"][0]["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert FalAppStatus.model_validate(wire) == status


def test_timestamps_are_normalised_to_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    placement = Placement(machine_type="X", since=datetime(2026, 1, 2, 5, 4, 5, 999, tzinfo=plus2))
    assert placement.to_wire()["since"] == "2026-01-02T03:04:05Z"
    assert Placement.model_validate({"machineType": "X", "since": "2026-01-02T03:04:05Z"}).since == NOW


def test_set_condition_keeps_transition_time_when_status_is_unchanged() -> None:
    later = NOW + timedelta(minutes=5)
    conds = set_condition([], ConditionType.READY, "False", reason="Placing", now=NOW)
    conds = set_condition(
        conds, ConditionType.READY, "False", reason="InsufficientCapacity", message="m", now=later
    )
    ready = get_condition(conds, "Ready")
    assert ready is not None and ready.last_transition_time == NOW and ready.reason == "InsufficientCapacity"
    conds = set_condition(conds, ConditionType.READY, "True", reason="AllReplicasReady", now=later)
    ready = get_condition(conds, "Ready")
    assert ready is not None and ready.last_transition_time == later and ready.is_true
    conds = set_condition(
        conds, ConditionType.STALLED, "False", reason="SpecValid", observed_generation=4, now=later
    )
    assert [c.type for c in conds] == ["Ready", "Stalled"]
    assert get_condition(conds, "Reconciling") is None


def test_attempts_are_bounded_and_messages_truncated() -> None:
    attempts: list[Attempt] = []
    for i in range(MAX_ATTEMPTS + 5):
        attempt = Attempt(machine_type=f"T{i}", start=NOW, outcome="Unschedulable", message="x" * 5000)
        attempts = append_attempt(attempts, attempt)
    assert len(attempts) == MAX_ATTEMPTS
    assert attempts[0].machine_type == "T5" and attempts[-1].machine_type == f"T{MAX_ATTEMPTS + 4}"
    assert attempts[0].message is not None and len(attempts[0].message) == 1024
    with pytest.raises(ValidationError):
        FalAppStatus(attempts=[attempts[0]] * (MAX_ATTEMPTS + 1))


def test_summarize_placements() -> None:
    placements = [
        Placement(machine_type="GPU-H100", replicas=1),
        Placement(machine_type="GPU-L40", replicas=0),
        Placement(machine_type="GPU-A100", replicas=2),
    ]
    assert summarize_placements(placements) == "GPU-H100x1,GPU-A100x2"
    assert summarize_placements([]) == ""


# --- MachineType ----------------------------------------------------------------------------------------

H100 = find_machine_type(DEFAULT_CATALOG, "GPU-H100")
L40 = find_machine_type(DEFAULT_CATALOG, "gpu-l40")
XS = find_machine_type(DEFAULT_CATALOG, "xs")


@pytest.mark.parametrize(
    ("query", "want"),
    [
        ("GPU-H100", "gpu-h100"),
        ("gpu-h100", "gpu-h100"),
        ("Gpu-H100", "gpu-h100"),
        ("GPU-RTX4090", "gpu-rtx4090"),
        ("xl", "xl"),
        ("XL", "xl"),
        ("GPU-H10", None),
        ("H100", None),
    ],
    ids=lambda v: str(v),
)
def test_find_machine_type_case_insensitive(query: str, want: str | None) -> None:
    found = find_machine_type(DEFAULT_CATALOG, query)
    assert (found.name if found else None) == want


def test_display_name_defaults_to_upper_cased_name() -> None:
    mt = MachineType.model_validate(machine_type(name="gpu-a100-80gb", displayName=None))
    assert mt.display_name == "GPU-A100-80GB"
    assert mt.matches("gpu-a100-80GB")
    custom = MachineType.model_validate(machine_type(name="a100-big", displayName="GPU-A100-80GB"))
    assert custom.matches("GPU-A100-80GB") and custom.matches("A100-BIG") and not custom.matches("a100")


def test_nvenc_capability() -> None:
    assert H100 is not None and L40 is not None and XS is not None
    assert L40.nvenc_capable and not H100.nvenc_capable
    assert not XS.nvenc_capable and not XS.is_gpu and H100.is_gpu


@pytest.mark.parametrize(
    ("labels", "nvenc", "want"),
    [
        ({"nvidia.com/gpu.product": "NVIDIA-L40S"}, False, True),
        ({"nvidia.com/gpu.product": "NVIDIA-L40"}, False, True),
        ({"nvidia.com/gpu.product": "NVIDIA-H100-PCIe"}, False, False),
        ({}, False, False),
        ({"nvidia.com/gpu.product": "NVIDIA-L40S"}, True, False),
        ({"nvidia.com/gpu.product": "NVIDIA-L40S", "fal.ai/nvenc": "true"}, True, True),
    ],
    ids=["l40s", "l40", "other-product", "no-label", "nvenc-missing-label", "nvenc-label"],
)
def test_matches_node(labels: dict[str, str], nvenc: bool, want: bool) -> None:
    body = machine_type(
        gpu={"maxGpusPerReplica": 8, "nvencEngines": 3},
        nodeAffinity=[
            {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-L40S", "NVIDIA-L40"]}
        ],
        nvencNodeSelector={"fal.ai/nvenc": "true"},
    )
    assert MachineType.model_validate(body).spec.matches_node(labels, nvenc=nvenc) is want


@pytest.mark.parametrize(
    ("operator", "values", "labels", "want"),
    [
        ("NotIn", ["a"], {"k": "b"}, True),
        ("NotIn", ["a"], {}, True),
        ("Exists", [], {"k": ""}, True),
        ("DoesNotExist", [], {"k": "x"}, False),
        ("Gt", ["3"], {"k": "4"}, True),
        ("Gt", ["3"], {"k": "3"}, False),
        ("Lt", ["3"], {"k": "-1"}, True),
        ("Lt", ["3"], {"k": "many"}, False),
    ],
    ids=["notin", "notin-absent", "exists", "doesnotexist", "gt", "gt-equal", "lt", "lt-not-int"],
)
def test_node_selector_requirement(
    operator: str, values: list[str], labels: dict[str, str], want: bool
) -> None:
    body = machine_type(nodeAffinity=[{"key": "k", "operator": operator, "values": values}])
    assert MachineType.model_validate(body).spec.matches_node(labels) is want


# --- default catalogue ----------------------------------------------------------------------------------

GPU_TABLE = [
    # display, cpu/GPU, memory/GPU, VRAM, NVENC, NVDEC, gpu.product values
    ("GPU-RTX4090", "12", "48Gi", "24Gi", 2, 2, ["NVIDIA-GeForce-RTX-4090"]),
    ("GPU-RTX5090", "14", "60Gi", "32Gi", 3, 3, ["NVIDIA-GeForce-RTX-5090"]),
    (
        "GPU-A100",
        "12",
        "60Gi",
        "40Gi",
        0,
        5,
        ["NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB", "A100-SXM4-40GB", "A100-PCIE-40GB"],
    ),
    ("GPU-L40", "6", "100Gi", "48Gi", 3, 3, ["NVIDIA-L40S", "NVIDIA-L40"]),
    ("GPU-H100", "12", "112Gi", "80Gi", 0, 7, ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe"]),
    ("GPU-H200", "12", "112Gi", "141Gi", 0, 7, ["NVIDIA-H200"]),
    ("GPU-B200", "19", "210Gi", "192Gi", 0, 7, ["NVIDIA-B200"]),
]


@pytest.mark.parametrize("row", GPU_TABLE, ids=[r[0] for r in GPU_TABLE])
def test_catalogue_gpu_types(row: tuple) -> None:
    display, cpu, memory, vram, nvenc, nvdec, products = row
    mt = find_machine_type(DEFAULT_CATALOG, display)
    assert mt is not None and mt.name == display.lower() and mt.display_name == display
    gpu = mt.spec.gpu
    assert gpu is not None
    assert (gpu.max_gpus_per_replica, gpu.vram, gpu.nvenc_engines, gpu.nvdec_engines) == (
        8,
        vram,
        nvenc,
        nvdec,
    )
    assert gpu.resource_name == "nvidia.com/gpu"
    assert (mt.spec.resources.cpu, mt.spec.resources.memory) == (cpu, memory)
    [req] = mt.spec.node_affinity
    assert (req.key, req.operator, req.values) == ("nvidia.com/gpu.product", "In", products)
    assert [t.to_wire() for t in mt.spec.tolerations] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert not mt.spec.node_selector and not mt.spec.nvenc_node_selector


CPU_TABLE = [
    ("XS", "500m", "512Mi"),
    ("S", "1", "1Gi"),
    ("M", "2", "2Gi"),
    ("L", "4", "15Gi"),
    ("XL", "8", "30Gi"),
]


@pytest.mark.parametrize("row", CPU_TABLE, ids=[r[0] for r in CPU_TABLE])
def test_catalogue_cpu_types(row: tuple[str, str, str]) -> None:
    display, cpu, memory = row
    mt = find_machine_type(DEFAULT_CATALOG, display)
    assert mt is not None and mt.name == display.lower() and mt.spec.gpu is None
    assert (mt.spec.resources.cpu, mt.spec.resources.memory) == (cpu, memory)
    assert not (mt.spec.node_selector or mt.spec.node_affinity or mt.spec.tolerations)


def test_catalogue_is_complete_and_unique() -> None:
    names = [mt.name for mt in DEFAULT_CATALOG]
    assert len(names) == len(GPU_TABLE) + len(CPU_TABLE) == len(set(names))
    assert {mt.display_name.lower() for mt in DEFAULT_CATALOG} == set(names)
    assert default_catalog() == list(DEFAULT_CATALOG) and default_catalog()[0] is not DEFAULT_CATALOG[0]


def test_api_package_imports_no_kubernetes_client() -> None:
    code = (
        "import sys, falapp_operator.api; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('kopf', 'kubernetes_asyncio', 'aiohttp')]; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        if doc.get("kind") in ("FalApp", "MachineType"):
            model(doc)
