"""Desired child objects of a FalApp: one Deployment per machine type in use, and a Service.

Plain dicts, ready for server-side apply. Pods default to Pod Security "restricted" settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel

from falapp_operator.api import (
    API_VERSION,
    FalAppSpec,
    JsonMapping,
    JsonObject,
    MachineType,
    format_micro_time,
    format_time,
    parse_time_or_none,
)
from falapp_operator.api.names import (
    APP_LABEL,
    GROWN_ANNOTATION,
    HASH_ANNOTATION,
    MANAGED_BY,
    MOVES_ANNOTATION,
    SURGE_ANNOTATION,
    TEMPLATE_ANNOTATION,
    TYPE_LABEL,
    deployment_name,
    service_name,
)
from falapp_operator.placement.snapshot import Surge, TypeOption

# Rolling updates never take a Ready replica away first; a type with no room for the one extra pod
# gets it from the operator, which moves one replica off the type make-before-break.
ROLLOUT = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
CONTAINER_NAME = "app"
VIDEO_CAPABILITIES = "compute,utility,video"
NO_GPUS = "void"

RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_POD = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}


@dataclass(frozen=True)
class AppRef:
    name: str
    namespace: str
    uid: str

    def owner_reference(self) -> JsonObject:
        return {"apiVersion": API_VERSION, "kind": "FalApp", "name": self.name, "uid": self.uid,
                "controller": True, "blockOwnerDeletion": True}

    @property
    def selector(self) -> str:
        return f"{APP_LABEL}={self.name}"


def _dump(items: Sequence[BaseModel] | None) -> list[JsonObject]:
    return [i.model_dump(by_alias=True, exclude_none=True, mode="json") for i in items or []]


def memory_quantity(size: int) -> str:
    """The largest binary unit that divides exactly: 2147483648 -> "2Gi"."""
    for unit, factor in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)


def _container(spec: FalAppSpec, option: TypeOption, machine_type: MachineType) -> JsonObject:
    memory = memory_quantity(option.memory_bytes)
    requests: dict[str, str] = {"cpu": f"{option.cpu_milli}m", "memory": memory}
    limits: dict[str, str] = {"memory": memory}
    if option.gpus:
        gpu_resource = machine_type.spec.gpu_resource
        assert gpu_resource is not None, "only a GPU type gives a replica GPUs"
        requests[gpu_resource] = limits[gpu_resource] = str(option.gpus)
    env = _dump(spec.env)  # the API refuses NVIDIA_* names: only the operator sets them
    if spec.requires_nvenc:
        env.append({"name": "NVIDIA_DRIVER_CAPABILITIES", "value": VIDEO_CAPABILITIES})
    if not option.gpus:
        # a pod without GPUs gets none from the GPU runtime, whatever its image or an envFrom source
        # says (env wins over envFrom; "void" turns the NVIDIA runtime hook off)
        env.append({"name": "NVIDIA_VISIBLE_DEVICES", "value": NO_GPUS})
    container: JsonObject = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "resources": {"requests": requests, "limits": limits},
        "securityContext": RESTRICTED_CONTAINER,
    }
    optional = {
        "command": spec.command or None,
        "args": spec.args or None,
        "env": env or None,
        "envFrom": _dump(spec.env_from) or None,
        "ports": _dump(spec.ports) or None,
        "volumeMounts": _dump(spec.volume_mounts) or None,
    }
    for probe in ("readiness_probe", "liveness_probe", "startup_probe"):
        value = getattr(spec, probe)
        if value is not None:
            camel = probe.split("_")[0] + "Probe"
            optional[camel] = value.model_dump(by_alias=True, exclude_none=True, mode="json")
    container.update({k: v for k, v in optional.items() if v})
    return container


def _placement(spec: FalAppSpec, machine_type: MachineType) -> JsonObject:
    mt = machine_type.spec
    node_selector = dict(mt.node_selector or {})
    if spec.requires_nvenc:
        node_selector.update(mt.nvenc_node_selector or {})
    out: JsonObject = {}
    if node_selector:
        out["nodeSelector"] = node_selector
    if mt.node_affinity:
        out["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": _dump(mt.node_affinity)}]}}}
    tolerations = _dump(mt.tolerations) + [t for t in _dump(spec.tolerations) if t not in _dump(mt.tolerations)]
    if tolerations:
        out["tolerations"] = tolerations
    return out


def pod_labels(app: AppRef, machine_type: str) -> dict[str, str]:
    return {APP_LABEL: app.name, TYPE_LABEL: machine_type, "app.kubernetes.io/name": app.name, **MANAGED_BY}


def pod_template(app: AppRef, spec: FalAppSpec, option: TypeOption, machine_type: MachineType) -> JsonObject:
    """The pod template of the type's Deployment, stamped with a hash of itself (TEMPLATE_ANNOTATION)."""
    pod_spec: JsonObject = {
        "containers": [_container(spec, option, machine_type)],
        "securityContext": RESTRICTED_POD,
        # no API token in the pods unless the app asks for one
        "automountServiceAccountToken": spec.automount_service_account_token,
        **_placement(spec, machine_type),
    }
    optional = {
        "volumes": _dump(spec.volumes) or None,
        "imagePullSecrets": _dump(spec.image_pull_secrets) or None,
        "serviceAccountName": spec.service_account_name,
        "priorityClassName": spec.priority_class_name,
    }
    pod_spec.update({k: v for k, v in optional.items() if v})
    template = {"metadata": {"labels": {**(spec.pod_labels or {}), **pod_labels(app, option.name)},
                             "annotations": dict(spec.pod_annotations or {})},
                "spec": pod_spec}
    template["metadata"]["annotations"][TEMPLATE_ANNOTATION] = _digest(template)
    return template


