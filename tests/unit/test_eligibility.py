"""Which machine types can host an app (placement/eligibility.py), and finding a type by the name a
FalApp writes: the one home of each."""

from __future__ import annotations

import pytest

from falapp_operator.api import DEFAULT_CATALOG, FalAppSpec, find_machine_type
from falapp_operator.placement.eligibility import candidate_types, gpus_per_replica, resolve, type_option, why_not
from tests.builders import falapp_spec, machine_type_model


def _spec(num_gpus: int | None = None, requires_nvenc: bool = False,
          machine_types: list[str] | None = None) -> FalAppSpec:
    fields: dict[str, object] = {"image": "registry.example.com/app:1", "machineTypes": machine_types or ["GPU-H100"]}
    if num_gpus is not None:
        fields["numGpus"] = num_gpus
    if requires_nvenc:
        fields["requiresNvenc"] = True
    return FalAppSpec.model_validate(fields)


@pytest.mark.parametrize(
    ("type_name", "num_gpus", "nvenc", "want_gpus", "why"),
    [
        ("GPU-H100", None, False, 1, None),
        ("GPU-H100", 8, False, 8, None),
        ("GPU-H100", 9, False, None, "allows at most 8 GPUs per replica"),
        ("GPU-H100", 0, False, None, "is a GPU type but numGpus is 0"),
        ("GPU-H100", 1, True, None, "has no NVENC encoders"),
        ("GPU-L40", 1, True, 1, None),
        ("XS", None, False, 0, None),
        ("XS", 0, False, 0, None),
        ("XS", 1, False, None, "is a CPU type but numGpus is 1"),
        ("XS", None, True, None, "has no video encoders"),
    ],
    ids=["gpu-default-1", "gpu-max", "gpu-over-max", "gpu-explicit-0", "gpu-no-nvenc", "gpu-nvenc",
         "cpu-default", "cpu-0", "cpu-with-gpu", "cpu-nvenc"],
)
def test_what_a_type_can_host(type_name: str, num_gpus: int | None, nvenc: bool, want_gpus: int | None,
                              why: str | None) -> None:
    machine_type = find_machine_type(DEFAULT_CATALOG, type_name)
    assert machine_type is not None
    spec = _spec(num_gpus, nvenc)
    reason = why_not(spec, machine_type)
    assert (reason is None) == (why is None)
    if why is not None:
        assert reason is not None and why in reason and machine_type.display_name in reason
    else:
        assert gpus_per_replica(spec, machine_type) == want_gpus


@pytest.mark.parametrize(
    ("listed", "want"),
    [
        (["GPU-H100"], ["gpu-h100"]),
        (["gpu-h100", "Gpu-A100"], ["gpu-h100", "gpu-a100"]),
        (["GPU-H10", "xl"], ["xl"]),  # unknown names are left out (resolve names them)
    ],
    ids=["display-name", "any-case-in-order", "unknown-left-out"],
)
def test_candidates_are_found_by_the_name_a_falapp_writes(listed: list[str], want: list[str]) -> None:
    found = candidate_types(_spec(machine_types=listed), DEFAULT_CATALOG)
    assert [m.name for m in found] == want


@pytest.mark.parametrize(
    ("type_name", "num_gpus", "want"),
    [
        ("GPU-H100", None, (1, 12_000, 112 * 2**30)),
        ("GPU-H100", 2, (2, 24_000, 224 * 2**30)),  # cpu and memory are per GPU on GPU types
        ("XS", None, (0, 500, 512 * 2**20)),  # per replica on CPU types
    ],
    ids=["gpu-one", "gpu-two", "cpu"],
)
def test_what_a_replica_requests_on_a_type(type_name: str, num_gpus: int | None, want: tuple[int, int, int]) -> None:
    machine_type = find_machine_type(DEFAULT_CATALOG, type_name)
    assert machine_type is not None
    option = type_option(_spec(num_gpus), machine_type)
    assert (option.gpus, option.cpu_milli, option.memory_bytes) == want


def test_types_sharing_a_display_name_go_by_their_object_names() -> None:
    """Two pools of one GPU under two label schemes, both called GPU-H100: an app choosing by VRAM gets both,
    and the status (one placement per type, keyed by its name) tells them apart by object name. (Was: two
    placements named GPU-H100, which the API server refused: the app Stalled with RequestRejected.)"""
    gke = machine_type_model("h100-gke", displayName="GPU-H100", gpu={"maxGpusPerReplica": 8, "vram": "80Gi"})
    karpenter = machine_type_model("h100-karpenter", displayName="GPU-H100",
                                   gpu={"maxGpusPerReplica": 8, "vram": "80Gi"})
    a100 = machine_type_model("a100", displayName="GPU-A100", gpu={"maxGpusPerReplica": 8, "vram": "80Gi"})
    resolution = resolve(falapp_spec(machineTypes=None, gpuMemory="60Gi"), [gke, karpenter, a100])
    assert sorted(o.display for o in resolution.options) == ["GPU-A100", "h100-gke", "h100-karpenter"]


def test_an_unprefixed_env_from_source_is_a_problem_only_where_replicas_get_gpus() -> None:
    """An app without numGpus on CPU types has no GPU (its pods get NVIDIA_VISIBLE_DEVICES=void); on GPU
    types its replicas get one, and an unprefixed source could carry NVIDIA_VISIBLE_DEVICES past the
    device plugin's."""
    env_from = [{"configMapRef": {"name": "c"}}]
    catalogue = list(DEFAULT_CATALOG)
    assert resolve(falapp_spec(machineTypes=["M", "L"], envFrom=env_from), catalogue).problem is None
    problem = resolve(falapp_spec(machineTypes=["M", "GPU-H100"], envFrom=env_from), catalogue).problem
    assert problem is not None and problem.startswith("spec.envFrom[0].prefix: ")
