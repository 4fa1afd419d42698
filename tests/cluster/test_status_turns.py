"""A burst of new apps on the real cluster: their first statuses, which only say the replicas are starting,
take turns in the status line (FALAPP_STATUS_COUNTS_RATE a second), and none waits longer than
FALAPP_STATUS_FIRST_WAIT. Meanwhile each app shows the CRD's default status, observedGeneration 0, which
kstatus reads as InProgress. The operator runs with a slow line, so the line alone would take far longer
than the bound."""

from __future__ import annotations

import time

from tests.cluster.builders import falapp
from tests.cluster.conftest import OperatorProcess
from tests.kube import Kubectl, condition, wait_until

APPS = 60
RATE = 1  # turns a second: the line alone would take APPS seconds
FIRST_WAIT = 5  # seconds


def first_statuses(kctl: Kubectl) -> dict[str, dict]:
    """The apps whose status the operator has written (observedGeneration past the CRD's default 0)."""
    return {a["metadata"]["name"]: a["status"] for a in kctl.get("falapps")["items"]
            if (a.get("status") or {}).get("observedGeneration")}


def test_a_burst_of_new_apps_writes_first_statuses_in_turn_and_within_the_bound(
        kctl: Kubectl, no_session_operator, pools, tmp_path):
    operator = OperatorProcess(kctl.kubeconfig, tmp_path, args=["--namespace", kctl.namespace],
                               env={"FALAPP_STATUS_COUNTS_RATE": str(RATE),
                                    "FALAPP_STATUS_FIRST_WAIT": str(FIRST_WAIT)})
    operator.start()
    try:
        full = pools.machine_type("full")
        pools.add_node("full", gpus=8, pods=0)  # shows free GPUs but takes no pods: replicas stay pending
        writes_before = operator.sample("falapp_api_writes_total", write="status")
        started = time.monotonic()
        kctl.apply([falapp(f"new-{i}", [full], timeout="10m") for i in range(APPS)])
        # the first statuses wait in line, and the apps show the CRD's default meanwhile
        wait_until(lambda: operator.sample("falapp_status_writes_waiting") >= APPS / 2, timeout=30,
                   message="first statuses waiting for a turn")
        waiting = [a for a in kctl.get("falapps")["items"] if a.get("status") == {"observedGeneration": 0}]
        assert waiting, "every first status was written at once"
        # the bound: all written well before the line alone could have written them
        def all_written() -> dict[str, dict] | None:
            statuses = first_statuses(kctl)
            return statuses if len(statuses) == APPS else None

        written = wait_until(all_written, timeout=started + APPS / RATE / 2 - time.monotonic(),
                             message=f"{APPS} first statuses, half the time the line alone would take")
        for name, status in written.items():
            ready = condition({"status": status}, "Ready")
            assert ready and (ready["status"], ready["reason"]) == ("False", "ReplicasNotReady"), (name, status)
            assert status["selector"] == f"fal.ai/app={name}", status  # what an HPA aimed at the app reads
        # at most one write each, and counts-only ones (the scheduler's word on the pods) at the line's rate
        writes = operator.sample("falapp_api_writes_total", write="status") - writes_before
        assert APPS <= writes <= APPS + RATE * (time.monotonic() - started + 1), writes
    finally:
        operator.stop()
