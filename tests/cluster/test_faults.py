"""Control-plane faults in the middle of a fallback and of a return: the API server and etcd restart
(same data), the operator's watches and requests fail for a while; the app converges with no replica
lost or duplicated. The restart takes the cluster away for a few seconds, and a namespace being deleted
meanwhile may leave its objects behind (see test_api_errors' app left behind)."""

from __future__ import annotations

import asyncio
import subprocess
import time

from kubernetes_asyncio import config

from tests.cluster.builders import falapp
from tests.cluster.helpers import Sampler, app_pods, ready_by_type, wait_condition, wait_placement
from tests.conftest import CLUSTER
from tests.kube import Kubectl, condition, wait_until


def restart_control_plane() -> None:
    subprocess.run([str(CLUSTER), "restart", "etcd", "kube-apiserver"], check=True, capture_output=True)


async def test_a_watch_from_a_version_the_server_no_longer_has_is_410_so_the_controller_lists_again(kubectl):
    """Made certain whatever ran before: etcd compacted past the version (as the API server does every
    5 minutes), and the API server's watch cache begun after it by the restart (on a brand-new etcd a
    fresh cache still holds every event, and a watch from version 1 just runs)."""
    from falapp_operator.k8s.client import ApiError, KubeApi  # imported here: the other tests run it as a process

    await asyncio.to_thread(subprocess.run, [str(CLUSTER), "compact"], check=True, capture_output=True)
    await asyncio.to_thread(restart_control_plane)
    api = KubeApi(await config.new_client_from_config(config_file=str(kubectl.kubeconfig), persist_config=False),
                  "falapp-test")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                async with asyncio.timeout(30):
                    async for _ in api.watch_objects("pods", "1"):
                        pass
            except ApiError as e:
                # a cache still filling after the restart answers 429 (or the connection drops): again
                if e.transient and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                    continue
                assert e.status == 410, e
                break
            raise AssertionError("the watch from version 1 ended without an error")
    finally:
        await api.close()


def ready_count(kctl: Kubectl, app: str) -> int:
    return sum(ready_by_type(kctl, app).values())


def test_api_server_and_etcd_restart_during_a_fallback(kctl, running_operator, pools):
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    # GPUs for both replicas but room for one pod: the view says room, the scheduler says no, so the
    # second replica really goes Unschedulable and must fall back
    pools.add_node("fast", gpus=8, pods=1)
    pools.add_node("slow", gpus=8)
    kctl.apply(falapp("outage", [fast], gpus=4, replicas=1, timeout="3s"))
    wait_placement(kctl, "outage", {fast.lower(): 1})
    kctl.apply(falapp("outage", [fast, slow], gpus=4, replicas=2, timeout="3s"))
    wait_until(lambda: any((c := condition(p, "PodScheduled")) and c.get("reason") == "Unschedulable"
                           for p in app_pods(kctl, "outage")), timeout=30, message="second replica stuck")
    with Sampler(lambda: (ready_count(kctl, "outage"), len(app_pods(kctl, "outage")))) as seen:
        restart_control_plane()  # the fallback's timeout expires while the API is away
        wait_placement(kctl, "outage", {fast.lower(): 1, slow.lower(): 1}, timeout=90)
        wait_condition(kctl, "falapp", "outage", "Ready", timeout=60)
    samples = [s for s in seen.samples if isinstance(s, tuple)]
    assert samples and min(r for r, _ in samples) >= 1, f"the running replica was lost: {samples}"
    # no duplicates: at most the one make-before-break replica beyond the two wanted (fast shows free
    # GPUs, so a return probe may start there and fail, with its back-off)
    assert max(n for _, n in samples) <= 3, f"duplicated replicas: {samples}"


def test_api_server_and_etcd_restart_during_a_return(kctl, running_operator, pools):
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    pools.add_node("slow", gpus=8)
    kctl.apply(falapp("back", [fast, slow], gpus=4, replicas=1, timeout="3s"))
    wait_placement(kctl, "back", {slow.lower(): 1})
    wait_condition(kctl, "falapp", "back", "Ready")
    with Sampler(lambda: ready_count(kctl, "back")) as ready:
        pools.add_node("fast", gpus=8)
        wait_until(lambda: any(p["metadata"]["labels"]["fal.ai/machine-type"] == fast.lower()
                               for p in app_pods(kctl, "back")), timeout=30, message="return probe started")
        restart_control_plane()
        wait_placement(kctl, "back", {fast.lower(): 1}, timeout=90)
        wait_condition(kctl, "falapp", "back", "FallbackActive", "False", timeout=60)
    numbers = [s for s in ready.samples if isinstance(s, int)]
    assert numbers and min(numbers) >= 1, f"Ready dropped to {min(numbers)} during the return"
    assert len(app_pods(kctl, "back")) == 1
