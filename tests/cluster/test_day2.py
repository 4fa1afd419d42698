"""Day-2 operations on the real scheduler: rollouts on a full type, scale-down, returns, restarts.

Each test samples what a user would watch (Ready replicas, the Ready condition) during the scenario
and asserts the availability rule, not only the end state.
"""

from __future__ import annotations

import time

from falapp_operator.api.names import deployment_name
from tests.cluster.builders import falapp
from tests.cluster.helpers import Sampler, app_pods, events_for, ready_by_type, wait_condition, wait_placement
from tests.cluster.test_fallback import post_autoscaler_event
from tests.kube import Kubectl, condition, wait_until


def images(kctl: Kubectl, app: str) -> set[str]:
    return {p["spec"]["containers"][0]["image"] for p in app_pods(kctl, app)}


def test_rollout_on_a_full_type_moves_one_replica_and_comes_back(kctl, running_operator, pools):
    """1 replica x 8 GPUs on the only node of its type, then a new image: the rolling update's extra
    pod has no room, so one replica moves to the next type make-before-break, the rollout proceeds,
    and the app returns to its preferred type, all without losing its Ready replica."""
    full, spare = pools.machine_type("full"), pools.machine_type("spare")
    pools.add_node("full", gpus=8)
    pools.add_node("spare", gpus=8)
    kctl.apply(falapp("roll", [full, spare], gpus=8, replicas=1))
    wait_placement(kctl, "roll", {full.lower(): 1})
    wait_condition(kctl, "falapp", "roll", "Ready")
    with Sampler(lambda: sum(ready_by_type(kctl, "roll").values())) as ready:
        kctl.run("patch", "falapp", "roll", "--type=merge", "-p", '{"spec":{"image":"registry.example.com/app:2"}}')
        wait_condition(kctl, "falapp", "roll", "Ready", "False", "RollingOut", timeout=30)
        pods = wait_placement(kctl, "roll", {full.lower(): 1}, timeout=120)
        wait_until(lambda: images(kctl, "roll") == {"registry.example.com/app:2"}, timeout=60,
                   message="every pod on the new image")
        wait_condition(kctl, "falapp", "roll", "Ready", timeout=60)
    numbers = [s for s in ready.samples if isinstance(s, int)]
    assert numbers and min(numbers) >= 1, f"Ready replicas dropped to {min(numbers)}"
    assert pods[0]["spec"]["containers"][0]["image"] == "registry.example.com/app:2"
    fell = events_for(kctl, "roll", "FellBack")
    assert fell and spare in fell[0]["message"], [e["message"] for e in fell]
    assert events_for(kctl, "roll", "ReturnedToPreferred")


def test_a_lost_old_pod_mid_rollout_is_replaced_by_its_own_replicaset(kctl, running_operator, pools):
    """What the simulator's Deployment controller assumes (tests/sim/world.py), on the real one: 2
    replicas on two 1-GPU nodes of the only listed type, a new image with no room, one node lost: the old
    ReplicaSet replaces its pod (pending) and stays at 2, the new one stays at 1; nothing else to do but
    say so (InsufficientCapacity)."""
    only = pools.machine_type("only")
    pools.add_node("only", gpus=1)
    doomed = pools.add_node("only", gpus=1)
    kctl.apply(falapp("lost", [only], gpus=1, replicas=2))
    wait_placement(kctl, "lost", {only.lower(): 2}, timeout=60)
    kctl.run("patch", "falapp", "lost", "--type=merge", "-p", '{"spec":{"image":"registry.example.com/app:2"}}')
    wait_condition(kctl, "falapp", "lost", "Ready", "False", "InsufficientCapacity", timeout=30)
    gone = [p["metadata"]["name"] for p in app_pods(kctl, "lost") if p["spec"].get("nodeName") == doomed]
    pools.remove_node(doomed)
    kctl.run("delete", "pod", *gone, "--force", "--grace-period=0")

    def by_revision() -> list[tuple[bool, bool, bool]] | None:
        pods = app_pods(kctl, "lost")
        if len(pods) != 3:
            return None
        return sorted((p["spec"]["containers"][0]["image"] == "registry.example.com/app:2",
                       bool((c := condition(p, "Ready")) and c["status"] == "True"), bool(p["spec"].get("nodeName")))
                      for p in pods)
    # (new revision?, Ready?, bound?): the old one left, its replacement pending, the new one pending
    want = [(False, False, False), (False, True, True), (True, False, False)]
    wait_until(lambda: by_revision() == want, timeout=60, message=f"pods as {want}")
    sets = {rs["spec"]["template"]["spec"]["containers"][0]["image"]: rs["spec"]["replicas"]
            for rs in kctl.get("replicasets", None, "-l", "fal.ai/app=lost")["items"]}
    assert sets == {"registry.example.com/app:1": 2, "registry.example.com/app:2": 1}, sets


