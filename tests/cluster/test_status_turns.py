"""A burst of new apps on the real cluster: their first statuses, which only say the replicas are starting,
take turns in the status line (FALAPP_STATUS_COUNTS_RATE a second), and none waits longer than
FALAPP_STATUS_FIRST_WAIT. Meanwhile each app shows the CRD's default status, observedGeneration 0, which
kstatus reads as InProgress. The operator runs with a slow line, so the line alone would take far longer
than the bound."""

from __future__ import annotations

import time

from tests.cluster.builders import falapp
from tests.cluster.conftest import OperatorProcess
from tests.cluster.helpers import wait_placement
from tests.kube import Kubectl, condition, wait_until

APPS = 60
RATE = 1  # turns a second: the line alone would take APPS seconds
FIRST_WAIT = 5  # seconds


def statuses(kctl: Kubectl) -> dict[str, dict]:
    return {a["metadata"]["name"]: a.get("status") or {} for a in kctl.get("falapps")["items"]}


def test_a_burst_of_new_apps_writes_first_statuses_in_turn_and_within_the_bound(
        kctl: Kubectl, no_session_operator, pools, tmp_path):
    full = pools.machine_type("full")
    pools.add_node("full", gpus=8, pods=0)  # shows free GPUs but takes no pods: replicas stay pending
    # all there before the operator starts: its first listing finds the whole burst at once
    kctl.apply([falapp(f"new-{i}", [full], timeout="10m") for i in range(APPS)])
    operator = OperatorProcess(kctl.kubeconfig, tmp_path, args=["--namespace", kctl.namespace],
                               env={"FALAPP_STATUS_COUNTS_RATE": str(RATE),
                                    "FALAPP_STATUS_FIRST_WAIT": str(FIRST_WAIT)})
    operator.start()
    started = time.monotonic()  # it serves metrics: its watches list what there is next
    try:
        assert operator.sample("falapp_status_counts_rate") == RATE
        first_seen: dict[str, float] = {}  # app -> when its status was first seen written
        defaults: set[str] = set()  # apps seen with the CRD's default status while others had theirs

        def all_written() -> dict[str, dict] | None:
            now, current = time.monotonic() - started, statuses(kctl)
            written = {name: s for name, s in current.items() if s.get("observedGeneration")}
            for name in written:
                first_seen.setdefault(name, now)
            if written:
                defaults.update(name for name, s in current.items() if s == {"observedGeneration": 0})
            return written if len(written) == APPS else None

        written = wait_until(all_written, timeout=APPS / RATE / 2,
                             message=f"{APPS} first statuses, half the time the line alone would take")
        for name, status in written.items():
            ready = condition({"status": status}, "Ready")
            assert ready and (ready["status"], ready["reason"]) == ("False", "ReplicasNotReady"), (name, status)
            assert status["selector"] == f"fal.ai/app={name}", status  # what an HPA aimed at the app reads
        # some took their turn (one a second), the others waited, none longer than the bound (give or take
        # the operator's start and the polls)
        times = sorted(first_seen.values())
        assert times[0] < FIRST_WAIT - 1, f"no first status took its turn before the bound: {times}"
        assert times[-1] - times[0] > 2, f"every first status was written at once: {times}"
        assert times[-1] < FIRST_WAIT + 5, f"first statuses waited past the bound: {times}"
        assert defaults, "no app showed the CRD's default status (kstatus: InProgress) while it waited"
        # at most one write each, and counts-only ones (the scheduler's word on the pods) at the line's rate
        writes = operator.sample("falapp_api_writes_total", write="status")
        assert APPS <= writes <= APPS + RATE * (time.monotonic() - started + 1), writes
    finally:
        operator.stop()


PROGRESS_WINDOW = 30  # seconds a replica's mere progress may wait: far longer than the app takes to start


def test_the_replica_that_makes_an_app_ready_turns_its_condition_however_long_progress_may_wait(
        kctl: Kubectl, no_session_operator, pools, tmp_path):
    """Replicas made, bound and Ready while their app only starts wait FALAPP_PROGRESS_BATCH_WINDOW for its
    pass (counts only); the last one is news: the Ready condition (kubectl wait, Helm --wait) turns at once."""
    fast = pools.machine_type("fast")
    pools.add_node("fast", gpus=8)
    operator = OperatorProcess(kctl.kubeconfig, tmp_path, args=["--namespace", kctl.namespace],
                               env={"FALAPP_PROGRESS_BATCH_WINDOW": str(PROGRESS_WINDOW),
                                    "FALAPP_STATUS_FIRST_WAIT": "0"})  # nothing else looks again meanwhile
    operator.start()
    try:
        pools.operator_sees("fast", 1)
        kctl.apply(falapp("starts", [fast], replicas=3, timeout="10m"))
        wait_placement(kctl, "starts", {pools.types[-1]: 3})
        all_ready = time.monotonic()
        app = wait_until(lambda: (a := kctl.get("falapp", "starts")) and (c := condition(a, "Ready"))
                         and c["status"] == "True" and a, timeout=PROGRESS_WINDOW / 3,
                         message="the app Ready, well within the progress window")
        assert app["status"]["readyReplicas"] == 3, app["status"]
        assert time.monotonic() - all_ready < PROGRESS_WINDOW / 3
    finally:
        operator.stop()
