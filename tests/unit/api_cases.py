"""Tables of invalid FalApps and MachineTypes, each with the field its error must name.

Shared by the unit tests (pydantic) and usable by cluster tests (the apiserver must refuse the same
objects with a message naming `field`; `message`, when set, is a CEL message both must contain).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BadCase:
    id: str
    body: dict[str, Any]
    field: str  # wire path of the offending field, e.g. spec.machineTypes
    message: str | None = None  # our own (CEL) message, when the rule is ours


def falapp(**spec: Any) -> dict[str, Any]:
    """A valid FalApp body; keyword arguments replace spec fields (None removes one)."""
    body: dict[str, Any] = {
        "apiVersion": "fal.ai/v1alpha1",
        "kind": "FalApp",
        "metadata": {"name": "sdxl", "namespace": "default"},
        "spec": {"image": "registry.example.com/sdxl:1.2", "machineTypes": ["GPU-H100", "GPU-A100"]},
    }
    for key, value in spec.items():
        if value is None:
            body["spec"].pop(key, None)
        else:
            body["spec"][key] = copy.deepcopy(value)
    return body


def named(name: str, **spec: Any) -> dict[str, Any]:
    """A valid FalApp body with this name."""
    body = falapp(**spec)
    body["metadata"]["name"] = name
    return body


def machinetype(name: str = "gpu-test", **spec: Any) -> dict[str, Any]:
    """A valid GPU MachineType body; keyword arguments replace spec fields (None removes one)."""
    body: dict[str, Any] = {
        "apiVersion": "fal.ai/v1alpha1",
        "kind": "MachineType",
        "metadata": {"name": name},
        "spec": {
            "displayName": "GPU-TEST",
            "gpu": {"maxGpusPerReplica": 8, "vram": "80Gi"},
            "resources": {"cpu": "12", "memory": "112Gi"},
            "nodeAffinity": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100"]}],
        },
    }
    for key, value in spec.items():
        if value is None:
            body["spec"].pop(key, None)
        else:
            body["spec"][key] = copy.deepcopy(value)
    return body


_MOUNT = [{"name": "cache", "mountPath": "/cache"}]
_VOL = [{"name": "cache", "emptyDir": {}}]
_HTTP = {"httpGet": {"path": "/healthz", "port": 8080}}

BAD_FALAPPS: list[BadCase] = [
    BadCase("image-missing", falapp(image=None), "spec.image"),
    BadCase("image-empty", falapp(image=""), "spec.image"),
    BadCase("machine-types-missing", falapp(machineTypes=None), "spec.machineTypes",
            "machineTypes is required unless gpuMemory is set"),
    # choosing by VRAM (spec.gpuMemory)
    BadCase("gpu-memory-zero", falapp(machineTypes=None, gpuMemory="0"), "spec.gpuMemory",
            "gpuMemory must be between 1Mi and 16Ti"),
    BadCase("gpu-memory-negative", falapp(machineTypes=None, gpuMemory="-60Gi"), "spec.gpuMemory"),
    BadCase("gpu-memory-fraction-of-a-byte", falapp(machineTypes=None, gpuMemory="500m"), "spec.gpuMemory",
            "gpuMemory must be between 1Mi and 16Ti"),
    BadCase("gpu-memory-absurd", falapp(machineTypes=None, gpuMemory="100Ti"), "spec.gpuMemory",
            "gpuMemory must be between 1Mi and 16Ti"),
    BadCase("gpu-memory-not-a-quantity", falapp(machineTypes=None, gpuMemory="lots"), "spec.gpuMemory"),
    BadCase("split-without-gpu-memory", falapp(splitAcrossGpus=True), "spec.splitAcrossGpus",
            "splitAcrossGpus needs gpuMemory"),
    BadCase("num-gpus-beside-gpu-memory", falapp(machineTypes=None, gpuMemory="60Gi", numGpus=2), "spec.numGpus",
            "numGpus may only be 1 with gpuMemory"),
    BadCase("num-gpus-zero-beside-gpu-memory", falapp(gpuMemory="60Gi", numGpus=0), "spec.numGpus",
            "numGpus may only be 1 with gpuMemory"),
    BadCase("num-gpus-with-split", falapp(machineTypes=None, gpuMemory="60Gi", splitAcrossGpus=True, numGpus=1),
            "spec.numGpus", "numGpus may not be set with splitAcrossGpus"),
    BadCase("machine-types-empty", falapp(machineTypes=[]), "spec.machineTypes"),
    BadCase("machine-types-too-many", falapp(machineTypes=[f"T{i}" for i in range(9)]), "spec.machineTypes"),
    BadCase(
        "machine-types-duplicate-case",
        falapp(machineTypes=["GPU-H100", "gpu-h100"]),
        "spec.machineTypes",
        "machineTypes must be unique (case-insensitive)",
    ),
    BadCase("machine-type-bad-name", falapp(machineTypes=["GPU_H100"]), "spec.machineTypes"),
    BadCase("num-gpus-too-many", falapp(numGpus=17), "spec.numGpus"),
    BadCase("num-gpus-negative", falapp(numGpus=-1), "spec.numGpus"),
    BadCase("replicas-negative", falapp(replicas=-1), "spec.replicas"),
    BadCase("replicas-too-many", falapp(replicas=1001), "spec.replicas"),
    BadCase(
        "timeout-no-unit",
        falapp(fallback={"unschedulableTimeout": "60"}),
        "spec.fallback.unschedulableTimeout",
    ),
    BadCase(
        "timeout-zero",
        falapp(fallback={"unschedulableTimeout": "0s"}),
        "spec.fallback.unschedulableTimeout",
        "must be a duration between 1s and 24h",
    ),
    BadCase(
        "timeout-too-long",
        falapp(fallback={"scaleUpTimeout": "25h"}),
        "spec.fallback.scaleUpTimeout",
        "must be a duration between 0s and 24h",
    ),
    BadCase("timeout-negative", falapp(fallback={"scaleUpTimeout": "-1s"}), "spec.fallback.scaleUpTimeout"),
    BadCase("fallback-unknown-field", falapp(fallback={"mode": "fast"}), "spec.fallback.mode"),
    BadCase(
        "env-value-and-value-from",
        falapp(env=[{"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]),
        "spec.env[0]",
        "env may set value or valueFrom, not both",
    ),
    BadCase(
        "env-value-from-two-sources",
        falapp(
            env=[
                {
                    "name": "A",
                    "valueFrom": {
                        "fieldRef": {"fieldPath": "metadata.name"},
                        "secretKeyRef": {"name": "s", "key": "k"},
                    },
                }
            ]
        ),
        "spec.env[0].valueFrom",
        "valueFrom must set exactly one of",
    ),
    BadCase(
        "env-bad-field-path",
        falapp(env=[{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.x"}}}]),
        "spec.env[0].valueFrom.fieldRef.fieldPath",
    ),
    BadCase("env-bad-name", falapp(env=[{"name": "1A=B", "value": "x"}]), "spec.env[0].name"),
    BadCase(
        "env-duplicate", falapp(env=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]), "spec.env[1]"
    ),
    BadCase(
        "env-from-no-source",
        falapp(envFrom=[{"prefix": "X_"}]),
        "spec.envFrom[0]",
        "envFrom must set exactly one",
    ),
    BadCase("port-zero", falapp(ports=[{"containerPort": 0}]), "spec.ports[0].containerPort"),
    BadCase(
        "port-protocol", falapp(ports=[{"containerPort": 80, "protocol": "HTTP"}]), "spec.ports[0].protocol"
    ),
    BadCase("port-name-upper", falapp(ports=[{"name": "HTTP", "containerPort": 80}]), "spec.ports[0].name"),
    BadCase(
        "port-name-no-letter",
        falapp(ports=[{"name": "8080", "containerPort": 80}]),
        "spec.ports[0].name",
        "a port name must contain at least one letter",
    ),
    BadCase(
        "port-duplicate",
        falapp(ports=[{"containerPort": 80}, {"containerPort": 80, "protocol": "TCP"}]),
        "spec.ports[1]",
    ),
    BadCase(
        "probe-no-handler",
        falapp(readinessProbe={"periodSeconds": 5}),
        "spec.readinessProbe",
        "a probe must set exactly one of httpGet, tcpSocket, exec, grpc",
    ),
    BadCase(
        "probe-two-handlers",
        falapp(readinessProbe={**_HTTP, "tcpSocket": {"port": 8080}}),
        "spec.readinessProbe",
        "a probe must set exactly one of httpGet, tcpSocket, exec, grpc",
    ),
    BadCase(
        "probe-port-range",
        falapp(readinessProbe={"httpGet": {"port": 70000}}),
        "spec.readinessProbe.httpGet.port",
        "port must be a number 1-65535 or a port name",
    ),
    BadCase(
        "probe-port-name-upper",
        falapp(readinessProbe={"tcpSocket": {"port": "Http"}}),
        "spec.readinessProbe.tcpSocket.port",
        "port must be a number 1-65535 or a port name",
    ),
    BadCase(
        "probe-period-zero",
        falapp(readinessProbe={**_HTTP, "periodSeconds": 0}),
        "spec.readinessProbe.periodSeconds",
    ),
    BadCase(
        "liveness-success-threshold",
        falapp(livenessProbe={**_HTTP, "successThreshold": 2}),
        "spec.livenessProbe.successThreshold",
        "livenessProbe.successThreshold must be 1",
    ),
    BadCase(
        "startup-success-threshold",
        falapp(startupProbe={**_HTTP, "successThreshold": 3}),
        "spec.startupProbe.successThreshold",
        "startupProbe.successThreshold must be 1",
    ),
    BadCase("resources-cpu-word", falapp(resources={"cpu": "lots"}), "spec.resources.cpu"),
    BadCase("resources-memory-negative", falapp(resources={"memory": "-1Gi"}), "spec.resources.memory"),
    BadCase("resources-gpu-field", falapp(resources={"nvidia.com/gpu": 1}), "spec.resources"),
    BadCase(
        "volume-no-source",
        falapp(volumes=[{"name": "cache"}]),
        "spec.volumes[0]",
        "exactly one volume source",
    ),
    BadCase(
        "volume-two-sources",
        falapp(volumes=[{"name": "cache", "emptyDir": {}, "secret": {"secretName": "s"}}]),
        "spec.volumes[0]",
        "exactly one volume source",
    ),
    BadCase(
        "volume-host-path",
        falapp(volumes=[{"name": "h", "hostPath": {"path": "/"}}]),
        "spec.volumes[0].hostPath",
    ),
    BadCase(
        "volume-medium",
        falapp(volumes=[{"name": "c", "emptyDir": {"medium": "Disk"}}]),
        "spec.volumes[0].emptyDir.medium",
    ),
    BadCase(
        "mount-undeclared",
        falapp(volumeMounts=_MOUNT),
        "spec.volumeMounts",
        "every volumeMounts[].name must name an entry of volumes",
    ),
    BadCase(
        "mount-relative",
        falapp(volumes=_VOL, volumeMounts=[{"name": "cache", "mountPath": "cache"}]),
        "spec.volumeMounts[0].mountPath",
    ),
    BadCase(
        "mount-sub-path-escape",
        falapp(volumes=_VOL, volumeMounts=[{**_MOUNT[0], "subPath": "a/../../etc"}]),
        "spec.volumeMounts[0].subPath",
        "subPath must be a relative path without '..'",
    ),
    BadCase("pod-label-value", falapp(podLabels={"team": "a b"}), "spec.podLabels.team"),
    *[
        BadCase(f"{field}-reserved-{key.split('/')[0]}", falapp(**{field: {key: "x"}}), f"spec.{field}",
                f"{field} key {key} is reserved")
        for field, key in [
            ("podLabels", "fal.ai/app"),
            ("podLabels", "kubernetes.io/hostname"),
            ("podLabels", "k8s.io/x"),
            ("podLabels", "karpenter.sh/capacity-type"),
            ("podLabels", "nvidia.com/gpu.present"),
            ("podAnnotations", "controller.kubernetes.io/pod-deletion-cost"),
            ("podAnnotations", "container.apparmor.security.beta.kubernetes.io/app"),
            ("podAnnotations", "cluster-autoscaler.kubernetes.io/safe-to-evict"),
            ("podAnnotations", "karpenter.sh/do-not-disrupt"),
            ("podAnnotations", "seccomp.security.alpha.kubernetes.io/pod"),
            ("podAnnotations", "sub.fal.ai/x"),
        ]
    ],
    *[
        BadCase(f"{field}-key-{name}", falapp(**{field: {key: "x"}}), f"spec.{field}",
                f"{field} key {key} is not a qualified name")
        for field, name, key in [
            ("podLabels", "space", "a b"),
            ("podLabels", "two-slashes", "a/b/c"),
            ("podAnnotations", "upper-prefix", "Example.com/x"),
            ("podAnnotations", "empty-name", "example.com/"),
            ("podAnnotations", "name-too-long", "n" * 64),
            ("podLabels", "prefix-too-long", ("a" * 62 + ".") * 4 + "aa/x"),
        ]
    ],
    BadCase(
        "pod-annotations-too-big",
        falapp(podAnnotations={f"example.com/a{i}": "v" * 40000 for i in range(2)}),
        "spec.podAnnotations",
        "podAnnotations may hold at most 65536 characters",
    ),
    BadCase("toleration-no-key", falapp(tolerations=[{"operator": "Exists"}]), "spec.tolerations[0].key"),
    BadCase("toleration-empty-key", falapp(tolerations=[{"key": "", "operator": "Exists"}]),
            "spec.tolerations[0].key"),
    *[
        BadCase(f"toleration-reserved-{key.replace('/', '-').replace('.', '-')}",
                falapp(tolerations=[{"key": key, "operator": "Exists"}]), "spec.tolerations[0].key",
                f"key {key} is reserved")
        for key in [
            "node-role.kubernetes.io/control-plane",
            "node.kubernetes.io/unschedulable",
            "node.cloudprovider.kubernetes.io/uninitialized",
            "nvidia.com/gpu",
            "nvidia.com/mig",
            "karpenter.sh/disrupted",
        ]
    ],
    BadCase("env-nvidia-visible-devices", falapp(env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]),
            "spec.env[0].name", "reserved for the GPU runtime"),
    BadCase("env-nvidia-driver-capabilities",
            falapp(env=[{"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "all"}]),
            "spec.env[0].name", "reserved for the GPU runtime"),
    *[
        BadCase(f"env-from-prefix-{prefix.lower().rstrip('_')}",
                falapp(envFrom=[{"configMapRef": {"name": "c"}, "prefix": prefix}]),
                "spec.envFrom[0].prefix", "reserved for the GPU runtime")
        for prefix in ["NVIDIA_", "NVIDIA_VISIBLE_", "NVIDIA", "N"]
    ],
    BadCase("quantity-huge-exponent", falapp(resources={"cpu": "1e1000000"}), "spec.resources.cpu"),
    BadCase("quantity-fraction-exponent", falapp(resources={"cpu": "1e1.5"}), "spec.resources.cpu"),
    BadCase("quantity-too-large", falapp(resources={"memory": "2Pi"}), "spec.resources.memory",
            "must be at most 1P"),
    BadCase("quantity-too-large-exponent", falapp(resources={"memory": "1e16"}), "spec.resources.memory",
            "must be at most 1P"),
    BadCase("automount-not-bool", falapp(automountServiceAccountToken="yes"),
            "spec.automountServiceAccountToken"),
    BadCase(
        "toleration-exists-with-value",
        falapp(tolerations=[{"key": "k", "operator": "Exists", "value": "v"}]),
        "spec.tolerations[0].value",
        "value must be empty when operator is Exists",
    ),
    BadCase(
        "toleration-seconds-no-execute",
        falapp(tolerations=[{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}]),
        "spec.tolerations[0].tolerationSeconds",
        "tolerationSeconds requires effect NoExecute",
    ),
    BadCase(
        "toleration-effect",
        falapp(tolerations=[{"key": "k", "effect": "Never"}]),
        "spec.tolerations[0].effect",
    ),
    BadCase(
        "nvenc-without-gpus",
        falapp(requiresNvenc=True, numGpus=0),
        "spec.numGpus",
        "requiresNvenc needs a GPU: numGpus may not be 0",
    ),
    BadCase("service-account-name", falapp(serviceAccountName="Bad_Name"), "spec.serviceAccountName"),
    # The curated subset has no privileged or host fields: strict field validation refuses them.
    BadCase("host-network", falapp(hostNetwork=True), "spec.hostNetwork"),
    BadCase("host-pid", falapp(hostPID=True), "spec.hostPID"),
    BadCase("privileged", falapp(privileged=True), "spec.privileged"),
    BadCase("security-context", falapp(securityContext={"privileged": True}), "spec.securityContext"),
    BadCase("node-name", falapp(nodeName="node-1"), "spec.nodeName"),
    BadCase("node-selector", falapp(nodeSelector={"kubernetes.io/hostname": "node-1"}), "spec.nodeSelector"),
    BadCase("host-port", falapp(ports=[{"containerPort": 80, "hostPort": 80}]), "spec.ports[0].hostPort"),
    BadCase("name-too-long", named("a" * 64), "metadata.name"),
    BadCase("name-dotted-with-ports", named("my.app", ports=[{"containerPort": 80}]), "metadata.name",
            "metadata.name must be a DNS-1035 label when spec.ports is set"),
    BadCase("name-digit-first-with-ports", named("1app", ports=[{"containerPort": 80}]), "metadata.name",
            "metadata.name must be a DNS-1035 label when spec.ports is set"),
]

BAD_MACHINETYPES: list[BadCase] = [
    BadCase("name-dotted", machinetype(name="gpu.h100"), "metadata.name"),
    BadCase("resources-missing", machinetype(resources=None), "spec.resources"),
    BadCase("resources-memory-missing", machinetype(resources={"cpu": "12"}), "spec.resources.memory"),
    BadCase(
        "resources-cpu-word", machinetype(resources={"cpu": "twelve", "memory": "1Gi"}), "spec.resources.cpu"
    ),
    BadCase("display-name-space", machinetype(displayName="GPU H100"), "spec.displayName"),
    BadCase("max-gpus-missing", machinetype(gpu={"vram": "80Gi"}), "spec.gpu.maxGpusPerReplica"),
    BadCase("max-gpus-zero", machinetype(gpu={"maxGpusPerReplica": 0}), "spec.gpu.maxGpusPerReplica"),
    BadCase("max-gpus-too-many", machinetype(gpu={"maxGpusPerReplica": 17}), "spec.gpu.maxGpusPerReplica"),
    BadCase(
        "nvenc-negative",
        machinetype(gpu={"maxGpusPerReplica": 8, "nvencEngines": -1}),
        "spec.gpu.nvencEngines",
    ),
    BadCase(
        "nvenc-selector-without-encoders",
        machinetype(nvencNodeSelector={"fal.ai/nvenc": "true"}),
        "spec.nvencNodeSelector",
        "nvencNodeSelector is only allowed when gpu.nvencEngines > 0",
    ),
    BadCase(
        "nvenc-selector-cpu-type",
        machinetype(gpu=None, nvencNodeSelector={"fal.ai/nvenc": "true"}),
        "spec.nvencNodeSelector",
        "nvencNodeSelector is only allowed when gpu.nvencEngines > 0",
    ),
    BadCase(
        "affinity-in-without-values",
        machinetype(nodeAffinity=[{"key": "nvidia.com/gpu.product", "operator": "In"}]),
        "spec.nodeAffinity[0].values",
        "values must not be empty for operator In or NotIn",
    ),
    BadCase(
        "affinity-exists-with-values",
        machinetype(nodeAffinity=[{"key": "gpu", "operator": "Exists", "values": ["x"]}]),
        "spec.nodeAffinity[0].values",
        "values must be empty for operator Exists or DoesNotExist",
    ),
    BadCase(
        "affinity-gt-not-integer",
        machinetype(nodeAffinity=[{"key": "gpu.count", "operator": "Gt", "values": ["many"]}]),
        "spec.nodeAffinity[0].values",
        "values must be exactly one integer for operator Gt or Lt",
    ),
    BadCase(
        "affinity-operator",
        machinetype(nodeAffinity=[{"key": "gpu", "operator": "Like", "values": ["x"]}]),
        "spec.nodeAffinity[0].operator",
    ),
    BadCase("node-selector-value", machinetype(nodeSelector={"pool": "gpu pool"}), "spec.nodeSelector.pool"),
    BadCase(
        "toleration-empty-key-equal",
        machinetype(tolerations=[{"operator": "Equal", "value": "x"}]),
        "spec.tolerations[0].operator",
        "operator must be Exists when key is empty",
    ),
    BadCase("unknown-field", machinetype(nodeName="n1"), "spec.nodeName"),
    BadCase("quantity-huge", machinetype(resources={"cpu": "9e999", "memory": "1Gi"}), "spec.resources.cpu"),
    BadCase("quantity-too-large", machinetype(resources={"cpu": "12", "memory": "2E"}), "spec.resources.memory",
            "must be at most 1P"),
    BadCase(
        "namespace-selector-operator",
        machinetype(namespaceSelector={"matchExpressions": [{"key": "team", "operator": "Gt", "values": ["1"]}]}),
        "spec.namespaceSelector.matchExpressions[0].operator",
    ),
    BadCase(
        "namespace-selector-in-without-values",
        machinetype(namespaceSelector={"matchExpressions": [{"key": "team", "operator": "In"}]}),
        "spec.namespaceSelector.matchExpressions[0].values",
        "values must not be empty for operator In or NotIn",
    ),
    BadCase(
        "namespace-selector-label-value",
        machinetype(namespaceSelector={"matchLabels": {"team": "a b"}}),
        "spec.namespaceSelector.matchLabels.team",
    ),
    BadCase("namespace-selector-unknown-field", machinetype(namespaceSelector={"names": ["a"]}),
            "spec.namespaceSelector.names"),
    BadCase("price-negative", machinetype(price="-2.49"), "spec.price"),
]


@dataclass(frozen=True)
class GoodCase:
    id: str
    body: dict[str, Any]


GOOD_FALAPPS: list[GoodCase] = [
    GoodCase("minimal", falapp()),
    GoodCase("lower-case-types", falapp(machineTypes=["gpu-h100", "gpu-a100", "gpu-l40"])),
    GoodCase("eight-types", falapp(machineTypes=[f"T{i}" for i in range(8)])),
    GoodCase("cpu-only", falapp(machineTypes=["XS", "S"], numGpus=0, replicas=0)),
    GoodCase("gpu-memory-only", falapp(machineTypes=None, gpuMemory="60Gi")),
    GoodCase("gpu-memory-in-bytes", falapp(machineTypes=None, gpuMemory=64424509440)),
    GoodCase("gpu-memory-split", falapp(machineTypes=None, gpuMemory="60Gi", splitAcrossGpus=True, replicas=3)),
    GoodCase("gpu-memory-checks-the-list", falapp(gpuMemory="20Gi", numGpus=1, splitAcrossGpus=False)),
    GoodCase(
        "multi-gpu-nvenc", falapp(machineTypes=["GPU-L40"], numGpus=8, requiresNvenc=True, replicas=1000)
    ),
    GoodCase(
        "fallback-durations",
        falapp(
            fallback={"unschedulableTimeout": "1m30s", "scaleUpTimeout": "0s", "returnToPreferred": False}
        ),
    ),
    GoodCase(
        "fallback-fractional", falapp(fallback={"unschedulableTimeout": "1.5h", "scaleUpTimeout": "24h"})
    ),
    GoodCase(
        "full-container",
        falapp(
            command=["python", "-m", "server"],
            args=["--port", "8080"],
            env=[
                {"name": "MODEL", "value": "sdxl"},
                {
                    "name": "TOKEN",
                    "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token", "optional": True}},
                },
                {"name": "CFG", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "a.b"}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
            ],
            envFrom=[{"configMapRef": {"name": "cfg"}}, {"secretRef": {"name": "sec"}, "prefix": "S_"}],
            ports=[{"name": "http", "containerPort": 8080}, {"containerPort": 8080, "protocol": "UDP"}],
            readinessProbe={
                "httpGet": {"path": "/ready", "port": "http", "scheme": "HTTP"},
                "periodSeconds": 5,
            },
            livenessProbe={"tcpSocket": {"port": 8080}, "failureThreshold": 6, "successThreshold": 1},
            startupProbe={"exec": {"command": ["cat", "/tmp/ready"]}, "initialDelaySeconds": 0},
            resources={"cpu": "500m", "memory": 1073741824},
            volumes=[
                {"name": "cache", "emptyDir": {"medium": "Memory", "sizeLimit": "10Gi"}},
                {"name": "cfg", "configMap": {"name": "cfg"}},
                {"name": "sec", "secret": {"secretName": "sec", "optional": False}},
                {"name": "models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}},
            ],
            volumeMounts=[
                {"name": "cache", "mountPath": "/cache"},
                {"name": "models", "mountPath": "/models", "readOnly": True, "subPath": "sdxl/v1"},
            ],
            imagePullSecrets=[{"name": "regcred"}],
            serviceAccountName="sdxl",
            podLabels={"team": "a", "app.kubernetes.io/part-of": "demo"},
            podAnnotations={"prometheus.io/scrape": "true"},
            tolerations=[
                {"key": "dedicated", "operator": "Exists"},
                {
                    "key": "dedicated",
                    "operator": "Equal",
                    "value": "ml",
                    "effect": "NoExecute",
                    "tolerationSeconds": 30,
                },
            ],
            priorityClassName="high",
        ),
    ),
    GoodCase("grpc-probe", falapp(readinessProbe={"grpc": {"port": 9000, "service": "health"}})),
    GoodCase("name-longest", named("a" * 63)),
    GoodCase("name-dotted-without-ports", named("my.app")),
    GoodCase("automount-token", falapp(automountServiceAccountToken=True)),
    GoodCase(
        "keys-near-reserved",
        falapp(
            podLabels={"app.kubernetes.io/name": "x", "example.com/kubernetes.io": "x", "notkubernetes.io/a": "b"},
            podAnnotations={"kubernetes.io.example.com/x": "y", "sidecar.istio.io/inject": "false",
                            ("a" * 61 + ".") * 3 + "a" * 63 + "/" + "n" * 63: "longest key"},
            tolerations=[{"key": "example.com/gpu", "operator": "Exists"}, {"key": "nvidia.company/x"}],
            env=[{"name": "NVIDIA", "value": "x"}, {"name": "nvidia_visible_devices", "value": "x"}],
            envFrom=[{"configMapRef": {"name": "c"}, "prefix": "APP_"}, {"secretRef": {"name": "s"}, "prefix": ""}],
        ),
    ),
    GoodCase("quantity-largest", falapp(resources={"cpu": "1P", "memory": "1e15"})),
]

GOOD_MACHINETYPES: list[GoodCase] = [
    GoodCase("gpu", machinetype()),
    GoodCase("cpu", machinetype(name="cpu-big", gpu=None, nodeAffinity=None, displayName=None)),
    GoodCase("priced", machinetype(price="2.49")),
    GoodCase(
        "namespace-selector",
        machinetype(
            namespaceSelector={
                "matchLabels": {"kubernetes.io/metadata.name": "team-a"},
                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["free"]},
                                     {"key": "gpu-allowed", "operator": "Exists"}],
            }
        ),
    ),
    GoodCase("namespace-selector-everything", machinetype(namespaceSelector={})),
    GoodCase(
        "nvenc-selector",
        machinetype(
            gpu={"maxGpusPerReplica": 4, "nvencEngines": 3}, nvencNodeSelector={"fal.ai/nvenc": "true"}
        ),
    ),
    GoodCase(
        "gke-labels",
        machinetype(
            name="gpu-a100-80gb",
            displayName="GPU-A100-80GB",
            gpu={"resourceName": "nvidia.com/gpu", "maxGpusPerReplica": 8, "vram": "80Gi", "nvdecEngines": 5},
            nodeSelector={"cloud.google.com/gke-accelerator": "nvidia-a100-80gb"},
            nodeAffinity=[
                {"key": "karpenter.k8s.aws/instance-gpu-count", "operator": "Gt", "values": ["3"]},
                {
                    "key": "node.kubernetes.io/exclude-from-external-load-balancers",
                    "operator": "DoesNotExist",
                },
            ],
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        ),
    ),
]