def test_scale_down_keeps_the_ready_replica(kctl, running_operator, pools):
    """1 Ready replica on the fallback type + 1 pending on the preferred one, waiting for a node an
    autoscaler announced: scaling to 1 removes the pending one."""
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    pools.add_node("slow", gpus=8)
    # only the preferred type listed first, so the replica waits there (its type has no node yet)
    kctl.apply(falapp("down", [fast], gpus=1, replicas=1, timeout="3s", scale_up_timeout="10m"))
    pending = wait_until(lambda: next((p for p in app_pods(kctl, "down")
                                       if (c := condition(p, "PodScheduled")) and c.get("reason") == "Unschedulable"),
                                      None), timeout=30, message="pending pod on the preferred type")
    post_autoscaler_event(kctl, pending, "TriggeredScaleUp")
    kctl.apply(falapp("down", [fast, slow], gpus=1, replicas=2, timeout="3s", scale_up_timeout="10m"))
    wait_until(lambda: ready_by_type(kctl, "down") == {slow.lower(): 1}, timeout=30, message="one Ready on slow")
    assert pending["metadata"]["uid"] in {p["metadata"]["uid"] for p in app_pods(kctl, "down")}
    with Sampler(lambda: sum(ready_by_type(kctl, "down").values())) as ready:
        kctl.run("scale", "falapp/down", "--replicas=1")
        wait_placement(kctl, "down", {slow.lower(): 1}, timeout=30)
        wait_condition(kctl, "falapp", "down", "Ready", timeout=30)
    numbers = [s for s in ready.samples if isinstance(s, int)]
    assert min(numbers) == 1, f"the Ready replica was removed (Ready dropped to {min(numbers)})"


def test_ready_stays_true_during_a_make_before_break_return(kctl, running_operator, pools):
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    pools.add_node("slow", gpus=8)
    kctl.apply(falapp("calm", [fast, slow], gpus=4, replicas=1, timeout="3s"))
    wait_placement(kctl, "calm", {slow.lower(): 1})
    wait_condition(kctl, "falapp", "calm", "Ready")
    with Sampler(lambda: condition(kctl.get("falapp", "calm"), "Ready")["status"]) as ready:
        pools.add_node("fast", gpus=8)
        wait_placement(kctl, "calm", {fast.lower(): 1}, timeout=60)
        wait_condition(kctl, "falapp", "calm", "FallbackActive", "False", timeout=30)
    states = [s for s in ready.samples if isinstance(s, str)]
    assert states and set(states) == {"True"}, f"Ready flapped during the return: {states}"
    assert events_for(kctl, "calm", "ReturnedToPreferred")


def test_announced_node_survives_an_operator_restart(kctl, running_operator, pools):
    """The operator restarts while a replica waits for a node an autoscaler announced: it keeps
    waiting (the announcement is read back from the events), it does not fall back at once."""
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    kctl.apply(falapp("wait", [fast], gpus=1, replicas=1, timeout="3s", scale_up_timeout="10m"))
    pod = wait_until(lambda: next((p for p in app_pods(kctl, "wait")
                                   if (c := condition(p, "PodScheduled")) and c.get("reason") == "Unschedulable"),
                                  None), timeout=30, message="pending pod")
    post_autoscaler_event(kctl, pod, "TriggeredScaleUp")
    pools.add_node("slow", gpus=8)
    running_operator.kill()
    kctl.apply(falapp("wait", [fast, slow], gpus=1, replicas=1, timeout="3s", scale_up_timeout="10m"))
    running_operator.start()
    deadline = time.monotonic() + 10  # well past the 3 s timeout
    while time.monotonic() < deadline:
        assert [p["metadata"]["uid"] for p in app_pods(kctl, "wait")] == [pod["metadata"]["uid"]], \
            "the replica fell back although a node was announced"
        time.sleep(0.5)
    assert not events_for(kctl, "wait", "FellBack")


