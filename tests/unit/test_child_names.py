"""Child names and ownership: a FalApp writes only children it controls (reconcile/children, writes)."""

from __future__ import annotations

from falapp_operator.api.names import deployment_name
from falapp_operator.reconcile.children import AppRef
from falapp_operator.reconcile.observe import children_state, made_by
from falapp_operator.reconcile.writes import left_waiting, name_conflict
from tests.builders import APP_LABEL, TYPE_LABEL

REF = AppRef("sdxl", "team-a", "uid-sdxl")


def obj(name: str, owner_uid: str | None = None, kind: str = "FalApp", controller: bool = True) -> dict:
    refs = [{"apiVersion": "x", "kind": kind, "name": "owner", "uid": owner_uid, "controller": controller}]
    return {"metadata": {"name": name, "namespace": "team-a", "ownerReferences": refs if owner_uid else []}}


def test_names_of_split_app_and_type_do_not_collide() -> None:
    pairs = [("a", "b-c"), ("a-b", "c"), ("a-b-c", "d"), ("a", "b-c-d"), ("sdxl", "gpu-h100"), ("sdxl-gpu", "h100")]
    assert len({f"{app}-{t}" for app, t in pairs}) < len(pairs)  # joined plainly, they would
    assert len({deployment_name(app, t) for app, t in pairs}) == len(pairs)


def test_deployment_name_is_stable_and_readable() -> None:
    assert deployment_name("sdxl", "gpu-h100") == deployment_name("sdxl", "gpu-h100")
    assert deployment_name("sdxl", "gpu-h100").startswith("sdxl-gpu-h100-")


def test_absent_or_own_child_may_be_written() -> None:
    assert name_conflict("Service", None, REF) is None
    assert name_conflict("Service", obj("sdxl", "uid-sdxl"), REF) is None


def test_someone_elses_service_is_a_conflict_naming_it_and_its_controller() -> None:
    problem = name_conflict("Service", obj("sdxl"), REF)
    assert problem is not None and "Service team-a/sdxl already exists" in problem and "not created by" in problem
    problem = name_conflict("Deployment", obj("sdxl", "uid-other", kind="FalApp"), REF)
    assert problem is not None and "controlled by FalApp owner" in problem


def test_a_non_controller_owner_reference_is_not_ownership() -> None:
    assert name_conflict("Service", obj("sdxl", "uid-sdxl", controller=False), REF) is not None


def test_only_deployments_the_app_controls_count() -> None:
    ours = {**obj("mine", "uid-sdxl"), "spec": {"replicas": 2}}
    ours["metadata"]["labels"] = {TYPE_LABEL: "gpu-h100"}
    impostor = {**obj("fake", "uid-other"), "spec": {"replicas": 5}}
    impostor["metadata"]["labels"] = {TYPE_LABEL: "gpu-a100"}
    assert children_state([ours, impostor], "uid-sdxl").counts == {"gpu-h100": 2}


def labelled_pod(name: str, owner: dict | None, revision: str = "5d8f") -> dict:
    return {"metadata": {"name": name, "labels": {APP_LABEL: "sdxl", "pod-template-hash": revision},
                         "ownerReferences": [owner] if owner else []}}


def test_only_pods_the_apps_replicasets_made_are_its_replicas() -> None:
    deployments = [{"metadata": {"name": "sdxl-gpu-h100-a1b2c3"}}]
    rs = {"kind": "ReplicaSet", "name": "sdxl-gpu-h100-a1b2c3-5d8f", "controller": True}
    ours = labelled_pod("sdxl-gpu-h100-a1b2c3-5d8f-x1", rs)
    decoy = labelled_pod("decoy", None)  # made by hand with the app's labels
    other_rs = labelled_pod("other", {**rs, "name": "someone-else-5d8f"})
    wrong_hash = labelled_pod("stale", rs, revision="9999")
    not_controller = labelled_pod("adopted", {**rs, "controller": False})
    # a hash with a '-' would let a hand-made pod name another Deployment's ReplicaSet, here that of the
    # Deployment "sdxl-gpu-h100-a1b2c3-gpu-a100-abcdef" (its ReplicaSet "...-gpu-a100-abcdef-5d8f") as ours
    forged = labelled_pod("forged", {**rs, "name": "sdxl-gpu-h100-a1b2c3-gpu-a100-abcdef-5d8f"},
                          revision="gpu-a100-abcdef-5d8f")
    assert [p["metadata"]["name"] for p in made_by([ours, decoy, other_rs, wrong_hash, not_controller, forged],
                                                   deployments)] == [ours["metadata"]["name"]]


def waiting_pod(name: str, replicaset: str, node: str | None = None, revision: str = "5d8f") -> dict:
    """A pod of the ReplicaSet `replicaset` (uid `uid-<replicaset>`), bound to `node` or waiting."""
    owner = {"kind": "ReplicaSet", "name": replicaset, "uid": f"uid-{replicaset}", "controller": True}
    pod = labelled_pod(name, owner, revision)
    pod["metadata"]["uid"] = f"uid-{name}"
    pod["spec"] = {"nodeName": node} if node is not None else {}
    return pod


def test_a_deleted_deployments_pods_no_node_runs_are_deleted_with_their_replicasets_first() -> None:
    gone = "sdxl-gpu-h100-a1b2c3"
    pods = [waiting_pod("w1", f"{gone}-5d8f"), waiting_pod("w2", f"{gone}-5d8f"),
            waiting_pod("old", f"{gone}-77aa", revision="77aa"),  # an older rollout's, also waiting
            waiting_pod("running", f"{gone}-5d8f", node="h1"),  # left to the garbage collector: ends gracefully
            waiting_pod("bound-empty", f"{gone}-5d8f", node=""),  # an empty nodeName binds nothing
            waiting_pod("kept", "sdxl-gpu-a100-d4e5f6-5d8f"),  # the next type's: the app's own
            {**labelled_pod("decoy", None), "spec": {}}]  # carries the app's labels, made by hand
    replicasets, deleted = left_waiting(pods, gone)
    assert replicasets == [(f"{gone}-5d8f", f"uid-{gone}-5d8f"), (f"{gone}-77aa", f"uid-{gone}-77aa")]
    assert deleted == [("bound-empty", "uid-bound-empty"), ("old", "uid-old"), ("w1", "uid-w1"), ("w2", "uid-w2")]
    assert left_waiting(pods, "sdxl-gpu-l4-000000") == ([], [])
    assert left_waiting([waiting_pod("running", f"{gone}-5d8f", node="h1")], gone) == ([], []), \
        "a ReplicaSet whose pods all run stays for the garbage collector"