class TemplateCache:
    """Each app's pod templates per machine type, kept while its spec and the catalogue stay as they
    were: a template depends on nothing else, and building and hashing it at every reconcile is a good
    part of a reconcile's time at scale. The spec is compared, not its generation: the API server can
    change what it returns without a new generation (a default added to the CRD). The owner clears it
    when the catalogue changes and forgets an app that is gone. Templates handed out are shared: read
    only."""

    def __init__(self) -> None:
        self._apps: dict[tuple[str, str], tuple[str, FalAppSpec, dict[str, JsonObject]]] = {}

    def template(self, app: AppRef, spec: FalAppSpec, option: TypeOption, machine_type: MachineType) -> JsonObject:
        key = (app.namespace, app.name)
        entry = self._apps.get(key)
        if entry is None or entry[0] != app.uid or entry[1] != spec:
            entry = self._apps[key] = (app.uid, spec, {})
        made = entry[2]
        if option.name not in made:
            made[option.name] = pod_template(app, spec, option, machine_type)
        return made[option.name]

    def forget(self, namespace: str, name: str) -> None:
        self._apps.pop((namespace, name), None)

    def clear(self) -> None:
        self._apps.clear()

    def __len__(self) -> int:
        return len(self._apps)


def template_hash(template: JsonMapping) -> str:
    digest: str = template["metadata"]["annotations"][TEMPLATE_ANNOTATION]
    return digest


def resize_patch(replicas: int) -> JsonObject:
    """Merge patch giving a Deployment whose type is no longer listed a new size, its template kept.
    It clears the make-before-break mark (it cannot outlive the resize) and the applied hash (the
    object no longer is what was applied: if the type is listed again, it is applied again)."""
    return {"metadata": {"annotations": {SURGE_ANNOTATION: "", HASH_ANNOTATION: ""}}, "spec": {"replicas": replicas}}


def deployment(app: AppRef, option: TypeOption, template: JsonObject, replicas: int, marks: Sequence[Surge] = (),
               grown_at: datetime | None = None, recorded_moves: str | None = None) -> JsonObject:
    """`marks`: the replicas in flight (the move's and its cover's); those on this type are marked on it."""
    annotations = {SURGE_ANNOTATION: encode_marks([m for m in marks if m.to_type == option.name])}
    if grown_at is not None:
        annotations[GROWN_ANNOTATION] = format_micro_time(grown_at)
    if recorded_moves:
        annotations[MOVES_ANNOTATION] = recorded_moves
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(app.name, option.name),
            "namespace": app.namespace,
            "labels": pod_labels(app, option.name),
            "annotations": annotations,
            "ownerReferences": [app.owner_reference()],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {APP_LABEL: app.name, TYPE_LABEL: option.name}},
            "strategy": ROLLOUT,
            "template": template,
        },
    }
    return with_hash(body)


def encode_marks(marks: Sequence[Surge]) -> str:
    """The make-before-break marks of one Deployment: an object for one (as older versions wrote it), a
    list for a move and its cover on the same type; "" for none."""
    data = [_mark_data(m) for m in marks]
    return json.dumps(data[0] if len(data) == 1 else data, sort_keys=True) if data else ""


def _mark_data(mark: Surge) -> JsonObject:
    data: JsonObject = {"from": mark.from_type, "since": format_time(mark.since) if mark.since else None}
    if mark.ready_at is not None:
        data["readyAt"] = format_time(mark.ready_at)
    if mark.cover:
        data["cover"] = True
    return data


def decode_marks(type_name: str, value: str | None) -> list[Surge]:
    """The annotation's value as encode_marks writes it ("1" from an older version; "" or "0": none), read
    as far as it makes sense (anyone who may edit the Deployment may write it): at most a move and a cover."""
    if not value or value == "0":
        return []
    try:
        data = json.loads(value)
    except ValueError:
        return []
    if isinstance(data, int) and not isinstance(data, bool):
        return [Surge(type_name)] if data > 0 else []
    marks: list[Surge] = []
    for item in data if isinstance(data, list) else [data]:
        if not isinstance(item, dict):
            continue
        origin = item.get("from")  # a type's name or nothing
        mark = Surge(type_name, origin if isinstance(origin, str) and origin else None,
                     parse_time_or_none(item.get("since")), parse_time_or_none(item.get("readyAt")),
                     cover=item.get("cover") is True)
        if not any(m.cover == mark.cover for m in marks):
            marks.append(mark)
    return marks


def service(app: AppRef, spec: FalAppSpec) -> JsonObject | None:
    if not spec.ports:
        return None
    # names unique: the model refuses ports that would share one (FalAppSpec.ports)
    ports = [{"name": p.name or f"port-{p.container_port}", "port": p.container_port,
              "targetPort": p.container_port, "protocol": p.protocol} for p in spec.ports]
    return with_hash({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": service_name(app.name), "namespace": app.namespace,
                     "labels": {APP_LABEL: app.name, **MANAGED_BY}, "ownerReferences": [app.owner_reference()]},
        "spec": {"selector": {APP_LABEL: app.name}, "ports": ports},
    })


def _digest(body: JsonMapping) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def with_hash(body: JsonObject) -> JsonObject:
    """Stamp a hash of the desired object, so an unchanged child needs no API write."""
    body["metadata"].setdefault("annotations", {})[HASH_ANNOTATION] = _digest(body)
    return body
