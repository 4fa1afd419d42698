"""Reconciles read from the operator's watch caches: a settled app is reconciled without a single API
read, and so is a burst of new apps falling back at once (whether a child's name is free is known from
the watch of the namespace's Deployments and Services). Counted by falapp_api_reads_total."""

from __future__ import annotations

import re
from collections import Counter

from tests.cluster.builders import falapp
from tests.cluster.helpers import app_pods, wait_condition, wait_placement
from tests.kube import Kubectl, condition, wait_until

PORTS = [{"name": "http", "containerPort": 8000}]
# a watch started again (the server ends each after 5-10 minutes), a LIST after one expired, the
# periodic resync and the autoscalers' Events listed as a replica starts waiting unschedulable are no
# reads of a reconcile
BACKGROUND = re.compile(
    r"^(watch_.*|list_(machinetypes|nodepools|customresourcedefinitions|namespaces|nodes|pods|events))$")


def reads(operator) -> Counter:
    out: Counter = Counter()
    for line in operator.metrics().splitlines():
        if m := re.match(r'falapp_api_reads_total\{read="([^"]+)"\} ([0-9.e+]+)', line):
            if not BACKGROUND.match(m.group(1)):
                out[m.group(1)] = int(float(m.group(2)))
    return out


def reconciles(operator) -> float:
    m = re.search(r'falapp_reconciles_total\{result="ok"\} ([0-9.e+]+)', operator.metrics())
    return float(m.group(1)) if m else 0.0


def test_a_settled_app_is_reconciled_without_reads(kctl: Kubectl, running_operator, pools):
    gpu = pools.machine_type("calm")
    pools.add_node("calm", gpus=8)
    kctl.apply(falapp("calm", [gpu], gpus=1, ports=PORTS))
    wait_placement(kctl, "calm", {gpu.lower(): 1})
    wait_condition(kctl, "falapp", "calm", "Ready", "True", timeout=60)
    wait_until(lambda: kctl.get("service", "calm"), timeout=30, message="the app's Service")
    before, done = reads(running_operator), reconciles(running_operator)
    # someone else rewrites the status: the operator reconciles the app and puts it right
    kctl.run("patch", "falapp", "calm", "--subresource=status", "--type=merge",
             "-p", '{"status": {"machines": "tampered"}}')
    wait_until(lambda: kctl.get("falapp", "calm")["status"]["machines"] == f"{gpu}x1", timeout=30,
               message="status restored by a reconcile")
    assert reconciles(running_operator) > done
    assert reads(running_operator) - before == Counter(), "a reconcile of a settled app read from the API"


def test_a_burst_of_fallbacks_reads_nothing(kctl: Kubectl, running_operator, pools):
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    pools.add_node("fast", gpus=8, pods=0)  # shows free GPUs but takes no pods: every replica falls back
    pools.add_node("slow", gpus=8)
    apps = [f"burst-{i}" for i in range(6)]
    before = reads(running_operator)
    kctl.apply([falapp(a, [fast, slow], gpus=1, timeout="2s", return_to_preferred=False) for a in apps])
    for app in apps:
        wait_placement(kctl, app, {slow.lower(): 1}, timeout=90)
        wait_condition(kctl, "falapp", app, "FallbackActive", "True", timeout=30)
    assert all(condition(p, "Ready")["status"] == "True" for a in apps for p in app_pods(kctl, a))
    assert reads(running_operator) - before == Counter(), "reconciles read from the API during the burst"
