"""The child objects a FalApp gets (reconcile/children.py): one Deployment per machine type in use and a
Service, as they are sent to the API: names, owner references, labels and selectors, the requests of a
replica (GPUs under the type's resource name), where its pods may land, and the pod security defaults.
(Names that must not collide and ownership: test_child_names.py.)"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from falapp_operator.api import API_VERSION, DEFAULT_CATALOG, FalAppSpec, MachineType
from falapp_operator.placement import Surge
from falapp_operator.placement.snapshot import TypeOption
from falapp_operator.reconcile import children
from falapp_operator.reconcile.children import (
    APP_LABEL,
    HASH_ANNOTATION,
    SURGE_ANNOTATION,
    TEMPLATE_ANNOTATION,
    TYPE_LABEL,
    AppRef,
)
from falapp_operator.reconcile.observe import children_state

REF = AppRef("sdxl", "team-a", "uid-1")
GiB = 2**30
OWNER = {"apiVersion": API_VERSION, "kind": "FalApp", "name": "sdxl", "uid": "uid-1", "controller": True,
         "blockOwnerDeletion": True}


def machine_type(name: str, **spec: Any) -> MachineType:
    body = next(m for m in DEFAULT_CATALOG if m.metadata.name == name).model_dump(by_alias=True, exclude_none=True,
                                                                                    mode="json")
    body["spec"].update(spec)
    return MachineType.model_validate(body)


def app(**fields: Any) -> FalAppSpec:
    return FalAppSpec.model_validate({"image": "img:1", "machineTypes": ["GPU-H100"], "numGpus": 1, **fields})


def option(name: str = "gpu-h100", gpus: int = 1, cpu_milli: int = 12000, memory: int = 112 * GiB) -> TypeOption:
    return TypeOption(name, name.upper(), gpus, cpu_milli, memory)


def build(spec: FalAppSpec, opt: TypeOption, mt: MachineType, replicas: int = 2,
          marks: list[Surge] | None = None) -> dict:
    return children.deployment(REF, opt, children.pod_template(REF, spec, opt, mt), replicas, marks or [])


def container(body: dict) -> dict:
    (only,) = body["spec"]["template"]["spec"]["containers"]
    return only


def env(body: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container(body).get("env", [])}


def test_a_deployment_is_owned_labelled_and_selects_its_own_pods() -> None:
    body = build(app(), option(), machine_type("gpu-h100"), replicas=3)
    meta, spec = body["metadata"], body["spec"]
    assert (body["apiVersion"], body["kind"]) == ("apps/v1", "Deployment")
    assert meta["name"] == children.deployment_name("sdxl", "gpu-h100") and meta["namespace"] == "team-a"
    assert meta["ownerReferences"] == [OWNER]
    labels = {APP_LABEL: "sdxl", TYPE_LABEL: "gpu-h100", "app.kubernetes.io/name": "sdxl",
              "app.kubernetes.io/managed-by": "falapp-operator"}
    assert meta["labels"] == labels and spec["template"]["metadata"]["labels"] == labels
    assert spec["selector"] == {"matchLabels": {APP_LABEL: "sdxl", TYPE_LABEL: "gpu-h100"}}
    assert all(spec["template"]["metadata"]["labels"][k] == v for k, v in spec["selector"]["matchLabels"].items())
    assert spec["replicas"] == 3
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


@pytest.mark.parametrize(("mt", "opt", "requests", "limits", "visible"), [
    (machine_type("gpu-h100"), option(gpus=2, cpu_milli=24000, memory=224 * GiB),
     {"cpu": "24000m", "memory": "224Gi", "nvidia.com/gpu": "2"}, {"memory": "224Gi", "nvidia.com/gpu": "2"}, None),
    # a type whose GPUs are advertised under another resource name
    (machine_type("gpu-h100", gpu={"resourceName": "nvidia.com/mig-3g.40gb", "vram": "40Gi", "maxGpusPerReplica": 7}),
     option(gpus=1),
     {"cpu": "12000m", "memory": "112Gi", "nvidia.com/mig-3g.40gb": "1"},
     {"memory": "112Gi", "nvidia.com/mig-3g.40gb": "1"}, None),
    # a CPU type: no GPU request, and the GPU runtime hands it none whatever the image says
    (machine_type("s"), option("s", gpus=0, cpu_milli=1000, memory=GiB + 512 * 2**20),
     {"cpu": "1000m", "memory": "1536Mi"}, {"memory": "1536Mi"}, "void"),
])
def test_a_replica_requests_what_its_type_gives_it(mt: MachineType, opt: TypeOption, requests: dict,
                                                   limits: dict, visible: str | None) -> None:
    spec = app(machineTypes=["S"], numGpus=0) if not opt.gpus else app()
    body = build(spec, opt, mt)
    assert container(body)["resources"] == {"requests": requests, "limits": limits}
    assert env(body).get("NVIDIA_VISIBLE_DEVICES") == visible


@pytest.mark.parametrize(("size", "quantity"), [
    (2 * 2**40, "2Ti"), (112 * GiB, "112Gi"), (1536 * 2**20, "1536Mi"), (3 * 2**10, "3Ki"), (1000, "1000"), (0, "0"),
])
def test_memory_is_written_in_the_largest_unit_that_divides_it(size: int, quantity: str) -> None:
    assert children.memory_quantity(size) == quantity


def test_pods_land_where_the_type_says_and_tolerate_what_it_and_the_app_tolerate() -> None:
    mt = machine_type("gpu-l40", nodeSelector={"pool": "gpu"}, nvencNodeSelector={"nvenc": "yes"})
    plain = build(app(machineTypes=["GPU-L40"], tolerations=[{"key": "team-a/spot", "operator": "Exists"}]),
                  option("gpu-l40"), mt)
    pod_spec = plain["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"] == {"pool": "gpu"}
    assert pod_spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-L40S", "NVIDIA-L40"]}]}]}
    assert pod_spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                                       {"key": "team-a/spot", "operator": "Exists"}]
    assert "NVIDIA_DRIVER_CAPABILITIES" not in env(plain)
    video = build(app(machineTypes=["GPU-L40"], requiresNvenc=True), option("gpu-l40"), mt)
    assert video["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "gpu", "nvenc": "yes"}
    assert env(video)["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility,video"


def test_a_toleration_the_type_has_is_not_repeated() -> None:
    spec = app(tolerations=[{"key": "team-a/spot", "operator": "Exists"}])
    mt = machine_type("gpu-h100", tolerations=[{"key": "team-a/spot", "operator": "Exists"}])
    assert build(spec, option(), mt)["spec"]["template"]["spec"]["tolerations"] == [
        {"key": "team-a/spot", "operator": "Exists"}]


def test_pods_run_restricted_without_an_api_token_unless_asked() -> None:
    body = build(app(), option(), machine_type("gpu-h100"))
    pod_spec = body["spec"]["template"]["spec"]
    assert pod_spec["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert container(body)["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                                  "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod_spec["automountServiceAccountToken"] is False
    asked = build(app(automountServiceAccountToken=True, serviceAccountName="reader"), option(),
                  machine_type("gpu-h100"))["spec"]["template"]["spec"]
    assert asked["automountServiceAccountToken"] is True and asked["serviceAccountName"] == "reader"


def test_the_apps_pod_labels_cannot_take_the_operators_labels_away() -> None:
    body = build(app(podLabels={"team": "vision"}, podAnnotations={"note": "x"}), option(), machine_type("gpu-h100"))
    meta = body["spec"]["template"]["metadata"]
    assert meta["labels"]["team"] == "vision" and meta["labels"][APP_LABEL] == "sdxl"
    assert meta["annotations"]["note"] == "x" and TEMPLATE_ANNOTATION in meta["annotations"]


@pytest.mark.parametrize(("change", "template_changes", "object_changes"), [
    ({}, False, False),
    ({"image": "img:2"}, True, True),
    ({"env": [{"name": "A", "value": "1"}]}, True, True),
    ({"replicas": 5}, False, False),  # the count is the planner's: not in the pod template
])
def test_hashes_change_exactly_with_what_is_desired(change: dict, template_changes: bool,
                                                    object_changes: bool) -> None:
    before = build(app(), option(), machine_type("gpu-h100"))
    after = build(app(**change), option(), machine_type("gpu-h100"))
    assert (children.template_hash(before["spec"]["template"]) != children.template_hash(
        after["spec"]["template"])) is template_changes
    assert (before["metadata"]["annotations"][HASH_ANNOTATION] != after["metadata"]["annotations"][
        HASH_ANNOTATION]) is object_changes
    resized = build(app(), option(), machine_type("gpu-h100"), replicas=7)
    assert resized["metadata"]["annotations"][HASH_ANNOTATION] != before["metadata"]["annotations"][HASH_ANNOTATION]


def test_the_surge_mark_is_on_the_deployment_it_grows_only() -> None:
    surge = Surge("gpu-h100", "gpu-a100", datetime(2025, 1, 1, tzinfo=UTC))
    grows = build(app(), option(), machine_type("gpu-h100"), marks=[surge])
    other = build(app(machineTypes=["GPU-A100"]), option("gpu-a100"), machine_type("gpu-a100"), marks=[surge])
    assert children.decode_marks("gpu-h100", grows["metadata"]["annotations"][SURGE_ANNOTATION]) == [surge]
    assert other["metadata"]["annotations"][SURGE_ANNOTATION] == ""
    assert build(app(), option(), machine_type("gpu-h100"))["metadata"]["annotations"][SURGE_ANNOTATION] == ""


def test_a_move_and_its_cover_are_marked_each_on_its_deployment_and_read_back_apart() -> None:
    since = datetime(2025, 1, 1, tzinfo=UTC)
    surge, cover = Surge("gpu-h100", "gpu-a100", since), Surge("gpu-l40", "gpu-a100", since, cover=True)
    made = [build(app(machineTypes=["GPU-H100"]), option("gpu-h100"), machine_type("gpu-h100"), marks=[surge, cover]),
            build(app(machineTypes=["GPU-L40"]), option("gpu-l40"), machine_type("gpu-l40"), marks=[surge, cover]),
            build(app(machineTypes=["GPU-A100"]), option("gpu-a100"), machine_type("gpu-a100"), marks=[surge, cover])]
    assert [d["metadata"]["annotations"][SURGE_ANNOTATION] != "" for d in made] == [True, True, False]
    state = children_state(made)
    assert (state.surge, state.cover) == (surge, cover)
    # on one type, both in one mark
    together = replace(cover, to_type="gpu-h100")
    both = build(app(machineTypes=["GPU-H100"]), option("gpu-h100"), machine_type("gpu-h100"), marks=[surge, together])
    state = children_state([both])
    assert (state.surge, state.cover) == (surge, together)


def test_a_resize_of_an_unlisted_type_clears_the_marks_and_keeps_the_template() -> None:
    assert children.resize_patch(2) == {"metadata": {"annotations": {SURGE_ANNOTATION: "", HASH_ANNOTATION: ""}},
                                        "spec": {"replicas": 2}}


@pytest.mark.parametrize(("ports", "want"), [
    ([], None),
    ([{"containerPort": 8080}], [{"name": "port-8080", "port": 8080, "targetPort": 8080, "protocol": "TCP"}]),
    ([{"containerPort": 8080, "name": "http"}, {"containerPort": 9000, "name": "grpc", "protocol": "UDP"}],
     [{"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"},
      {"name": "grpc", "port": 9000, "targetPort": 9000, "protocol": "UDP"}]),
])
def test_the_service_exposes_the_apps_ports_across_its_types(ports: list[dict], want: list[dict] | None) -> None:
    body = children.service(REF, app(ports=ports))
    if want is None:
        assert body is None
        return
    assert body is not None
    assert body["metadata"]["name"] == "sdxl" and body["metadata"]["ownerReferences"] == [OWNER]
    assert body["metadata"]["labels"] == {APP_LABEL: "sdxl", "app.kubernetes.io/managed-by": "falapp-operator"}
    assert body["spec"] == {"selector": {APP_LABEL: "sdxl"}, "ports": want}  # every type's pods, not one's
    assert HASH_ANNOTATION in body["metadata"]["annotations"]


def test_a_template_is_kept_while_the_apps_spec_stays_and_built_again_when_it_changes() -> None:
    cache, h100 = children.TemplateCache(), machine_type("gpu-h100")
    first = cache.template(REF, app(), option(), h100)
    assert first == children.pod_template(REF, app(), option(), h100)
    assert cache.template(REF, app(), option(), h100) is first, "the same spec built twice"
    edited = cache.template(REF, app(image="img:2"), option(), h100)
    assert container({"spec": {"template": edited}})["image"] == "img:2"
    # a spec changed with no new generation (a default the CRD added, read from etcd): built again too
    defaulted = cache.template(REF, app(image="img:2", automountServiceAccountToken=True), option(), h100)
    assert defaulted["spec"]["automountServiceAccountToken"] is True
    # an app deleted and created again under its name has a new uid
    again = cache.template(AppRef(REF.name, REF.namespace, "uid-2"), app(image="img:3"), option(), h100)
    assert container({"spec": {"template": again}})["image"] == "img:3"
    cache.forget(REF.namespace, REF.name)
    assert len(cache) == 0
    cache.template(REF, app(), option(), h100)
    cache.clear()
    assert cache.template(REF, app(), option(cpu_milli=3000), h100) != first, "kept across a catalogue change"


@pytest.mark.parametrize(("value", "want"), [
    ('{"from": "gpu-h100", "since": "2025-01-01T00:00:00Z"}',
     Surge("gpu-a100", "gpu-h100", datetime(2025, 1, 1, tzinfo=UTC))),
    ("1", Surge("gpu-a100")),
    ("0", None),
    ("not json", None),
    ('["gpu-h100"]', None),
    # edits by anyone who may annotate the app's Deployments: read as far as they make sense, never raise
    # (was: a list as origin raised TypeError, year 1 OverflowError, in every reconcile of the app)
    ('{"from": ["gpu-h100"], "since": "2025-01-01T00:00:00Z"}',
     Surge("gpu-a100", None, datetime(2025, 1, 1, tzinfo=UTC))),
    ('{"from": "gpu-h100", "since": "0001-01-01T00:00:00Z"}', Surge("gpu-a100", "gpu-h100")),
    ('{"from": "gpu-h100", "since": "9999-12-31T23:59:59Z"}', Surge("gpu-a100", "gpu-h100")),
    ('{"from": "gpu-h100", "readyAt": "1969-12-31T23:59:59Z"}', Surge("gpu-a100", "gpu-h100")),
])
def test_the_surge_mark_is_read_as_far_as_it_makes_sense(value: str, want: Surge | None) -> None:
    assert children.decode_marks("gpu-a100", value) == ([want] if want else [])
