"""The fallback engine on the real scheduler: overflow, autoscaler signals, no capacity, return, restarts."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

from falapp_operator.api import format_time, parse_time
from falapp_operator.api.names import APP_LABEL, MOVES_ANNOTATION, TYPE_LABEL
from tests.cluster.builders import falapp
from tests.cluster.conftest import settle
from tests.cluster.helpers import app_pods, events_for, ready_by_type, wait_condition, wait_placement
from tests.kube import Kubectl, condition, wait_until


def uids(pods: list[dict]) -> set[str]:
    return {p["metadata"]["uid"] for p in pods}


def test_stuck_replica_overflows_alone_and_running_ones_stay(kctl, kubectl, running_operator, pools):
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    # the fast node has GPUs for two replicas but room for only one pod: the capacity view cannot
    # see that, the scheduler can, so the second replica really goes Unschedulable and must fall back
    node = pools.add_node("fast", gpus=8)
    kubectl.run("patch", "node", node, "--subresource=status", "--type=merge",
                "-p", '{"status":{"allocatable":{"pods":"1"},"capacity":{"pods":"1"}}}')
    pools.add_node("slow", gpus=8)
    kctl.apply(falapp("ovf", [fast, slow], gpus=2, replicas=1))
    first = wait_placement(kctl, "ovf", {fast.lower(): 1})
    kctl.run("scale", "falapp/ovf", "--replicas=2")
    pods = wait_placement(kctl, "ovf", {fast.lower(): 1, slow.lower(): 1}, timeout=60)
    assert uids(first) <= uids(pods), "the running replica was disturbed"
    fell = events_for(kctl, "ovf", "FellBack")
    assert fell and "Too many pods" in fell[0]["message"]
    status = kctl.get("falapp", "ovf")["status"]
    attempt = next(a for a in status["attempts"] if a["outcome"] == "FellBack")
    assert attempt["machineType"] == fast and "Too many pods" in attempt["message"]
    assert status["machines"] == f"{fast}x1,{slow}x1"
    # the move went out with the Deployment it grew, where a restart before the status would read it
    grown = next(d for d in kctl.get("deployments", None, "-l", f"{APP_LABEL}=ovf")["items"]
                 if d["metadata"]["labels"][TYPE_LABEL] == slow.lower())
    recorded = json.loads(grown["metadata"]["annotations"][MOVES_ANNOTATION])["attempts"]
    assert [(a["machineType"], a["outcome"], a["start"]) for a in recorded] == [(fast, "FellBack", attempt["start"])]
    c = condition(kctl.get("falapp", "ovf"), "FallbackActive")
    assert c["status"] == "True" and slow in c["message"]


def test_design_example_three_replicas_of_eight_gpus(kctl, running_operator, pools):
    h100, a100 = pools.machine_type("h100"), pools.machine_type("a100")
    pools.add_node("h100", gpus=8)
    pools.add_node("a100", gpus=8)
    pools.add_node("a100", gpus=8)
    kctl.apply(falapp("big", [h100, a100], gpus=8, replicas=3))
    wait_placement(kctl, "big", {h100.lower(): 1, a100.lower(): 2})
    wait_condition(kctl, "falapp", "big", "Ready")


def test_no_capacity_anywhere_then_room_is_used_within_one_timeout(kctl, running_operator, pools):
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    kctl.apply(falapp("starved", [fast, slow], gpus=4, replicas=1, timeout="3s"))
    ready = wait_condition(kctl, "falapp", "starved", "Ready", "False", "InsufficientCapacity", timeout=30)
    assert fast in ready["message"] or slow in ready["message"]
    warning = wait_until(lambda: events_for(kctl, "starved", "InsufficientCapacity"), timeout=30,
                         message="InsufficientCapacity event")
    assert warning[0]["type"] == "Warning" and "nodes are available" in warning[0]["message"]
    # the replica keeps cycling through its types
    wait_until(lambda: len(events_for(kctl, "starved", "FellBack")) >= 2, timeout=30, message="cycling")
    added = datetime.now(UTC)
    pools.add_node("slow", gpus=8)
    pods = wait_placement(kctl, "starved", {slow.lower(): 1}, timeout=30)
    bound_at = parse_time(condition(pods[0], "PodScheduled")["lastTransitionTime"])
    assert (bound_at - added).total_seconds() <= 3 + 2, "room was not used within one unschedulableTimeout"
    wait_condition(kctl, "falapp", "starved", "Ready")


def post_autoscaler_event(kctl: Kubectl, pod: dict, reason: str) -> None:
    now = format_time(datetime.now(UTC))
    kctl.apply({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{pod['metadata']['name']}.{reason.lower()}"},
        "involvedObject": {"kind": "Pod", "name": pod["metadata"]["name"], "namespace": kctl.namespace,
                           "uid": pod["metadata"]["uid"], "apiVersion": "v1"},
        "reason": reason, "type": "Normal" if reason != "NotTriggerScaleUp" else "Warning",
        "message": f"{reason} (posted by the test as cluster-autoscaler would)",
        "source": {"component": "cluster-autoscaler"}, "firstTimestamp": now, "lastTimestamp": now, "count": 1,
    })


def test_autoscaler_scale_up_holds_fallback_until_not_triggered(kctl, running_operator, pools):
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    pools.add_node("slow", gpus=8)
    # no fast node: the view has no room, so the first replica goes to slow; make fast the only
    # option first, then add slow to the list once the pod is pending on fast
    kctl.apply(falapp("scaler", [fast], gpus=1, replicas=1, timeout="3s", scale_up_timeout="10m"))
    pod = wait_until(lambda: next((p for p in app_pods(kctl, "scaler")
                                   if (c := condition(p, "PodScheduled")) and c["reason"] == "Unschedulable"),
                                  None), timeout=30, message="pending pod")
    post_autoscaler_event(kctl, pod, "TriggeredScaleUp")
    kctl.apply(falapp("scaler", [fast, slow], gpus=1, replicas=1, timeout="3s", scale_up_timeout="10m"))
    # a node is "coming": well past the 3 s timeout the replica still waits on fast
    wait_until(lambda: (datetime.now(UTC) - parse_time(
        condition(pod, "PodScheduled")["lastTransitionTime"])).total_seconds() > 8,
        timeout=20, interval=0.5, message="time to pass the timeout")
    assert [p["metadata"]["uid"] for p in app_pods(kctl, "scaler")] == [pod["metadata"]["uid"]]
    assert not events_for(kctl, "scaler", "FellBack")
    post_autoscaler_event(kctl, pod, "NotTriggerScaleUp")
    wait_placement(kctl, "scaler", {slow.lower(): 1}, timeout=30)


def test_return_to_preferred_is_make_before_break(kctl, running_operator, pools):
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    pools.add_node("slow", gpus=8)
    kctl.apply(falapp("back", [fast, slow], gpus=4, replicas=2, timeout="3s"))
    wait_placement(kctl, "back", {slow.lower(): 2})
    wait_condition(kctl, "falapp", "back", "FallbackActive", "True")

    lowest = [2]
    stop = threading.Event()

    def watch_ready():
        while not stop.is_set():
            lowest[0] = min(lowest[0], sum(ready_by_type(kctl, "back").values()))
            stop.wait(0.2)
    watcher = threading.Thread(target=watch_ready)
    watcher.start()
    try:
        pools.add_node("fast", gpus=8)
        wait_placement(kctl, "back", {fast.lower(): 2}, timeout=90)
    finally:
        stop.set()
        watcher.join()
    assert lowest[0] >= 2, f"ready replicas dropped to {lowest[0]} during the move"
    assert len(events_for(kctl, "back", "ReturnedToPreferred")) >= 2
    wait_condition(kctl, "falapp", "back", "FallbackActive", "False")
    wait_condition(kctl, "falapp", "back", "Ready")


def test_return_disabled_keeps_replicas_where_they_are(kctl, running_operator, pools):
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    pools.add_node("slow", gpus=8)
    kctl.apply(falapp("stay", [fast, slow], gpus=4, replicas=1, return_to_preferred=False))
    before = wait_placement(kctl, "stay", {slow.lower(): 1})
    pools.add_node("fast", gpus=8)
    # the operator must know the node first: to a type without nodes, a new replica is never sent
    pools.operator_sees("fast", nodes=1)
    # new replicas prefer fast, the existing one is not moved
    kctl.run("scale", "falapp/stay", "--replicas=2")
    after = wait_placement(kctl, "stay", {fast.lower(): 1, slow.lower(): 1})
    assert uids(before) <= uids(after)


def test_scale_down_removes_least_preferred_first(kctl, running_operator, pools):
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    pools.add_node("fast", gpus=8)
    pools.add_node("slow", gpus=8)
    kctl.apply(falapp("shrink", [fast, slow], gpus=4, replicas=4, return_to_preferred=False))
    wait_placement(kctl, "shrink", {fast.lower(): 2, slow.lower(): 2})
    kctl.run("scale", "falapp/shrink", "--replicas=2")
    wait_placement(kctl, "shrink", {fast.lower(): 2})


def test_removing_a_type_drains_it_make_before_break(kctl, running_operator, pools):
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    pools.add_node("fast", gpus=8)
    pools.add_node("slow", gpus=8)
    kctl.apply(falapp("edit", [slow, fast], gpus=8, replicas=1))
    wait_placement(kctl, "edit", {slow.lower(): 1})
    kctl.apply(falapp("edit", [fast], gpus=8, replicas=1))
    lowest = wait_placement(kctl, "edit", {fast.lower(): 1}, timeout=60)
    assert lowest
    assert events_for(kctl, "edit", "Drained")


def test_operator_killed_mid_fallback_converges_without_duplicates(kctl, running_operator, pools):
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    pools.add_node("slow", gpus=8)
    pools.add_node("slow", gpus=8)
    kctl.apply(falapp("crash", [fast, slow], gpus=8, replicas=2, timeout="3s"))
    wait_placement(kctl, "crash", {slow.lower(): 2})
    most, fewest_ready = [0], [2]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            pods = app_pods(kctl, "crash")
            most[0] = max(most[0], len(pods))
            fewest_ready[0] = min(fewest_ready[0], sum(ready_by_type(kctl, "crash").values()))
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        for want in ({fast.lower(): 1, slow.lower(): 1}, {fast.lower(): 2}):
            pools.add_node("fast", gpus=8)
            # SIGKILL at arbitrary points of the return: before, during and after the extra replica starts
            for delay in (0.0, 0.3, 0.7):
                time.sleep(delay)
                running_operator.kill()
                running_operator.start()
            wait_placement(kctl, "crash", want, timeout=60)
    finally:
        stop.set()
        sampler.join()
    assert most[0] <= 3, f"{most[0]} pods at once: a restart duplicated replicas"
    assert fewest_ready[0] >= 2, f"ready replicas dropped to {fewest_ready[0]}"
    wait_until(lambda: kctl.get("falapp", "crash")["status"]["readyReplicas"] == 2, timeout=30,
               message="status readyReplicas == 2")
    assert len(app_pods(kctl, "crash")) == 2


def test_machine_type_status_shows_capacity(kctl, kubectl, running_operator, pools):
    fast = pools.machine_type("fast")
    pools.add_node("fast", gpus=8)
    pools.add_node("fast", gpus=8)
    kctl.apply(falapp("cap", [fast], gpus=4, replicas=3))
    wait_placement(kctl, "cap", {fast.lower(): 3})
    want = {"nodes": 2, "allocatableGpus": 16, "freeGpus": 4, "placedReplicas": 3, "pendingReplicas": 0}
    wait_until(lambda: {k: kubectl.get("machinetype", fast.lower()).get("status", {}).get(k) for k in want} == want,
               timeout=30, message=f"MachineType status {want}")
    row = kubectl.run("get", "machinetype", fast.lower()).stdout
    assert "4" in row.splitlines()[1]


def test_metrics_count_fallbacks(kctl, running_operator, pools):
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    pools.add_node("slow", gpus=8)
    pools.operator_sees("slow", nodes=1)  # else the first replica may go to fast and fall back: two fallbacks
    kctl.apply(falapp("metered", [fast, slow], gpus=1, replicas=1, timeout="2s", return_to_preferred=False))
    # no fast node: pending on fast is placed there only if the view says no room anywhere, so the
    # view puts it on slow directly; the replica gauge must show it
    wait_placement(kctl, "metered", {slow.lower(): 1})
    line = f'falapp_replicas{{machine_type="{slow}",namespace="{kctl.namespace}",state="ready"}} 1.0'
    wait_until(lambda: line in running_operator.metrics(), timeout=20, message=line)
    # a real fallback: fast appears but takes no pods, so a new replica there goes Unschedulable
    pools.add_node("fast", gpus=8, pods=0)
    # the operator must know the node first: to a type without nodes, a new replica is never sent
    pools.operator_sees("fast", nodes=1)
    kctl.run("scale", "falapp/metered", "--replicas=2")
    wait_placement(kctl, "metered", {slow.lower(): 2}, timeout=30)
    fell = f'falapp_fallbacks_total{{from_type="{fast}",namespace="{kctl.namespace}",to_type="{slow}"}} 1.0'
    wait_until(lambda: fell in running_operator.metrics(), timeout=20, message=fell)


def test_failed_return_probe_backs_off(kctl, running_operator, pools):
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    pools.add_node("slow", gpus=8)
    kctl.apply(falapp("probe", [fast, slow], gpus=1, replicas=1, timeout="2s"))
    before = wait_placement(kctl, "probe", {slow.lower(): 1})
    # fast shows free GPUs but takes no pods: the return probe goes Unschedulable and must back off
    pools.add_node("fast", gpus=8, pods=0)
    failed = wait_until(lambda: events_for(kctl, "probe", "ReturnProbeFailed"), timeout=30, message="probe failed")
    assert "Too many pods" in failed[0]["message"]
    probes = wait_until(lambda: kctl.get("falapp", "probe")["status"].get("probes"), timeout=10,
                        message="status.probes")
    assert probes[0]["machineType"] == fast and probes[0]["failures"] == 1
    next_attempt = parse_time(probes[0]["nextAttempt"])
    assert 50 <= (next_attempt - datetime.now(UTC)).total_seconds() <= 62
    # the running replica was never touched, and no second probe starts during the back-off
    settle(5)  # longer than the 2 s timeout: a probe that ignored the back-off would have started
    after = wait_placement(kctl, "probe", {slow.lower(): 1})
    assert uids(before) == uids(after)
    assert len(events_for(kctl, "probe", "ReturnProbeStarted")) == 1
