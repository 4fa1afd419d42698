"""The bad-input table: invalid FalApps and MachineTypes, each with the field its error must name.

One table, judged on two sides so they cannot drift: tests/unit/test_bad_input.py validates every row
with the pydantic models, tests/cluster/test_bad_input.py applies it to the real API server (CRD schema
and CEL rules). `message`, when set, is our own message both must contain. Rows only the operator can
judge (they need the MachineType catalogue, which neither the schema nor a FalApp's model sees) say so
with `judge=OPERATOR` and a reason: both sides then check the object is accepted, and that the operator's
catalogue check (unit: `resolve`; cluster: the running operator's Stalled=True InvalidSpec) refuses it
naming the field. The good table beside it must be accepted everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tests.builders import falapp, machine_type


class Judge(StrEnum):
    APPLY = "apply"  # the models and the API server refuse it when it is applied
    OPERATOR = "operator"  # both accept it; the operator stalls it (Stalled=True, InvalidSpec)


@dataclass(frozen=True)
class BadCase:
    id: str
    body: dict[str, Any]
    field: str  # wire path of the offending field, e.g. spec.machineTypes
    message: str | None = None  # our own message (CEL or the operator's), when the rule is ours
    judge: Judge = Judge.APPLY
    reason: str = ""  # why only the operator can judge it (required unless judge is APPLY)
    machine_type: dict[str, Any] | None = None  # OPERATOR rows: a MachineType the catalogue holds too
    words: tuple[str, ...] = ()  # further words the operator's message must contain

    def __post_init__(self) -> None:
        assert (self.judge is Judge.APPLY) == (not self.reason), f"{self.id}: a reason goes with judge=OPERATOR"


@dataclass(frozen=True)
class GoodCase:
    id: str
    body: dict[str, Any]


def case_id(case: BadCase | GoodCase) -> str:
    return f"{case.body['kind']}-{case.id}"


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
    BadCase("machine-type-space", falapp(machineTypes=["GPU H100!"]), "spec.machineTypes"),
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
    BadCase("timeout-word", falapp(fallback={"unschedulableTimeout": "soon"}), "spec.fallback.unschedulableTimeout"),
    BadCase("timeout-below-a-second", falapp(fallback={"unschedulableTimeout": "10ms"}),
            "spec.fallback.unschedulableTimeout", "must be a duration between 1s and 24h"),
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
    BadCase("port-too-high", falapp(ports=[{"containerPort": 70000}]), "spec.ports[0].containerPort"),
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
        "probe-period-over-int32",
        falapp(startupProbe={"exec": {"command": ["true"]}, "periodSeconds": 2**31}),
        "spec.startupProbe.periodSeconds",
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
    BadCase("name-too-long", falapp("a" * 64), "metadata.name"),
    BadCase("name-dotted-with-ports", falapp("my.app", ports=[{"containerPort": 80}]), "metadata.name",
            "metadata.name must be a DNS-1035 label when spec.ports is set"),
    BadCase("name-digit-first-with-ports", falapp("1app", ports=[{"containerPort": 80}]), "metadata.name",
            "metadata.name must be a DNS-1035 label when spec.ports is set"),
]

BAD_MACHINETYPES: list[BadCase] = [
    BadCase("name-dotted", machine_type(name="gpu.h100"), "metadata.name"),
    BadCase("resources-missing", machine_type(resources=None), "spec.resources"),
    BadCase("resources-memory-missing", machine_type(resources={"cpu": "12"}), "spec.resources.memory"),
    BadCase(
        "resources-cpu-word", machine_type(resources={"cpu": "twelve", "memory": "1Gi"}), "spec.resources.cpu"
    ),
    BadCase("display-name-space", machine_type(displayName="GPU H100"), "spec.displayName"),
    BadCase("max-gpus-missing", machine_type(gpu={"vram": "80Gi"}), "spec.gpu.maxGpusPerReplica"),
    BadCase("max-gpus-zero", machine_type(gpu={"maxGpusPerReplica": 0}), "spec.gpu.maxGpusPerReplica"),
    BadCase("max-gpus-too-many", machine_type(gpu={"maxGpusPerReplica": 17}), "spec.gpu.maxGpusPerReplica"),
    BadCase(
        "nvenc-negative",
        machine_type(gpu={"maxGpusPerReplica": 8, "nvencEngines": -1}),
        "spec.gpu.nvencEngines",
    ),
    BadCase(
        "nvenc-selector-without-encoders",
        machine_type(nvencNodeSelector={"fal.ai/nvenc": "true"}),
        "spec.nvencNodeSelector",
        "nvencNodeSelector is only allowed when gpu.nvencEngines > 0",
    ),
    BadCase(
        "nvenc-selector-cpu-type",
        machine_type(gpu=None, nvencNodeSelector={"fal.ai/nvenc": "true"}),
        "spec.nvencNodeSelector",
        "nvencNodeSelector is only allowed when gpu.nvencEngines > 0",
    ),
    BadCase(
        "affinity-in-without-values",
        machine_type(nodeAffinity=[{"key": "nvidia.com/gpu.product", "operator": "In"}]),
        "spec.nodeAffinity[0].values",
        "values must not be empty for operator In or NotIn",
    ),
    BadCase(
        "affinity-exists-with-values",
        machine_type(nodeAffinity=[{"key": "gpu", "operator": "Exists", "values": ["x"]}]),
        "spec.nodeAffinity[0].values",
        "values must be empty for operator Exists or DoesNotExist",
    ),
    BadCase(
        "affinity-gt-not-integer",
        machine_type(nodeAffinity=[{"key": "gpu.count", "operator": "Gt", "values": ["many"]}]),
        "spec.nodeAffinity[0].values",
        "values must be exactly one integer for operator Gt or Lt",
    ),
    BadCase(
        "affinity-operator",
        machine_type(nodeAffinity=[{"key": "gpu", "operator": "Like", "values": ["x"]}]),
        "spec.nodeAffinity[0].operator",
    ),
    BadCase("node-selector-value", machine_type(nodeSelector={"pool": "gpu pool"}), "spec.nodeSelector.pool"),
    BadCase(
        "toleration-empty-key-equal",
        machine_type(tolerations=[{"operator": "Equal", "value": "x"}]),
        "spec.tolerations[0].operator",
        "operator must be Exists when key is empty",
    ),
    BadCase("unknown-field", machine_type(nodeName="n1"), "spec.nodeName"),
    BadCase("quantity-huge", machine_type(resources={"cpu": "9e999", "memory": "1Gi"}), "spec.resources.cpu"),
    BadCase("quantity-too-large", machine_type(resources={"cpu": "12", "memory": "2E"}), "spec.resources.memory",
            "must be at most 1P"),
    BadCase(
        "namespace-selector-operator",
        machine_type(namespaceSelector={"matchExpressions": [{"key": "team", "operator": "Gt", "values": ["1"]}]}),
        "spec.namespaceSelector.matchExpressions[0].operator",
    ),
    BadCase(
        "namespace-selector-in-without-values",
        machine_type(namespaceSelector={"matchExpressions": [{"key": "team", "operator": "In"}]}),
        "spec.namespaceSelector.matchExpressions[0].values",
        "values must not be empty for operator In or NotIn",
    ),
    BadCase(
        "namespace-selector-label-value",
        machine_type(namespaceSelector={"matchLabels": {"team": "a b"}}),
        "spec.namespaceSelector.matchLabels.team",
    ),
    BadCase("namespace-selector-unknown-field", machine_type(namespaceSelector={"names": ["a"]}),
            "spec.namespaceSelector.names"),
    BadCase("price-negative", machine_type(price="-2.49"), "spec.price"),
]

# What only the operator can judge: the object is valid on its own; the MachineType catalogue makes it
# unplaceable. The operator stalls it (Stalled=True, InvalidSpec) naming the field and creates nothing.
CATALOGUE = "needs the MachineType catalogue: neither the CRD schema nor the FalApp model sees it"
ENTITLEMENT = "needs the catalogue and the namespace's labels: only the operator sees both"
CHILDREN = ("judged by the operator, not the schema: a rule added to the CRD would refuse even the status writes "
            "of apps stored before it (and whether an app has GPUs depends on the catalogue)")
PRIVATE = "GPU-PRIVATE"  # the MachineType a row adds to the catalogue (renamed per cluster test namespace)


def _private(**spec: Any) -> dict[str, Any]:
    return machine_type(PRIVATE.lower(), nodeAffinity=None, **spec)


BAD_FOR_THE_OPERATOR: list[BadCase] = [
    BadCase("unknown-type", falapp(machineTypes=["GPU-H100", "GPU-V100"], numGpus=1), "spec.machineTypes",
            "GPU-V100", Judge.OPERATOR, CATALOGUE),
    BadCase("too-many-gpus-everywhere", falapp(numGpus=12), "spec.machineTypes", "numGpus is 12",
            Judge.OPERATOR, CATALOGUE),
    BadCase("nvenc-without-encoders", falapp(numGpus=1, requiresNvenc=True), "spec.machineTypes", "NVENC",
            Judge.OPERATOR, CATALOGUE),
    BadCase("gpus-on-cpu-types", falapp(machineTypes=["M", "L"], numGpus=1), "spec.machineTypes", "CPU type",
            Judge.OPERATOR, CATALOGUE),
    BadCase("gpu-memory-fits-no-type", falapp(machineTypes=None, gpuMemory="300Gi", numGpus=1), "spec.gpuMemory",
            "no machine type fits 300Gi", Judge.OPERATOR, CATALOGUE, words=("192Gi on GPU-B200", "splitAcrossGpus")),
    BadCase("gpu-memory-too-big-for-a-listed-type",
            falapp(machineTypes=["GPU-H200", "GPU-H100"], gpuMemory="100Gi", numGpus=1), "spec.machineTypes",
            "GPU-H100 has 80Gi per GPU, less than gpuMemory 100Gi", Judge.OPERATOR, CATALOGUE),
    BadCase("type-not-available-to-the-namespace", falapp(machineTypes=[PRIVATE], numGpus=1), "spec.machineTypes",
            "is not available to namespace", Judge.OPERATOR, ENTITLEMENT, words=(PRIVATE,),
            machine_type=_private(namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": "another-team"}})),
    BadCase("toleration-a-machine-type-owns",
            falapp(machineTypes=[PRIVATE], numGpus=1, tolerations=[{"key": "dedicated", "operator": "Exists"}]),
            "spec.tolerations[0].key", "dedicated is tolerated by machine type", Judge.OPERATOR, CATALOGUE,
            words=(PRIVATE,), machine_type=_private(tolerations=[
                {"key": "dedicated", "operator": "Equal", "value": "team-b", "effect": "NoSchedule"}])),
    BadCase("env-from-unprefixed-with-gpus", falapp(envFrom=[{"configMapRef": {"name": "c"}}]),
            "spec.envFrom[0].prefix", "every envFrom entry of an app with GPUs needs a prefix", Judge.OPERATOR,
            CHILDREN),
    BadCase("env-from-empty-prefix-with-gpus",
            falapp(numGpus=1, envFrom=[{"configMapRef": {"name": "c"}, "prefix": "A_"},
                                       {"secretRef": {"name": "s"}, "prefix": ""}]),
            "spec.envFrom[1].prefix", "every envFrom entry of an app with GPUs needs a prefix", Judge.OPERATOR,
            CHILDREN),
    BadCase("ports-same-name", falapp(ports=[{"containerPort": 8080, "name": "http"},
                                             {"containerPort": 8081, "name": "http"}]),
            "spec.ports", "two ports may not have the same name", Judge.OPERATOR, CHILDREN),
    BadCase("ports-unnamed-share-a-number", falapp(ports=[{"containerPort": 53, "protocol": "TCP"},
                                                          {"containerPort": 53, "protocol": "UDP"}]),
            "spec.ports", "unnamed ports need different numbers", Judge.OPERATOR, CHILDREN),
    BadCase("ports-named-after-another", falapp(ports=[{"containerPort": 8080, "name": "port-80"},
                                                       {"containerPort": 80}]),
            "spec.ports", "port name port-80 is the Service's name for an unnamed port", Judge.OPERATOR, CHILDREN),
    BadCase("requests-too-large-for-kubernetes", falapp(machineTypes=[PRIVATE], numGpus=16), "spec.numGpus",
            "too large for Kubernetes", Judge.OPERATOR, CATALOGUE, words=("cpu request", PRIVATE),
            machine_type=_private(resources={"cpu": "1P", "memory": "1Gi"}, gpu={"maxGpusPerReplica": 16})),
]


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
            envFrom=[{"configMapRef": {"name": "cfg"}, "prefix": "C_"}, {"secretRef": {"name": "sec"}, "prefix": "S_"}],
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
    GoodCase("name-longest", falapp("a" * 63)),
    GoodCase("name-dotted-without-ports", falapp("my.app")),
    GoodCase("automount-token", falapp(automountServiceAccountToken=True)),
    GoodCase(
        "keys-near-reserved",
        falapp(
            podLabels={"app.kubernetes.io/name": "x", "example.com/kubernetes.io": "x", "notkubernetes.io/a": "b"},
            podAnnotations={"kubernetes.io.example.com/x": "y", "sidecar.istio.io/inject": "false",
                            ("a" * 61 + ".") * 3 + "a" * 63 + "/" + "n" * 63: "longest key"},
            tolerations=[{"key": "example.com/gpu", "operator": "Exists"}, {"key": "nvidia.company/x"}],
            env=[{"name": "NVIDIA", "value": "x"}, {"name": "nvidia_visible_devices", "value": "x"}],
            envFrom=[{"configMapRef": {"name": "c"}, "prefix": "APP_"}, {"secretRef": {"name": "s"}, "prefix": "N_"}],
        ),
    ),
    GoodCase("ports-sharing-a-number-named", falapp(ports=[{"containerPort": 53, "name": "dns-tcp"},
                                                           {"containerPort": 53, "protocol": "UDP"}])),
    GoodCase("port-named-like-a-number-it-is-not", falapp(ports=[{"containerPort": 8080, "name": "port-8080"},
                                                                {"containerPort": 9090}])),
    GoodCase("env-from-unprefixed-on-cpu-types", falapp(machineTypes=["M", "L"],
                                                        envFrom=[{"configMapRef": {"name": "c"}}])),
    GoodCase("env-from-unprefixed-without-gpus",
             falapp(machineTypes=["XS"], numGpus=0, envFrom=[{"configMapRef": {"name": "c"}, "prefix": ""}])),
    GoodCase("quantity-largest", falapp(resources={"cpu": "1P", "memory": "1e15"})),
]

GOOD_MACHINETYPES: list[GoodCase] = [
    GoodCase("gpu", machine_type()),
    GoodCase("cpu", machine_type(name="cpu-big", gpu=None, nodeAffinity=None, displayName=None)),
    GoodCase("priced", machine_type(price="2.49")),
    GoodCase(
        "namespace-selector",
        machine_type(
            namespaceSelector={
                "matchLabels": {"kubernetes.io/metadata.name": "team-a"},
                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["free"]},
                                     {"key": "gpu-allowed", "operator": "Exists"}],
            }
        ),
    ),
    GoodCase("namespace-selector-everything", machine_type(namespaceSelector={})),
    GoodCase(
        "nvenc-selector",
        machine_type(
            gpu={"maxGpusPerReplica": 4, "nvencEngines": 3}, nvencNodeSelector={"fal.ai/nvenc": "true"}
        ),
    ),
    GoodCase(
        "gke-labels",
        machine_type(
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

BAD_INPUT: list[BadCase] = BAD_FALAPPS + BAD_MACHINETYPES + BAD_FOR_THE_OPERATOR
GOOD_INPUT: list[GoodCase] = GOOD_FALAPPS + GOOD_MACHINETYPES
