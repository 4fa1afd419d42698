"""Bad FalApps and MachineTypes, applied for real: each is refused naming the field, or reported
as Stalled/InvalidSpec when only the catalogue can judge it. Nothing half-created is left behind."""

from __future__ import annotations

import copy
import json

import pytest

from tests.cluster.helpers import events_for, wait_condition
from tests.kube import Kubectl, condition
from tests.unit.api_cases import BAD_FALAPPS, BAD_MACHINETYPES, GOOD_FALAPPS, GOOD_MACHINETYPES, BadCase, GoodCase

GOOD_APP = {"apiVersion": "fal.ai/v1alpha1", "kind": "FalApp", "metadata": {"name": "bad"},
            "spec": {"image": "registry.example.com/app:1", "machineTypes": ["GPU-H100"], "numGpus": 1}}
GOOD_TYPE = {"apiVersion": "fal.ai/v1alpha1", "kind": "MachineType", "metadata": {"name": "bad-type"},
             "spec": {"gpu": {"maxGpusPerReplica": 8, "vram": "80Gi"}, "resources": {"cpu": "4", "memory": "16Gi"}}}


def with_(base: dict, path: str, value) -> dict:
    body = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = body
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        node.pop(last, None)
    else:
        node[last] = value
    return body


DELETE = object()

