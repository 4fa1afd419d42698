"""MachineType entitlements: `spec.namespaceSelector` says which namespaces may use a type; the operator
follows the namespace's labels as they change."""

from __future__ import annotations

import json

from tests.cluster.builders import falapp
from tests.cluster.helpers import wait_condition, wait_placement
from tests.kube import Kubectl


def test_a_type_follows_the_namespaces_labels(kubectl: Kubectl, kctl: Kubectl, namespace: str, running_operator,
                                              pools):
    gpu = pools.machine_type("ent")
    pools.add_node("ent", gpus=8)
    selector = {"spec": {"namespaceSelector": {"matchLabels": {"gpu-tier": "premium"}}}}
    kubectl.run("patch", "machinetype", gpu.lower(), "--type=merge", "-p", json.dumps(selector))
    kubectl.run("label", "namespace", namespace, "gpu-tier=premium")
    kctl.apply(falapp("vision", [gpu], gpus=1))
    wait_placement(kctl, "vision", {gpu.lower(): 1}, timeout=60)
    wait_condition(kctl, "falapp", "vision", "Ready", "True", timeout=60)
    # the admin takes the entitlement away: the app says why, naming the type
    kubectl.run("label", "--overwrite", "namespace", namespace, "gpu-tier=basic")
    stalled = wait_condition(kctl, "falapp", "vision", "Stalled", "True", "InvalidSpec", timeout=30)
    assert gpu in stalled["message"] and namespace in stalled["message"], stalled
    # and gives it back: placed again, no longer stalled
    kubectl.run("label", "--overwrite", "namespace", namespace, "gpu-tier=premium")
    wait_condition(kctl, "falapp", "vision", "Stalled", "False", timeout=30)
    wait_condition(kctl, "falapp", "vision", "Ready", "True", timeout=60)
