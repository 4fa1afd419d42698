"""Which of an app's listed machine types can host it, judged against the catalogue (pure).

Besides what each type can host, the catalogue decides three things a schema cannot:
- entitlements: a listed type whose `namespaceSelector` does not select the app's namespace makes the
  spec invalid (labels not known yet count as not selected, unless the type has no selector);
- taints the machine types own: an app may not tolerate a taint key any MachineType tolerates (that
  is how a type reaches its dedicated nodes; an app tolerating it would land on them through any type);
- sizes: a replica's cpu (in millicores) and memory (in bytes) must fit the int64 Kubernetes keeps them in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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


REQUEST_MAX = 2**63 - 1  # Kubernetes compares cpu in millicores and memory in bytes as int64


def type_option(spec: FalAppSpec, machine_type: MachineType) -> TypeOption:
    """The requests one replica makes on the type. Raises ValueError (naming the field) when they cannot
    be computed or do not fit a Kubernetes request."""
    gpus = gpus_per_replica(spec, machine_type)
    per = max(gpus, 1)  # catalogue cpu/memory are per GPU on GPU types, per replica on CPU types
    cpu = spec.resources.cpu if spec.resources and spec.resources.cpu else None
    memory = spec.resources.memory if spec.resources and spec.resources.memory else None
    name = machine_type.display_name
    try:
        cpu_milli = cpu_millis(cpu) if cpu else cpu_millis(machine_type.spec.resources.cpu) * per
        memory = memory_bytes(memory) if memory else memory_bytes(machine_type.spec.resources.memory) * per
    except (ArithmeticError, ValueError) as exc:
        raise ValueError(f"spec.resources: cannot compute the requests of a replica on {name}: {exc}") from exc
    for what, value in (("cpu", cpu_milli), ("memory", memory)):
        if value > REQUEST_MAX:
            source = (f"spec.resources.{what}" if getattr(spec.resources, what, None)
                      else f"spec.numGpus: {per} x the {what} per GPU of {name}")
            raise ValueError(f"{source}: a replica's {what} request on {name} is too large for Kubernetes")
    return TypeOption(name=machine_type.metadata.name, display=name, gpus=gpus, cpu_milli=cpu_milli,
                      memory_bytes=memory, autoscaled=bool(machine_type.spec.autoscaled))


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


def not_available(machine_type: MachineType, namespace: str, namespace_labels: Mapping[str, str] | None) -> str | None:
    """Why the app's namespace may not use the type (its namespaceSelector), or None."""
    if machine_type.spec.available_to(namespace_labels):
        return None
    unknown = " (the namespace's labels are not known yet)" if namespace_labels is None else ""
    return f"{machine_type.display_name} is not available to namespace {namespace}{unknown}"


def owned_toleration(spec: FalAppSpec, catalogue: Iterable[MachineType]) -> str | None:
    """Why one of the app's tolerations is for a taint key a machine type owns, or None."""
    owners: dict[str, str] = {}
    for machine_type in catalogue:
        for toleration in machine_type.spec.tolerations:
            if toleration.key:
                owners.setdefault(toleration.key, machine_type.display_name)
    for i, toleration in enumerate(spec.tolerations):
        if toleration.key in owners:
            return (f"spec.tolerations[{i}].key: {toleration.key} is tolerated by machine type "
                    f"{owners[toleration.key]}; only machine types may tolerate it")
    return None


def resolve(spec: FalAppSpec, catalogue: Iterable[MachineType], namespace: str = "",
            namespace_labels: Mapping[str, str] | None = None) -> Resolution:
    """The listed types that can host the app, in preference order, or the problem that makes the spec
    invalid. `namespace_labels` are the labels of the app's namespace (None: not known)."""
    catalogue = list(catalogue)
    options: list[TypeOption] = []
    types: dict[str, MachineType] = {}
    skipped: dict[str, str] = {}
    unknown: list[str] = []
    refused: list[str] = []
    oversized: list[str] = []
    for listed in spec.machine_types:
        machine_type = next((m for m in catalogue if m.matches(listed)), None)
        if machine_type is None:
            unknown.append(listed)
            continue
        denied = not_available(machine_type, namespace, namespace_labels)
        if denied:
            refused.append(denied)
            continue
        reason = why_not(spec, machine_type)
        if reason:
            skipped[listed] = reason
            continue
        try:
            option = type_option(spec, machine_type)
        except ValueError as exc:
            oversized.append(str(exc))
            continue
        types[machine_type.metadata.name] = machine_type
        options.append(option)
    problem = None
    if unknown:
        known = ", ".join(sorted(m.display_name for m in catalogue)) or "none"
        problem = f"spec.machineTypes: unknown machine type(s) {', '.join(unknown)} (known: {known})"
    elif refused:
        problem = "spec.machineTypes: " + "; ".join(refused)
    elif oversized:
        problem = oversized[0]
    elif not options:
        problem = "spec.machineTypes: no listed type can host this app: " + "; ".join(skipped.values())
    else:
        problem = owned_toleration(spec, catalogue)
    return Resolution(options=options if problem is None else [], types=types, skipped=skipped, problem=problem)