# (id, manifest, text that must appear in kubectl's error: the field it names)
REFUSED = [
    ("app-no-image", with_(GOOD_APP, "spec.image", DELETE), "spec.image"),
    ("app-empty-image", with_(GOOD_APP, "spec.image", ""), "spec.image"),
    ("app-no-machine-types", with_(GOOD_APP, "spec.machineTypes", []), "spec.machineTypes"),
    ("app-too-many-machine-types", with_(GOOD_APP, "spec.machineTypes", [f"T{i}" for i in range(9)]),
     "spec.machineTypes"),
    ("app-duplicate-machine-types", with_(GOOD_APP, "spec.machineTypes", ["GPU-H100", "gpu-h100"]),
     "spec.machineTypes"),
    ("app-bad-type-name", with_(GOOD_APP, "spec.machineTypes", ["GPU H100!"]), "spec.machineTypes"),
    ("app-negative-gpus", with_(GOOD_APP, "spec.numGpus", -1), "spec.numGpus"),
    ("app-huge-gpus", with_(GOOD_APP, "spec.numGpus", 99), "spec.numGpus"),
    ("app-negative-replicas", with_(GOOD_APP, "spec.replicas", -2), "spec.replicas"),
    ("app-bad-duration", with_(GOOD_APP, "spec.fallback", {"unschedulableTimeout": "soon"}),
     "spec.fallback.unschedulableTimeout"),
    ("app-timeout-too-short", with_(GOOD_APP, "spec.fallback", {"unschedulableTimeout": "10ms"}),
     "spec.fallback.unschedulableTimeout"),
    ("app-host-network", with_(GOOD_APP, "spec.hostNetwork", True), "hostNetwork"),
    ("app-privileged", with_(GOOD_APP, "spec.privileged", True), "privileged"),
    ("app-reserved-pod-label", with_(GOOD_APP, "spec.podLabels", {"fal.ai/app": "other"}), "spec.podLabels"),
    ("app-env-value-and-from", with_(GOOD_APP, "spec.env", [
        {"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]), "spec.env[0]"),
    ("app-bad-port", with_(GOOD_APP, "spec.ports", [{"containerPort": 70000}]), "spec.ports[0].containerPort"),
    ("type-no-resources", with_(GOOD_TYPE, "spec.resources", DELETE), "spec.resources"),
    ("type-zero-max-gpus", with_(GOOD_TYPE, "spec.gpu", {"maxGpusPerReplica": 0}), "spec.gpu.maxGpusPerReplica"),
    ("type-bad-quantity", with_(GOOD_TYPE, "spec.resources", {"cpu": "lots", "memory": "1Gi"}),
     "spec.resources.cpu"),
    ("type-bad-affinity-operator", with_(GOOD_TYPE, "spec.nodeAffinity", [{"key": "a", "operator": "Near"}]),
     "spec.nodeAffinity[0].operator"),
    ("type-nvenc-selector-without-encoders", with_(GOOD_TYPE, "spec.nvencNodeSelector", {"video": "yes"}),
     "spec.nvencNodeSelector"),
    # what a tenant must not obtain through a FalApp
    ("app-toleration-without-key", with_(GOOD_APP, "spec.tolerations", [{"operator": "Exists"}]),
     "spec.tolerations[0].key: Required value"),
    ("app-toleration-control-plane", with_(GOOD_APP, "spec.tolerations", [
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]),
     "spec.tolerations[0].key: Invalid value: key node-role.kubernetes.io/control-plane is reserved"),
    ("app-toleration-gpu-taint", with_(GOOD_APP, "spec.tolerations", [{"key": "nvidia.com/gpu", "operator": "Exists"}]),
     "key nvidia.com/gpu is reserved"),
    ("app-env-nvidia-visible-devices",
     with_(GOOD_APP, "spec.env", [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]),
     "spec.env[0].name: Invalid value: \"NVIDIA_VISIBLE_DEVICES\": names starting with NVIDIA_ are reserved"),
    ("app-env-from-nvidia-prefix", with_(GOOD_APP, "spec.envFrom", [
        {"configMapRef": {"name": "gpu"}, "prefix": "NVIDIA_"}]), "spec.envFrom[0].prefix"),
    ("app-label-key-invalid", with_(GOOD_APP, "spec.podLabels", {"team name": "a"}),
     "spec.podLabels: Invalid value: podLabels key team name is not a qualified name"),
    ("app-annotation-deletion-cost", with_(GOOD_APP, "spec.podAnnotations", {
        "controller.kubernetes.io/pod-deletion-cost": "-1000"}),
     "spec.podAnnotations: Invalid value: podAnnotations key controller.kubernetes.io/pod-deletion-cost is reserved"),
    ("app-annotation-apparmor", with_(GOOD_APP, "spec.podAnnotations", {
        "container.apparmor.security.beta.kubernetes.io/app": "unconfined"}),
     "podAnnotations key container.apparmor.security.beta.kubernetes.io/app is reserved"),
    ("app-annotation-do-not-disrupt", with_(GOOD_APP, "spec.podAnnotations", {"karpenter.sh/do-not-disrupt": "true"}),
     "podAnnotations key karpenter.sh/do-not-disrupt is reserved"),
    ("app-name-too-long", with_(GOOD_APP, "metadata.name", "a" * 64), "metadata.name: Too long"),
    ("app-dotted-name-with-ports", with_(with_(GOOD_APP, "metadata.name", "bad.app"), "spec.ports",
                                         [{"containerPort": 8080}]),
     "metadata.name: Invalid value: metadata.name must be a DNS-1035 label when spec.ports is set"),
    ("app-huge-quantity", with_(GOOD_APP, "spec.resources", {"cpu": "1e1000000"}), "spec.resources.cpu"),
    ("app-quantity-too-large", with_(GOOD_APP, "spec.resources", {"memory": "2Pi"}),
     "spec.resources.memory: Invalid value: \"2Pi\": must be at most 1P"),
    ("app-token-not-bool", with_(GOOD_APP, "spec.automountServiceAccountToken", "yes"),
     "spec.automountServiceAccountToken"),
    ("app-gpu-memory-zero", with_(GOOD_APP, "spec.gpuMemory", "0"),
     "spec.gpuMemory: Invalid value: \"0\": gpuMemory must be between 1Mi and 16Ti"),
    ("app-gpu-memory-absurd", with_(GOOD_APP, "spec.gpuMemory", "64Ti"),
     "spec.gpuMemory: Invalid value: \"64Ti\": gpuMemory must be between 1Mi and 16Ti"),
    ("app-split-with-num-gpus", with_(with_(GOOD_APP, "spec.gpuMemory", "60Gi"), "spec.splitAcrossGpus", True),
     "spec.numGpus: Invalid value: numGpus may not be set with splitAcrossGpus"),
    ("app-neither-machine-types-nor-gpu-memory", with_(GOOD_APP, "spec.machineTypes", DELETE),
     "spec.machineTypes: Invalid value: machineTypes is required unless gpuMemory is set"),
    ("type-negative-price", with_(GOOD_TYPE, "spec.price", "-1"), "spec.price"),
    ("type-namespace-selector-operator", with_(GOOD_TYPE, "spec.namespaceSelector", {
        "matchExpressions": [{"key": "team", "operator": "Gt", "values": ["1"]}]}),
     "spec.namespaceSelector.matchExpressions[0].operator"),
]


@pytest.mark.parametrize("manifest, field", [pytest.param(m, f, id=i) for i, m, f in REFUSED])
def test_refused_at_apply_naming_the_field(kctl: Kubectl, crds, manifest, field):
    result = kctl.apply(manifest, check=False)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    assert field in result.stderr, result.stderr
    kind = manifest["kind"].lower()
    assert kctl.run("get", kind, manifest["metadata"]["name"], check=False).returncode != 0


def _case_id(case: BadCase | GoodCase) -> str:
    return f"{case.body['kind']}-{case.id}"


@pytest.mark.parametrize("case", BAD_FALAPPS + BAD_MACHINETYPES, ids=_case_id)
def test_every_bad_case_of_the_model_table_is_refused_by_the_apiserver(kubectl: Kubectl, crds, case: BadCase):
    """tests/unit/api_cases.py drives pydantic (unit tests) and the CRD schema and CEL rules (here)."""
    # JSON, not YAML: kubectl reads a bare N or y in YAML as a boolean
    result = kubectl.apply(json.dumps(case.body), "--dry-run=server", check=False)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    assert case.field in result.stderr, result.stderr
    if case.message:
        assert case.message in result.stderr, result.stderr


@pytest.mark.parametrize("case", GOOD_FALAPPS + GOOD_MACHINETYPES, ids=_case_id)
def test_every_good_case_of_the_model_table_is_accepted_by_the_apiserver(kubectl: Kubectl, crds, case: GoodCase):
    result = kubectl.apply(json.dumps(case.body), "--dry-run=server", check=False)
    assert result.returncode == 0, result.stderr


# (id, spec changes, words the InvalidSpec message must contain)
STALLED = [
    ("unknown-type", {"machineTypes": ["GPU-H100", "GPU-V100"]}, ["spec.machineTypes", "GPU-V100"]),
    ("too-many-gpus-everywhere", {"machineTypes": ["GPU-H100", "GPU-A100"], "numGpus": 12},
     ["spec.machineTypes", "numGpus is 12"]),
    ("nvenc-without-encoders", {"machineTypes": ["GPU-H100", "GPU-A100"], "requiresNvenc": True},
     ["spec.machineTypes", "NVENC"]),
    ("gpus-on-cpu-types", {"machineTypes": ["M", "L"], "numGpus": 1}, ["spec.machineTypes", "CPU type"]),
    ("gpu-memory-fits-no-type", {"machineTypes": None, "gpuMemory": "300Gi"},
     ["spec.gpuMemory: no machine type fits 300Gi", "192Gi on GPU-B200", "splitAcrossGpus"]),
    ("gpu-memory-too-big-for-a-listed-type", {"machineTypes": ["GPU-H200", "GPU-H100"], "gpuMemory": "100Gi"},
     ["spec.machineTypes", "GPU-H100 has 80Gi per GPU, less than gpuMemory 100Gi"]),
]


@pytest.mark.parametrize("changes, words", [pytest.param(c, w, id=i) for i, c, w in STALLED])
def test_catalogue_level_problems_stall_with_invalid_spec(kctl: Kubectl, running_operator, changes, words):
    app = copy.deepcopy(GOOD_APP)
    app["spec"].update(changes)
    kctl.apply(app)
    stalled = wait_condition(kctl, "falapp", "bad", "Stalled", "True", "InvalidSpec", timeout=30)
    for word in words:
        assert word in stalled["message"]
    ready = condition(kctl.get("falapp", "bad"), "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
    warnings = events_for(kctl, "bad", "InvalidSpec")
    assert warnings and warnings[0]["type"] == "Warning"
    assert not kctl.get("deployments")["items"], "children were created for an invalid spec"
    # fixing the spec recovers without a restart
    fixed = copy.deepcopy(GOOD_APP)
    fixed["spec"].update({"machineTypes": ["M"], "numGpus": 0})
    kctl.apply(fixed)
    wait_condition(kctl, "falapp", "bad", "Stalled", "False", timeout=30)


def test_adding_the_missing_machine_type_recovers_a_stalled_app(kctl: Kubectl, kubectl: Kubectl, running_operator):
    name = f"gpu-{kctl.namespace}"
    app = copy.deepcopy(GOOD_APP)
    app["spec"]["machineTypes"] = [name.upper()]
    kctl.apply(app)
    wait_condition(kctl, "falapp", "bad", "Stalled", "True", "InvalidSpec", timeout=30)
    machine_type = with_(GOOD_TYPE, "metadata.name", name)
    machine_type["spec"]["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    kubectl.apply(machine_type)
    try:
        wait_condition(kctl, "falapp", "bad", "Stalled", "False", timeout=30)
        assert kctl.get("deployments")["items"], "no Deployment after the type appeared"
    finally:
        kubectl.run("delete", "machinetype", name, "--wait=false")


# (id, private MachineType spec changes, app spec changes, words the InvalidSpec message must contain);
# the type is named gpu-<namespace> and listed by the app
OWNED = [
    ("type-not-available-to-the-namespace",
     {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "another-team"}}}, {},
     ["spec.machineTypes", "is not available to namespace"]),
    ("toleration-a-machine-type-owns",
     {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "team-b", "effect": "NoSchedule"}]},
     {"tolerations": [{"key": "dedicated", "operator": "Exists"}]},
     ["spec.tolerations[0].key", "dedicated is tolerated by machine type"]),
    ("requests-too-large-for-kubernetes",
     {"resources": {"cpu": "1P", "memory": "1Gi"}, "gpu": {"maxGpusPerReplica": 16}}, {"numGpus": 16},
     ["spec.numGpus", "cpu request", "too large for Kubernetes"]),
]


@pytest.mark.parametrize("type_changes, app_changes, words", [pytest.param(t, a, w, id=i) for i, t, a, w in OWNED])
def test_what_only_the_catalogue_can_refuse_stalls_with_invalid_spec(
        kctl: Kubectl, kubectl: Kubectl, running_operator, type_changes, app_changes, words):
    name = f"gpu-{kctl.namespace}"
    machine_type = with_(GOOD_TYPE, "metadata.name", name)
    machine_type["spec"].update(type_changes)
    kubectl.apply(machine_type)
    try:
        app = copy.deepcopy(GOOD_APP)
        app["spec"].update({"machineTypes": [name.upper()], **app_changes})
        kctl.apply(app)
        stalled = wait_condition(kctl, "falapp", "bad", "Stalled", "True", "InvalidSpec", timeout=30)
        for word in words:
            assert word in stalled["message"]
        assert name.upper() in stalled["message"]
        warnings = events_for(kctl, "bad", "InvalidSpec")
        assert warnings and warnings[0]["type"] == "Warning"
        assert not kctl.get("deployments")["items"], "children were created for an invalid spec"
    finally:
        kubectl.run("delete", "machinetype", name, "--wait=false")
