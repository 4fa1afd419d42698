"""A FalApp never takes over an object it does not control: a child is written only when absent or
controlled by that FalApp; otherwise the app is Stalled (NameConflict) and nothing is written."""

from __future__ import annotations

from falapp_operator.api.names import deployment_name
from tests.cluster.builders import falapp
from tests.cluster.conftest import settle
from tests.cluster.helpers import app_pods, events_for, wait_condition, wait_placement
from tests.kube import Kubectl, condition, wait_until

PORTS = [{"name": "http", "containerPort": 8000}]


def victim_service(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": {"team": "payments"}},
            "spec": {"selector": {"app": "payments"}, "ports": [{"name": "web", "port": 80, "targetPort": 8080}]}}


def warning(kctl: Kubectl, app: str, text: str) -> dict:
    return wait_until(lambda: next((e for e in events_for(kctl, app, "NameConflict")
                                    if e["type"] == "Warning" and text in e["message"]), None),
                      timeout=30, message=f"Warning NameConflict about {text!r}")


def test_service_of_the_same_name_is_not_taken_over(kctl: Kubectl, namespace: str, running_operator, pools):
    gpu = pools.machine_type("nc")
    pools.add_node("nc", gpus=8)
    kctl.apply(victim_service("payments"))
    before = kctl.get("service", "payments")
    kctl.apply(falapp("payments", [gpu], gpus=1, ports=PORTS))
    stalled = wait_condition(kctl, "falapp", "payments", "Stalled", "True", "NameConflict", timeout=30)
    assert f"Service {namespace}/payments already exists" in stalled["message"], stalled
    assert condition(kctl.get("falapp", "payments"), "Ready")["status"] == "False"
    warning(kctl, "payments", f"Service {namespace}/payments")
    after = kctl.get("service", "payments")
    assert after["spec"]["selector"] == {"app": "payments"}, "the victim's selector was rewritten"
    assert not after["metadata"].get("ownerReferences"), "the victim got an owner: deleting the app would delete it"
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert kctl.get("deployments")["items"] == [], "nothing may be written while a child's name is taken"
    # the owner of the name removes it: the app comes up on its own
    kctl.run("delete", "service", "payments")
    wait_placement(kctl, "payments", {gpu.lower(): 1}, timeout=60)
    wait_condition(kctl, "falapp", "payments", "Ready", "True", timeout=60)
    owners = kctl.get("service", "payments")["metadata"]["ownerReferences"]
    assert [o["kind"] for o in owners] == ["FalApp"]


def test_deployment_of_the_same_name_is_not_taken_over(kctl: Kubectl, namespace: str, running_operator, pools):
    """A Deployment made by someone else under the name the app's child would get (and even with the
    app's labels) is neither counted nor written."""
    gpu = pools.machine_type("nd")
    pools.add_node("nd", gpus=8)
    name = deployment_name("squatter", gpu.lower())
    kctl.apply({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "labels": {"fal.ai/app": "squatter", "fal.ai/machine-type": gpu.lower()}},
                "spec": {"replicas": 0, "selector": {"matchLabels": {"x": "squatter"}},
                         "template": {"metadata": {"labels": {"x": "squatter"}},
                                      "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    kctl.apply(falapp("squatter", [gpu], gpus=1))
    stalled = wait_condition(kctl, "falapp", "squatter", "Stalled", "True", "NameConflict", timeout=30)
    assert f"Deployment {namespace}/{name} already exists" in stalled["message"], stalled
    warning(kctl, "squatter", name)
    squat = kctl.get("deployment", name)
    assert squat["spec"]["replicas"] == 0 and squat["spec"]["selector"] == {"matchLabels": {"x": "squatter"}}
    assert not squat["metadata"].get("ownerReferences")


def test_a_pod_carrying_the_apps_labels_is_no_replica_of_it(kctl: Kubectl, namespace: str, running_operator,
                                                            pools):
    """A stuck pod someone made by hand with the app's labels would, if counted, make the app fall back
    and report it in status; only pods of the app's own ReplicaSets count."""
    gpu, spare = pools.machine_type("own"), pools.machine_type("spare")
    pools.add_node("own", gpus=8)
    pools.add_node("spare", gpus=8)
    kctl.apply(falapp("owned", [gpu, spare], gpus=1))
    [replica] = wait_placement(kctl, "owned", {gpu.lower(): 1}, timeout=60)
    wait_condition(kctl, "falapp", "owned", "Ready", "True", timeout=60)
    kctl.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "decoy", "labels": {
        "fal.ai/app": "owned", "fal.ai/machine-type": gpu.lower()},
        "annotations": replica["metadata"]["annotations"]},
        "spec": {"nodeSelector": {"no-such-label": "x"},
                 "containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"nvidia.com/gpu": "1"},
                                                                             "limits": {"nvidia.com/gpu": "1"}}}]}})
    wait_until(lambda: (condition(kctl.get("pod", "decoy"), "PodScheduled") or {}).get("reason") == "Unschedulable",
               timeout=30, message="the decoy is unschedulable")
    # the app's unschedulableTimeout (3 s) passes several times over: nothing may move
    settle(10)
    assert not events_for(kctl, "owned", "FellBack")
    replicas = [p["metadata"]["name"] for p in app_pods(kctl, "owned") if p["metadata"]["name"] != "decoy"]
    assert replicas == [replica["metadata"]["name"]], "the app's replica was moved because of the decoy"
    status = kctl.get("falapp", "owned")["status"]
    assert status["replicas"] == 1 and condition(kctl.get("falapp", "owned"), "Ready")["status"] == "True", status
