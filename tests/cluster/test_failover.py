"""High availability and namespace mode on the local cluster.

Two operator processes with leader election (distinct identities, a Lease in the test's namespace): one
holds the Lease and is the only one that writes (falapp_api_writes_total stays 0 on the other). The
leader is SIGKILLed; the other takes over within the lease duration (+ its retry period and the API's
answer), then places a new FalApp and moves a replica to its fallback type, with nothing duplicated.
A clean stop hands the Lease over at once; a leader whose Lease was taken stops writing and exits.

In `--namespace` mode the operator still sees every pod of the cluster: a pod created later in another
namespace takes a node's GPUs, and the operator's view (MachineType status, placement) accounts for it.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from falapp_operator.api import format_micro_time
from falapp_operator.k8s.client import ApiError
from tests.builders import POOL_LABEL
from tests.cluster.builders import PrivatePools, falapp
from tests.cluster.conftest import OperatorProcess
from tests.cluster.helpers import Sampler, app_pods, events_for, wait_condition, wait_placement
from tests.conftest import CLUSTER
from tests.kube import Kubectl, condition, wait_until

LEASE = "falapp-operator"
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 15, 10, 2  # the operator's defaults


class Candidate(OperatorProcess):
    """`falapp-operator run --leader-elect` with its own identity, Lease namespace and log."""

    def __init__(self, kubeconfig: Path, log_dir: Path, identity: str, namespace: str, args: list[str] = ()):
        super().__init__(kubeconfig, log_dir, args, env={"FALAPP_LEADER_ELECTION_NAMESPACE": namespace,
                                                          "FALAPP_LEADER_ELECTION_IDENTITY": identity})
        self.log_path = log_dir / f"operator-{identity}.log"
        self.identity, self.namespace = identity, namespace

    def writes(self) -> float:
        return self.sample("falapp_api_writes_total")

    def leading(self) -> bool:
        return self.sample("falapp_leader") == 1


def holder(kctl: Kubectl) -> str | None:
    got = kctl.run("get", "lease", LEASE, "-o", "jsonpath={.spec.holderIdentity}", check=False)
    return got.stdout.strip() if got.returncode == 0 else None


@pytest.fixture
def candidates(kubectl: Kubectl, namespace: str, crds, no_session_operator, tmp_path: Path):
    started: list[Candidate] = []

    def start(identity: str, args: list[str] = ("--leader-elect",)) -> Candidate:
        candidate = Candidate(kubectl.kubeconfig, tmp_path, identity, namespace, list(args))
        candidate.start()
        started.append(candidate)
        return candidate
    yield start
    for candidate in started:
        candidate.stop()


def deployments_by_app(kctl: Kubectl) -> Counter:
    return Counter(d["metadata"]["labels"]["fal.ai/app"] for d in kctl.get("deployments", None, "-l", "fal.ai/app")[
        "items"])


def test_leader_killed_the_other_takes_over_with_nothing_duplicated(kctl: Kubectl, pools: PrivatePools, candidates):
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    # GPUs for three replicas but room for two pods: the view says room, the scheduler says no, so a
    # third replica really goes Unschedulable there and must fall back
    pools.add_node("fast", gpus=16, pods=2)
    pools.add_node("slow", gpus=8)
    a, b = candidates("op-a"), candidates("op-b")
    leader_name = wait_until(lambda: holder(kctl) in ("op-a", "op-b") and holder(kctl), timeout=30,
                             message="a leader")
    leader, follower = (a, b) if leader_name == "op-a" else (b, a)
    wait_until(leader.leading, timeout=10, message="leader's falapp_leader gauge")
    assert not follower.leading()

    kctl.apply(falapp("first", [fast, slow], gpus=4, replicas=2, timeout="8s"))
    wait_placement(kctl, "first", {fast.lower(): 2})
    wait_condition(kctl, "falapp", "first", "Ready")
    # only the leader wrote: Deployments, Service, status, MachineType status, events
    assert leader.writes() > 0
    assert follower.writes() == 0, follower.metrics()

    def sample() -> tuple[Counter, Counter]:
        pods = Counter(p["metadata"]["labels"]["fal.ai/app"]
                       for p in app_pods(kctl, "first") + app_pods(kctl, "second"))
        return pods, deployments_by_app(kctl)

    with Sampler(sample) as seen:
        # the leader starts a third replica on the preferred type; it is stuck there when the leader dies
        kctl.apply(falapp("first", [fast, slow], gpus=4, replicas=3, timeout="8s"))
        wait_until(lambda: any((c := condition(p, "PodScheduled")) and c.get("reason") == "Unschedulable"
                               for p in app_pods(kctl, "first")), timeout=30, message="third replica stuck")
        killed = time.monotonic()
        leader.kill()
        kctl.apply(falapp("second", [slow], gpus=2, replicas=1))  # while nobody leads
        took = wait_until(lambda: holder(kctl) == follower.identity and time.monotonic() - killed,
                          timeout=LEASE_DURATION + 3 * RETRY_PERIOD + 10, interval=0.1, message="takeover")
        print(f"takeover: the Lease changed holder {took:.1f}s after the leader was killed "
              f"(lease {LEASE_DURATION}s, retry {RETRY_PERIOD}s)")
        wait_until(follower.leading, timeout=5, message="new leader's falapp_leader gauge")
        wait_placement(kctl, "second", {slow.lower(): 1}, timeout=60)
        placed = time.monotonic() - killed
        wait_placement(kctl, "first", {fast.lower(): 2, slow.lower(): 1}, timeout=60)
        wait_condition(kctl, "falapp", "first", "Ready")
        print(f"after the kill: new app placed at {placed:.1f}s, fallback done at {time.monotonic() - killed:.1f}s")
    # a candidate waits a full lease duration from when it last saw the Lease renewed (polled every
    # retry period), and the leader last renewed up to a retry period before it died
    assert LEASE_DURATION - RETRY_PERIOD <= took <= LEASE_DURATION + 2 * RETRY_PERIOD + 2, took
    lease = kctl.get("lease", LEASE)["spec"]
    assert lease["leaseTransitions"] == 1 and lease["leaseDurationSeconds"] == LEASE_DURATION

    samples = [s for s in seen.samples if isinstance(s, tuple)]
    assert samples
    # no double surge: never more pods than wanted plus the one being moved; one Deployment per type
    assert max(s[0]["first"] for s in samples) <= 4, samples
    assert max(s[0]["second"] for s in samples) <= 1, samples
    assert max(s[1]["first"] for s in samples) <= 2 and max(s[1]["second"] for s in samples) <= 1, samples
    deployments = kctl.get("deployments", None, "-l", "fal.ai/app=first")["items"]
    assert sorted(d["spec"]["replicas"] for d in deployments) == [1, 2]
    # the move announced once, by the new leader
    fell = events_for(kctl, "first", "FellBack")
    assert len(fell) == 1 and fell[0].get("count", 1) == 1, fell
    assert follower.writes() > 0


def test_a_stopping_leader_hands_the_lease_over_at_once(kctl: Kubectl, pools: PrivatePools, candidates):
    room = pools.machine_type("room")
    pools.add_node("room", gpus=8)
    a = candidates("op-a")
    wait_until(lambda: holder(kctl) == "op-a", timeout=30, message="op-a leads")
    b = candidates("op-b")
    stopped = time.monotonic()
    a.stop()  # SIGTERM: stop writing, then release the Lease
    assert a.proc.returncode == 0
    took = wait_until(lambda: holder(kctl) == "op-b" and time.monotonic() - stopped, timeout=LEASE_DURATION,
                      interval=0.1, message="handover")
    print(f"handover after a clean stop: {took:.1f}s")
    assert took < 2 * RETRY_PERIOD + 3, took  # not a lease duration: it was released
    kctl.apply(falapp("handed", [room], gpus=1, replicas=1))
    wait_placement(kctl, "handed", {room.lower(): 1})
    assert b.writes() > 0


def test_a_leader_whose_lease_is_taken_stops_writing_and_exits(kctl: Kubectl, pools: PrivatePools, candidates):
    room = pools.machine_type("room")
    pools.add_node("room", gpus=8)
    a = candidates("op-a")
    wait_until(lambda: holder(kctl) == "op-a", timeout=30, message="op-a leads")
    kctl.apply(falapp("kept", [room], gpus=1, replicas=1))
    wait_placement(kctl, "kept", {room.lower(): 1})
    now = format_micro_time(datetime.now(UTC))
    taken = time.monotonic()
    kctl.run("patch", "lease", LEASE, "--type=merge",
             "-p", f'{{"spec":{{"holderIdentity":"someone-else","renewTime":"{now}"}}}}')
    wait_until(lambda: a.proc.poll() is not None, timeout=RETRY_PERIOD + 10, message="op-a exits")
    print(f"leader exited {time.monotonic() - taken:.1f}s after its Lease was taken")
    assert a.proc.returncode == 1
    assert "no longer the leader" in a.log()
    assert holder(kctl) == "someone-else"  # it did not write the Lease back either


def test_namespace_mode_counts_pods_of_other_namespaces(kubectl: Kubectl, kctl: Kubectl, namespace: str,
                                                        pools: PrivatePools, candidates):
    one, two = pools.machine_type("one"), pools.machine_type("two")
    node = pools.add_node("one", gpus=8)
    pools.add_node("two", gpus=8)
    candidates("scoped", ["--namespace", namespace])
    free = lambda: (kubectl.get("machinetype", one.lower()).get("status") or {}).get("freeGpus")  # noqa: E731
    wait_until(lambda: free() == 8, timeout=30, message=f"{one} shows 8 free GPUs")

    # another team's pod, in a namespace the operator does not watch, created after it started
    other = f"{namespace}-other"
    kubectl.run("create", "namespace", other)
    try:
        kubectl.in_namespace(other).apply({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "squatter"},
            "spec": {"nodeSelector": {POOL_LABEL: one.lower()},
                     "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                     "containers": [{"name": "c", "image": "registry.example.com/other:1",
                                     "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}})
        wait_until(lambda: kubectl.in_namespace(other).get("pod", "squatter")["spec"].get("nodeName") == node,
                   timeout=30, message="squatter bound")
        wait_until(lambda: free() == 0, timeout=30, message=f"{one} shows the squatter's GPUs taken")
        # placed straight on the type with room: no replica tried where the squatter sits (with a
        # 10 minute unschedulable timeout, a wrong try would be stuck there)
        kctl.apply(falapp("scoped", [one, two], gpus=4, replicas=1, timeout="10m", return_to_preferred=False))
        wait_placement(kctl, "scoped", {two.lower(): 1}, timeout=30)
        assert {d["metadata"]["labels"].get("fal.ai/machine-type") for d in kctl.get(
            "deployments", None, "-l", "fal.ai/app=scoped")["items"] if d["spec"]["replicas"]} == {two.lower()}
        # and when it goes, the room is seen again
        kubectl.in_namespace(other).run("delete", "pod", "squatter", "--grace-period=0", "--force")
        wait_until(lambda: free() == 8, timeout=30, message=f"{one} shows its GPUs free again")
    finally:
        kubectl.run("delete", "namespace", other, "--wait=false", check=False)


def api_server_pid() -> int:
    status = subprocess.run([str(CLUSTER), "status"], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"kube-apiserver: running \(pid (\d+)\)", status).group(1))


def test_a_leader_cut_off_from_the_api_stops_before_anyone_may_take_over(kctl: Kubectl, pools: PrivatePools,
                                                                           candidates):
    """The API server stops answering (frozen: requests hang, as in a partition). The leader cannot
    renew; it must stop (exit) within the renew deadline, before the lease duration lets another take over."""
    room = pools.machine_type("room")
    pools.add_node("room", gpus=8)
    a = candidates("op-a")
    wait_until(lambda: holder(kctl) == "op-a", timeout=30, message="op-a leads")
    candidates("op-b")
    pid = api_server_pid()
    frozen = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: a.proc.poll() is not None, timeout=RENEW_DEADLINE + RETRY_PERIOD + 5,
                   message="op-a exits")
        stopped = time.monotonic() - frozen
    finally:
        os.kill(pid, signal.SIGCONT)
    print(f"leader cut off from the API exited {stopped:.1f}s after the freeze")
    assert a.proc.returncode == 1 and "no longer the leader" in a.log()
    assert stopped < LEASE_DURATION, stopped
    wait_until(lambda: holder(kctl) == "op-b", timeout=LEASE_DURATION + 3 * RETRY_PERIOD + 10, message="op-b leads")
    kctl.apply(falapp("after", [room], gpus=1, replicas=1))
    wait_placement(kctl, "after", {room.lower(): 1}, timeout=60)


async def test_pod_list_is_paged_and_the_watch_continues_from_it(kubectl: Kubectl, kctl: Kubectl, namespace: str):
    """The operator's own pod LIST (pages of `limit` with `continue`) and watch, against the API server
    (a watch from a version the server no longer has: test_faults.py)."""
    from kubernetes_asyncio import config

    from falapp_operator.k8s.client import KubeApi  # imported here: the other tests run it as a process

    for i in range(5):
        kctl.run("run", f"p{i}", "--image=registry.example.com/x:1", "--restart=Never")
    api = KubeApi(await config.new_client_from_config(config_file=str(kubectl.kubeconfig), persist_config=False),
                 "falapp-test")
    try:
        pages: list[int] = []
        original = api._call

        async def counting(what, call, *args, **kwargs):
            pages.append(kwargs.get("limit"))
            return await original(what, call, *args, **kwargs)
        api._call = counting
        seen: list[dict] = []
        version = await api.list_objects("pods", seen.append, page_size=2)
        every = {p["metadata"]["uid"] for p in kubectl.get("pods", None, "--all-namespaces")["items"]}
        assert {p["metadata"]["uid"] for p in seen} >= {p["metadata"]["uid"] for p in kctl.get("pods")["items"]}
        assert len(seen) == len({p["metadata"]["uid"] for p in seen}) and len(seen) >= len(every) - 2
        assert len(pages) >= 3 and set(pages) == {2}, pages  # at least 5 pods, 2 a page
        assert version

        kctl.run("run", "later", "--image=registry.example.com/x:1", "--restart=Never")
        async with asyncio.timeout(30):
            async for kind, body in api.watch_objects("pods", version, server_timeout=30):
                if kind == "ADDED" and body["metadata"]["name"] == "later":
                    assert body["metadata"]["namespace"] == namespace
                    break
    finally:
        await api.close()


async def cluster_sh(*args: str) -> None:
    """hack/cluster.sh with these arguments, without blocking the event loop."""
    process = await asyncio.create_subprocess_exec(str(CLUSTER), *args)
    assert await process.wait() == 0, f"hack/cluster.sh {' '.join(args)} failed"


async def test_a_request_to_an_api_server_gone_silent_fails_after_the_limit_and_the_next_goes_through(
        kubectl: Kubectl, kctl: Kubectl, namespace: str):
    """The API server frozen (SIGSTOP: its connections stay open, nothing answers): the operator's request
    ends after its limit as a transient error saying so, instead of waiting for good; once the server goes
    on, the next request is answered."""
    from kubernetes_asyncio import config

    from falapp_operator.k8s.client import KubeApi  # imported here: the other tests run it as a process

    api = KubeApi(await config.new_client_from_config(config_file=str(kubectl.kubeconfig), persist_config=False),
                  "falapp-test", request_timeout=2)
    try:
        assert await api.get_falapp(namespace, "absent") is None  # a connection is open
        await cluster_sh("pause", "kube-apiserver")
        try:
            started = time.monotonic()
            with pytest.raises(ApiError) as silent:
                await asyncio.wait_for(api.get_falapp(namespace, "absent"), 60)
            waited = time.monotonic() - started
        finally:
            await cluster_sh("resume", "kube-apiserver")
        assert silent.value.transient and "no answer within 2s" in str(silent.value), silent.value
        assert 1.5 <= waited < 30, f"gave up after {waited:.1f}s"
        assert await api.get_falapp(namespace, "absent") is None, "answered once the server goes on"
    finally:
        await api.close()


async def test_an_events_watch_holds_a_kept_alive_tls_connection_and_delivers_its_reason(
        kubectl: Kubectl, kctl: Kubectl, namespace: str, monkeypatch: pytest.MonkeyPatch):
    """Events get no bookmarks, so their watches have no silence limit and rely on TCP keepalive to find a
    dead peer: against the real API server (TLS), the keepalive lands on the watch's socket, and an Event
    of the watched reason comes through the watch."""
    import socket

    from kubernetes_asyncio import config

    from falapp_operator.k8s import client as client_module
    from falapp_operator.k8s.client import KubeApi

    kept_alive: list[tuple[int, int]] = []
    real_keep_alive = client_module._keep_alive

    def keep_alive(response) -> None:
        real_keep_alive(response)
        sock = response.connection.transport.get_extra_info("socket")
        kept_alive.append((sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                           sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)))
    monkeypatch.setattr(client_module, "_keep_alive", keep_alive)
    api = KubeApi(await config.new_client_from_config(config_file=str(kubectl.kubeconfig), persist_config=False),
                  "falapp-test")
    try:
        selector = "reason=FalappWatchProbe"
        version = await api.list_objects("events", lambda _: None, namespace, field_selector=selector)
        async with asyncio.timeout(30):
            watch = api.watch_objects("events", version, namespace, field_selector=selector, silence=None)
            posted = asyncio.create_task(api.post_event(
                {"kind": "Pod", "name": "probe", "namespace": namespace, "uid": "probe-uid"}, "Normal",
                "FalappWatchProbe", "a scale-up signal's stand-in"))
            async for kind, body in watch:
                if kind == "ADDED":
                    assert body["reason"] == "FalappWatchProbe"
                    break
            await posted
        assert kept_alive == [(1, client_module.KEEPALIVE_IDLE)]
    finally:
        await api.close()