def test_freed_room_is_claimed_by_one_app_at_a_time(kctl, running_operator, pools):
    """Three apps wait on their fallback type; room for one appears on the preferred type: one app
    returns, the others do not start probes that can only fail (and then back off for long)."""
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    for _ in range(3):
        pools.add_node("slow", gpus=8)
    apps = ["herd-a", "herd-b", "herd-c"]
    for app in apps:
        kctl.apply(falapp(app, [fast, slow], gpus=8, replicas=1, timeout="3s"))
    for app in apps:
        wait_placement(kctl, app, {slow.lower(): 1}, timeout=60)
    pools.add_node("fast", gpus=8)
    wait_until(lambda: sum(ready_by_type(kctl, a).get(fast.lower(), 0) for a in apps) == 1, timeout=60,
               message="one app back on the preferred type")
    time.sleep(8)  # several timeouts: would any other app start (and fail) a probe meanwhile?
    started = {a: len(events_for(kctl, a, "ReturnProbeStarted")) for a in apps}
    failed = {a: len(events_for(kctl, a, "ReturnProbeFailed")) for a in apps}
    assert sum(started.values()) == 1, started
    assert sum(failed.values()) == 0, failed


def test_no_room_anywhere_tries_each_type_once_then_waits(kctl, running_operator, pools):
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    kctl.apply(falapp("nowhere", [fast, slow], gpus=1, replicas=1, timeout="2s"))
    ready = wait_condition(kctl, "falapp", "nowhere", "Ready", "False", "InsufficientCapacity", timeout=30)
    wait_until(lambda: len(events_for(kctl, "nowhere", "FellBack")) >= 2, timeout=30, message="one round")
    time.sleep(8)  # four more timeouts
    assert len(events_for(kctl, "nowhere", "FellBack")) == 2, "the replica kept cycling"
    pods = app_pods(kctl, "nowhere")
    assert [p["metadata"]["labels"]["fal.ai/machine-type"] for p in pods] == [fast.lower()], \
        "it waits on the preferred type, where an autoscaler is asked first"
    ready = condition(kctl.get("falapp", "nowhere"), "Ready")
    assert fast in ready["message"] and slow in ready["message"], ready
    # room appears on the second type: the replica goes there at once
    pools.add_node("slow", gpus=8)
    wait_placement(kctl, "nowhere", {slow.lower(): 1}, timeout=20)


def api_writes(operator, write: str = "apply") -> float:
    return sum(float(line.split()[-1]) for line in operator.metrics().splitlines()
               if line.startswith(f'falapp_api_writes_total{{write="{write}"}}'))


def quiet_writes(operator) -> float:
    """The operator's count of applies once it stops moving (other tests' apps may be applied too)."""
    last = [api_writes(operator)]

    def still() -> float | None:
        time.sleep(1.5)
        now = api_writes(operator)
        same, last[0] = now == last[0], now
        return now if same else None
    return wait_until(still, timeout=60, interval=0, message="the operator idle")


def test_rollout_restart_by_hand_is_left_alone(kctl, running_operator, pools):
    """`kubectl rollout restart` on a child adds a field the operator does not set: the restart runs
    its course and the operator does not re-apply the child on every reconcile."""
    gpu = pools.machine_type("rr")
    pools.add_node("rr", gpus=8)
    kctl.apply(falapp("restart", [gpu], gpus=1, replicas=1))
    first = wait_placement(kctl, "restart", {gpu.lower(): 1})
    child = f"deployment/{deployment_name('restart', gpu.lower())}"
    kctl.run("rollout", "restart", child)
    kctl.run("rollout", "status", child, "--timeout=60s", timeout=90)
    pods = wait_placement(kctl, "restart", {gpu.lower(): 1}, timeout=30)
    assert pods[0]["metadata"]["uid"] != first[0]["metadata"]["uid"], "the restart did not happen"
    wait_condition(kctl, "falapp", "restart", "Ready")
    before = quiet_writes(running_operator)
    kctl.run("annotate", "falapp", "restart", "poke=1")  # a reconcile, as any watch event would cause
    kctl.run("scale", "falapp/restart", "--replicas=1")
    time.sleep(3)
    assert api_writes(running_operator) == before, "the operator keeps re-applying the restarted child"
    template = kctl.get(*child.split("/"))["spec"]["template"]["metadata"]["annotations"]
    assert "kubectl.kubernetes.io/restartedAt" in template
    # a field the operator does not set, added by hand: at most one apply, then no write loop
    kctl.run("set", "env", child, "FOO=bar")
    kctl.run("rollout", "status", child, "--timeout=60s", timeout=90)
    kctl.run("annotate", "--overwrite", "falapp", "restart", "poke=2")
    time.sleep(2)
    settled = quiet_writes(running_operator)
    kctl.run("annotate", "--overwrite", "falapp", "restart", "poke=3")
    time.sleep(2)
    assert api_writes(running_operator) == settled, "the operator re-applies the child on every reconcile"
