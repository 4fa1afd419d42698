"""Which of an app's listed machine types can host it, judged against the catalogue (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from falapp_operator.api import FalAppSpec, MachineType
from falapp_operator.api.units import cpu_millis, memory_bytes
from falapp_operator.placement.snapshot import TypeOption


@dataclass(frozen=True)
class Resolution:
    options: list[TypeOption] = field(default_factory=list)  # hostable types, in preference order
    types: dict[str, MachineType] = field(default_factory=dict)  # by object name
    skipped: dict[str, str] = field(default_factory=dict)  # listed type -> why it cannot host the app
    problem: str | None = None  # the spec cannot run anywhere (InvalidSpec)


def gpus_per_replica(spec: FalAppSpec, machine_type: MachineType) -> int:
    if machine_type.spec.gpu is None:
        return 0
    return 1 if spec.num_gpus is None else spec.num_gpus


def type_option(spec: FalAppSpec, machine_type: MachineType) -> TypeOption:
    gpus = gpus_per_replica(spec, machine_type)
    per = max(gpus, 1)  # catalogue cpu/memory are per GPU on GPU types, per replica on CPU types
    cpu = spec.resources.cpu if spec.resources and spec.resources.cpu else None
    memory = spec.resources.memory if spec.resources and spec.resources.memory else None
    return TypeOption(
        name=machine_type.metadata.name,
        display=machine_type.display_name,
        gpus=gpus,
        cpu_milli=cpu_millis(cpu) if cpu else cpu_millis(machine_type.spec.resources.cpu) * per,
        memory_bytes=memory_bytes(memory) if memory else memory_bytes(machine_type.spec.resources.memory) * per,
    )


def why_not(spec: FalAppSpec, machine_type: MachineType) -> str | None:
    gpu = machine_type.spec.gpu
    name = machine_type.display_name
    if gpu is None:
        if spec.num_gpus:
            return f"{name} is a CPU type but numGpus is {spec.num_gpus}"
        if spec.requires_nvenc:
            return f"{name} has no video encoders (requiresNvenc)"
        return None
    if spec.num_gpus == 0:
        return f"{name} is a GPU type but numGpus is 0"
    wanted = gpus_per_replica(spec, machine_type)
    if wanted > gpu.max_gpus_per_replica:
        return f"{name} allows at most {gpu.max_gpus_per_replica} GPUs per replica, numGpus is {wanted}"
    if spec.requires_nvenc and gpu.nvenc_engines == 0:
        return f"{name} has no NVENC encoders (requiresNvenc)"
    return None


def resolve(spec: FalAppSpec, catalogue: Iterable[MachineType]) -> Resolution:
    catalogue = list(catalogue)
    options: list[TypeOption] = []
    types: dict[str, MachineType] = {}
    skipped: dict[str, str] = {}
    unknown: list[str] = []
    for listed in spec.machine_types:
        machine_type = next((m for m in catalogue if m.matches(listed)), None)
        if machine_type is None:
            unknown.append(listed)
            continue
        reason = why_not(spec, machine_type)
        if reason:
            skipped[listed] = reason
            continue
        types[machine_type.metadata.name] = machine_type
        options.append(type_option(spec, machine_type))
    problem = None
    if unknown:
        known = ", ".join(sorted(m.display_name for m in catalogue)) or "none"
        problem = f"spec.machineTypes: unknown machine type(s) {', '.join(unknown)} (known: {known})"
    elif not options:
        problem = "spec.machineTypes: no listed type can host this app: " + "; ".join(skipped.values())
    return Resolution(options=options if problem is None else [], types=types, skipped=skipped, problem=problem)
