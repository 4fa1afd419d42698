"""What a FalApp in a shared cluster may not obtain, judged without the API server: entitlements
(MachineType namespaceSelector), taints machine types own, requests too large to compute, child names,
and what the pod template grants (no token, no GPUs without a GPU request)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from falapp_operator.api import (
    APP_NAME_MAX,
    CHILD_SUFFIX_MAX,
    DEFAULT_CATALOG,
    DEPLOYMENT_NAME_MAX,
    FalAppSpec,
    FalAppStatus,
    LabelSelector,
    app_name_problem,
    requirement_matches,
)
from falapp_operator.api.common import DNS1123_SUBDOMAIN, is_qualified_name, is_reserved_key
from falapp_operator.api.names import deployment_name
from falapp_operator.api.units import cpu_millis, memory_bytes, parse_quantity
from falapp_operator.placement.eligibility import resolve
from falapp_operator.reconcile.app import AppSnapshot, plan
from falapp_operator.reconcile.children import AppRef, pod_template
from tests.builders import APP_LABEL, falapp_spec, machine_type_model

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
REF = AppRef("sdxl", "team-a", "0b7f1c1e-0000-4000-8000-000000000001")


def spec(**fields) -> FalAppSpec:
    return falapp_spec(**{"machineTypes": ["GPU-TEST"], **fields})


TEAM_A = {"kubernetes.io/metadata.name": "team-a", "tier": "paid"}


# --- entitlements -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "allowed"),
    [
        (None, None, True),
        (None, TEAM_A, True),
        ({}, None, True),
        ({"matchLabels": {"kubernetes.io/metadata.name": "team-a"}}, TEAM_A, True),
        ({"matchLabels": {"kubernetes.io/metadata.name": "team-b"}}, TEAM_A, False),
        ({"matchLabels": {"kubernetes.io/metadata.name": "team-a"}}, None, False),
        ({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["paid", "gold"]}]}, TEAM_A, True),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["paid"]}]}, TEAM_A, False),
        ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, TEAM_A, False),
        ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, TEAM_A, True),
        ({"matchLabels": {"tier": "paid"}, "matchExpressions": [{"key": "gpu", "operator": "Exists"}]},
         TEAM_A, False),
    ],
    ids=["absent", "absent-known", "empty-unknown", "name", "other-name", "unknown-labels", "in", "notin",
         "exists", "doesnotexist", "labels-and-expressions"],
)
def test_namespace_selector(selector: dict | None, labels: dict | None, allowed: bool) -> None:
    restricted = machine_type_model(namespaceSelector=selector)
    assert restricted.spec.available_to(labels) is allowed
    resolution = resolve(spec(), [restricted], "team-a", labels)
    if allowed:
        assert resolution.problem is None and [o.name for o in resolution.options] == ["gpu-test"]
    else:
        assert resolution.problem is not None and not resolution.options
        assert resolution.problem.startswith("spec.machineTypes: GPU-TEST is not available to namespace team-a")
        assert ("labels are not known" in resolution.problem) is (labels is None)


def test_one_listed_type_not_entitled_makes_the_spec_invalid() -> None:
    other = machine_type_model("gpu-other", displayName="GPU-OTHER",
                  namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": "team-b"}})
    resolution = resolve(spec(machineTypes=["GPU-TEST", "GPU-OTHER"]), [machine_type_model(), other], "team-a", TEAM_A)
    assert resolution.problem == "spec.machineTypes: GPU-OTHER is not available to namespace team-a"


def test_plan_reports_an_unentitled_type_as_invalid_spec() -> None:
    restricted = machine_type_model(namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": "team-b"}})
    snap = AppSnapshot(ref=REF, generation=2, spec=spec(), status=FalAppStatus(), catalogue=[restricted], counts={},
                       surge=None, pods=[], free={}, now=NOW, namespace_labels=TEAM_A)
    result = plan(snap)
    assert not result.deployments and result.service is None
    stalled = next(c for c in result.status.to_patch()["conditions"] if c["type"] == "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidSpec")
    assert "GPU-TEST is not available to namespace team-a" in stalled["message"]
    assert [(e.type, e.reason) for e in result.events] == [("Warning", "InvalidSpec")]


@pytest.mark.parametrize(
    ("operator", "values", "labels", "want"),
    [
        ("In", ["a"], {"k": "a"}, True),
        ("In", ["a"], {}, False),
        ("NotIn", ["a"], {}, True),
        ("Exists", [], {"k": ""}, True),
        ("DoesNotExist", [], {"k": "x"}, False),
        ("Gt", ["3"], {"k": "4"}, True),
        ("Lt", ["3"], {"k": "x"}, False),
        ("Like", ["a"], {"k": "a"}, False),
    ],
)
def test_requirement_matches(operator: str, values: list[str], labels: dict, want: bool) -> None:
    assert requirement_matches("k", operator, values, labels) is want


def test_empty_label_selector_matches_everything() -> None:
    assert LabelSelector().matches_everything and LabelSelector().matches({})


# --- taints the machine types own -------------------------------------------------------------------


def test_a_toleration_a_machine_type_owns_is_invalid() -> None:
    dedicated = machine_type_model("team-b-h100", displayName="TEAM-B-H100",
                      tolerations=[{"key": "dedicated", "operator": "Equal", "value": "team-b"}])
    app = spec(tolerations=[{"key": "spot", "operator": "Exists"}, {"key": "dedicated", "operator": "Exists"}])
    resolution = resolve(app, [machine_type_model(), dedicated])
    assert resolution.problem == (
        "spec.tolerations[1].key: dedicated is tolerated by machine type TEAM-B-H100; only machine types "
        "may tolerate it")
    spot = spec(tolerations=[{"key": "spot", "operator": "Exists"}])
    assert resolve(spot, [machine_type_model(), dedicated]).problem is None


def test_a_keyless_machine_type_toleration_owns_no_key() -> None:
    everything = machine_type_model("anything", displayName="ANYTHING", tolerations=[{"operator": "Exists"}])
    assert resolve(spec(tolerations=[{"key": "spot"}]), [machine_type_model(), everything]).problem is None


@pytest.mark.parametrize(
    ("key", "reserved"),
    [
        ("node-role.kubernetes.io/control-plane", True),
        ("node.kubernetes.io/not-ready", True),
        ("kubernetes.io/arch", True),
        ("k8s.io/x", True),
        ("sub.k8s.io/x", True),
        ("nvidia.com/gpu", True),
        ("karpenter.sh/disrupted", True),
        (APP_LABEL, True),
        ("app.kubernetes.io/name", False),
        ("sub.app.kubernetes.io/name", True),
        ("notkubernetes.io/x", False),
        ("kubernetes.io.example.com/x", False),
        ("example.com/kubernetes.io", False),
        ("dedicated", False),
        ("ToBeDeletedByClusterAutoscaler", False),
    ],
)
def test_reserved_keys(key: str, reserved: bool) -> None:
    assert is_reserved_key(key) is reserved


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("a", True),
        ("example.com/a_b.c-d", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("/a", False),
        ("a/", False),
        ("a/b/c", False),
        ("A.com/x", False),
        (("a" * 62 + ".") * 4 + "a/x", True),
        (("a" * 62 + ".") * 4 + "aa/x", False),
        ("-a", False),
    ],
)
def test_qualified_names(key: str, valid: bool) -> None:
    assert is_qualified_name(key) is valid


# --- quantities and the arithmetic on them -----------------------------------------------------------


def test_huge_quantities_raise_value_error_only() -> None:
    for fn in (parse_quantity, cpu_millis, memory_bytes):
        with pytest.raises(ValueError):
            fn("1e1000000")
    with pytest.raises(ValueError):
        cpu_millis("9e999999")  # parses, but not in millicores


def test_requests_too_large_for_kubernetes_are_invalid_naming_the_field() -> None:
    huge = machine_type_model(resources={"cpu": "1P", "memory": "1P"}, gpu={"maxGpusPerReplica": 16})
    resolution = resolve(spec(numGpus=16), [huge])
    assert resolution.problem == (
        "spec.numGpus: 16 x the cpu per GPU of GPU-TEST: a replica's cpu request on GPU-TEST is too large "
        "for Kubernetes")
    # an override replaces the per-GPU figure: 1P cpu per replica still fits
    assert resolve(spec(numGpus=16, resources={"cpu": "1P"}), [huge]).problem is None


def test_a_catalogue_quantity_that_slipped_past_validation_is_invalid_spec_not_an_exception() -> None:
    broken = machine_type_model()
    broken.spec.resources.cpu = "1e1000000"  # as an older CRD might have stored it
    resolution = resolve(spec(), [broken])
    assert resolution.problem is not None
    assert resolution.problem.startswith("spec.resources: cannot compute the requests of a replica on GPU-TEST")


# --- names of the children -----------------------------------------------------------------------------


def test_longest_names_make_valid_children() -> None:
    app, machine_type = "a" * APP_NAME_MAX, "b" * 63
    name = deployment_name(app, machine_type)
    assert name.startswith(app) and len(name) - len(app) <= CHILD_SUFFIX_MAX
    assert len(name) <= DEPLOYMENT_NAME_MAX and re.fullmatch(DNS1123_SUBDOMAIN, name)
    assert len(name) + 11 <= 253  # its ReplicaSets: "<deployment>-<hash>"


@pytest.mark.parametrize(
    ("name", "ports", "problem"),
    [
        ("sdxl", True, None),
        ("my.app", False, None),
        ("1app", False, None),
        ("a" * 63, True, None),
        ("a" * 64, False, "metadata.name must be at most 63 characters"),
        ("my.app", True, "metadata.name must be a DNS-1035 label when spec.ports is set"),
        ("1app", True, "metadata.name must be a DNS-1035 label when spec.ports is set"),
    ],
)
def test_app_name_problem(name: str, ports: bool, problem: str | None) -> None:
    app = spec(ports=[{"containerPort": 80}] if ports else [])
    got = app_name_problem(name, app)
    assert (got is None) if problem is None else (got is not None and got.startswith(problem))


def test_plan_refuses_a_name_the_crd_did_not_check() -> None:
    snap = AppSnapshot(ref=AppRef("my.app", "team-a", "u"), generation=1, spec=spec(ports=[{"containerPort": 80}]),
                       status=FalAppStatus(), catalogue=[machine_type_model()], counts={}, surge=None, pods=[],
                       free={}, now=NOW)
    result = plan(snap)
    assert not result.deployments and result.service is None
    assert "metadata.name must be a DNS-1035 label" in result.events[0].message


# --- what the pods get -------------------------------------------------------------------------------


def _template(app: FalAppSpec, type_name: str) -> dict:
    resolution = resolve(app, DEFAULT_CATALOG)
    option = next(o for o in resolution.options if o.display == type_name)
    return pod_template(REF, app, option, resolution.types[option.name])


def test_pods_mount_no_token_unless_asked() -> None:
    assert _template(spec(machineTypes=["GPU-H100"]), "GPU-H100")["spec"]["automountServiceAccountToken"] is False
    asked = spec(machineTypes=["GPU-H100"], automountServiceAccountToken=True)
    assert _template(asked, "GPU-H100")["spec"]["automountServiceAccountToken"] is True


def test_pods_without_gpus_get_none_from_the_gpu_runtime() -> None:
    cpu = _template(spec(machineTypes=["XS"], numGpus=0, envFrom=[{"configMapRef": {"name": "c"}}]), "XS")
    [container] = cpu["spec"]["containers"]
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"} in container["env"]
    gpu = _template(spec(machineTypes=["GPU-L40"], requiresNvenc=True), "GPU-L40")
    [container] = gpu["spec"]["containers"]
    assert [e["name"] for e in container["env"]] == ["NVIDIA_DRIVER_CAPABILITIES"]
