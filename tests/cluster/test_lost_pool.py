"""A lost pool on the real cluster: every node of the preferred type deleted at once.

The replicas there fall back their unschedulableTimeout after the operator saw the type without nodes,
without waiting for what the rest of the control plane would take its time over: the pod garbage
collector (pods bound to a deleted node stay about 40 s), or the controller manager making
replacements (frozen here with SIGSTOP, as when it is behind on hundreds of them).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from falapp_operator.api import parse_time
from falapp_operator.api.names import GROWN_ANNOTATION
from tests.builders import TYPE_LABEL
from tests.cluster.builders import falapp
from tests.cluster.helpers import app_pods, events_for, wait_placement
from tests.conftest import CLUSTER
from tests.kube import Kubectl, wait_until

TIMEOUT = 3  # the app's unschedulableTimeout, seconds


def deployments(kctl: Kubectl, app: str) -> dict[str, dict]:
    """The app's Deployments by machine type, those being deleted left out."""
    items = kctl.get("deployments", None, "-l", f"fal.ai/app={app}")["items"]
    return {d["metadata"]["labels"][TYPE_LABEL]: d for d in items
            if not d["metadata"].get("deletionTimestamp")}


def asked(kctl: Kubectl, app: str) -> dict[str, int]:
    return {t: d["spec"]["replicas"] for t, d in deployments(kctl, app).items()}


@contextmanager
def frozen_controller_manager() -> Iterator[None]:
    subprocess.run([str(CLUSTER), "pause", "kube-controller-manager"], check=True)
    try:
        yield
    finally:
        subprocess.run([str(CLUSTER), "resume", "kube-controller-manager"], check=True)


def place(kctl: Kubectl, app: str, fast: str, slow: str, replicas: int, timeout: float = TIMEOUT) -> None:
    """The app's replicas Ready on `fast`; its Deployment says when the operator asked for them."""
    kctl.apply(falapp(app, [fast, slow], replicas=replicas, timeout=f"{timeout:g}s"))
    wait_placement(kctl, app, {fast.lower(): replicas})
    grown = deployments(kctl, app)[fast.lower()]["metadata"]["annotations"][GROWN_ANNOTATION]
    assert parse_time(grown) is not None, f"the operator says when it asked for the replicas: {grown!r}"


def lose_pool(pools, fast: str) -> float:
    """Every `fast` node deleted: the time of the deletion."""
    lost = time.time()
    for node in [n for n in pools.nodes if n.startswith(fast.lower())]:
        pools.remove_node(node)
    return lost


@pytest.fixture
def two_pools(pools) -> tuple[str, str]:
    """Types fast and slow (display names), one 8-GPU node each."""
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    pools.add_node("fast", gpus=8)
    pools.add_node("slow", gpus=8)
    return fast, slow


def test_replicas_bound_to_deleted_nodes_fall_back_before_the_pod_garbage_collector_comes(
        kctl, running_operator, pools, two_pools):
    fast, slow = two_pools
    place(kctl, "orphans", fast, slow, replicas=2)
    lost = lose_pool(pools, fast)
    wait_until(lambda: asked(kctl, "orphans") == {slow.lower(): 2}, timeout=30,
               message="both replicas asked for on the next type")
    moved = time.time()
    # (the operator's Deployment deletion may have marked them for deletion: with no kubelet, they stay)
    orphans = [p for p in kctl.get("pods", None, "-l", "fal.ai/app=orphans")["items"]
               if p["metadata"]["labels"][TYPE_LABEL] == fast.lower()]
    assert len(orphans) == 2, "the pods on the deleted node were still there: nothing waited for them to go"
    assert moved - lost >= TIMEOUT - 1, f"moved {moved - lost:.1f}s after the loss: the timeout was not waited out"
    fell = events_for(kctl, "orphans", "FellBack")
    assert fell and "no Ready, schedulable node" in fell[0]["message"], fell
    wait_until(lambda: sum(p["metadata"]["labels"][TYPE_LABEL] == slow.lower() and bool(p["spec"].get("nodeName"))
                           for p in app_pods(kctl, "orphans")) == 2, timeout=30, message="both bound on the next type")


