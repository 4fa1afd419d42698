"""The default machine catalogue (fal's "Machine Types" table), as MachineType objects.

`catalog/default.yaml` is generated from DEFAULT_CATALOG by hack/gen_crds.py; edit the tables here.
"""

from __future__ import annotations

from falapp_operator.api.common import ObjectMeta, Toleration
from falapp_operator.api.machinetype import (
    NVIDIA_GPU,
    GpuSpec,
    MachineResources,
    MachineType,
    MachineTypeSpec,
)
from falapp_operator.api.nodes import NodeSelectorRequirement

# NVIDIA GPU Feature Discovery's product label.
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
GPU_MAX_PER_REPLICA = 8

# name, displayName, cpu per GPU, memory per GPU, VRAM, NVENC, NVDEC, gpu.product values
GPU_TYPES: tuple[tuple[str, str, str, str, str, int, int, tuple[str, ...]], ...] = (
    ("gpu-rtx4090", "GPU-RTX4090", "12", "48Gi", "24Gi", 2, 2, ("NVIDIA-GeForce-RTX-4090",)),
    ("gpu-rtx5090", "GPU-RTX5090", "14", "60Gi", "32Gi", 3, 3, ("NVIDIA-GeForce-RTX-5090",)),
    (
        "gpu-a100",
        "GPU-A100",
        "12",
        "60Gi",
        "40Gi",
        0,
        5,
        ("NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB", "A100-SXM4-40GB", "A100-PCIE-40GB"),
    ),
    ("gpu-l40", "GPU-L40", "6", "100Gi", "48Gi", 3, 3, ("NVIDIA-L40S", "NVIDIA-L40")),
    ("gpu-h100", "GPU-H100", "12", "112Gi", "80Gi", 0, 7, ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe")),
    ("gpu-h200", "GPU-H200", "12", "112Gi", "141Gi", 0, 7, ("NVIDIA-H200",)),
    ("gpu-b200", "GPU-B200", "19", "210Gi", "192Gi", 0, 7, ("NVIDIA-B200",)),
)

# name, displayName, cpu per replica, memory per replica
CPU_TYPES: tuple[tuple[str, str, str, str], ...] = (
    ("xs", "XS", "500m", "512Mi"),
    ("s", "S", "1", "1Gi"),
    ("m", "M", "2", "2Gi"),
    ("l", "L", "4", "15Gi"),
    ("xl", "XL", "8", "30Gi"),
)


def _gpu_type(
    name: str,
    display: str,
    cpu: str,
    memory: str,
    vram: str,
    nvenc: int,
    nvdec: int,
    products: tuple[str, ...],
) -> MachineType:
    return MachineType(
        metadata=ObjectMeta(name=name),
        spec=MachineTypeSpec(
            display_name=display,
            gpu=GpuSpec(
                resource_name=NVIDIA_GPU,
                max_gpus_per_replica=GPU_MAX_PER_REPLICA,
                vram=vram,
                nvenc_engines=nvenc,
                nvdec_engines=nvdec,
            ),
            resources=MachineResources(cpu=cpu, memory=memory),
            node_affinity=[
                NodeSelectorRequirement(key=GPU_PRODUCT_LABEL, operator="In", values=list(products))
            ],
            tolerations=[Toleration(key=NVIDIA_GPU, operator="Exists", effect="NoSchedule")],
        ),
    )


def _cpu_type(name: str, display: str, cpu: str, memory: str) -> MachineType:
    return MachineType(
        metadata=ObjectMeta(name=name),
        spec=MachineTypeSpec(display_name=display, resources=MachineResources(cpu=cpu, memory=memory)),
    )


def default_catalog() -> list[MachineType]:
    """Fresh copies of the default MachineTypes, GPU types first, in table order."""
    return [_gpu_type(*row) for row in GPU_TYPES] + [_cpu_type(*row) for row in CPU_TYPES]


DEFAULT_CATALOG: tuple[MachineType, ...] = tuple(default_catalog())