def test_replicas_of_a_lost_pool_move_before_the_controller_manager_replaces_their_pods(
        kctl, running_operator, pools, two_pools):
    fast, slow = two_pools
    place(kctl, "unreplaced", fast, slow, replicas=2)
    with frozen_controller_manager():
        lost = lose_pool(pools, fast)
        # the node and its pods gone at once (as a cloud's node deletion does it), and no replacements
        kctl.run("delete", "pods", "-l", "fal.ai/app=unreplaced", "--grace-period=0", "--force")
        wait_until(lambda: asked(kctl, "unreplaced") == {slow.lower(): 2}, timeout=30,
                   message="both replicas asked for on the next type")
        assert time.time() - lost >= TIMEOUT - 1, "the timeout was not waited out"
        assert app_pods(kctl, "unreplaced") == [], "no pod can have been made with the controller manager frozen"
    wait_placement(kctl, "unreplaced", {slow.lower(): 2}, timeout=60)


def test_a_lost_pools_replacements_are_deleted_by_the_move_not_left_to_the_garbage_collector(
        kctl, running_operator, pools, two_pools):
    """The controller manager replaced the lost replicas on the lost type, where no node can take them.
    The move deletes them with their ReplicaSet, so the scheduler does not try them before the
    replacements on the next type: here with the controller manager (and its garbage collector) frozen
    once they exist, so only the operator can have deleted them."""
    fast, slow = two_pools
    timeout = 8  # the replacements made and the controller manager frozen within it
    place(kctl, "doomed", fast, slow, replicas=2, timeout=timeout)
    lost = lose_pool(pools, fast)
    kctl.run("delete", "pods", "-l", "fal.ai/app=doomed", "--grace-period=0", "--force")

    def waiting_on_fast() -> list[dict]:
        return [p for p in app_pods(kctl, "doomed") if p["metadata"]["labels"][TYPE_LABEL] == fast.lower()
                and not p["spec"].get("nodeName") and not p["metadata"].get("deletionTimestamp")]

    doomed = wait_until(lambda: len(pods := waiting_on_fast()) == 2 and pods, timeout=timeout - 3,
                        message="the controller manager's replacements on the lost type")
    replicasets = kctl.get("replicasets", None, "-l", "fal.ai/app=doomed")["items"]
    with frozen_controller_manager():
        assert asked(kctl, "doomed") == {fast.lower(): 2}, "moved before the controller manager was frozen"
        wait_until(lambda: asked(kctl, "doomed") == {slow.lower(): 2}, timeout=timeout + 15,
                   message="both replicas asked for on the next type")
        assert time.time() - lost >= timeout - 1, "the timeout was not waited out"
        wait_until(lambda: not waiting_on_fast(), timeout=10, message="the replacements on the lost type deleted")
        left = {p["metadata"]["uid"] for p in kctl.get("pods", None, "-l", "fal.ai/app=doomed")["items"]}
        assert not left & {p["metadata"]["uid"] for p in doomed}, "a replacement on the lost type is left"
        sets = {r["metadata"]["uid"] for r in kctl.get("replicasets", None, "-l", "fal.ai/app=doomed")["items"]}
        fast_sets = {r["metadata"]["uid"] for r in replicasets if r["metadata"]["labels"][TYPE_LABEL] == fast.lower()}
        assert fast_sets and not sets & fast_sets, "the lost type's ReplicaSet is left"
    wait_placement(kctl, "doomed", {slow.lower(): 2}, timeout=60)


def test_the_last_node_going_starts_the_wait_of_apps_whose_node_went_earlier(kctl, running_operator, pools):
    """The app's replica is on the node that goes first, while another node of the type is left. When the
    type's last node goes, no pod of the app is on it (the orphan waits for the pod garbage collector),
    yet the app falls back one timeout later, not when the garbage collector comes."""
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    first, other = pools.add_node("fast", gpus=8), pools.add_node("fast", gpus=8)
    pools.add_node("slow", gpus=8)
    place(kctl, "early", fast, slow, replicas=1)
    on = app_pods(kctl, "early")[0]["spec"]["nodeName"]
    last = other if on == first else first
    pools.remove_node(on)
    pools.operator_sees("fast", nodes=1)
    lost = time.time()
    pools.remove_node(last)
    wait_until(lambda: asked(kctl, "early") == {slow.lower(): 1}, timeout=TIMEOUT + 15,
               message="the replica asked for on the next type a timeout after the last node went")
    assert time.time() - lost >= TIMEOUT - 1, "the timeout was not waited out"
    assert [p for p in kctl.get("pods", None, "-l", "fal.ai/app=early")["items"] if p["spec"].get("nodeName") == on], \
        "the orphan was gone already: the pod garbage collector, not the node's deletion, woke the app"
