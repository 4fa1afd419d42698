"""kubectl scale/wait, drift repair, deletion, and catalogue edits applied without a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from falapp_operator.api.names import deployment_name
from tests.cluster.builders import PrivatePools, falapp
from tests.cluster.helpers import app_pods, wait_condition, wait_placement
from tests.kube import Kubectl, wait_until


def test_kubectl_scale_and_wait(kctl: Kubectl, running_operator, pools: PrivatePools):
    fast = pools.machine_type("fast")
    pools.add_node("fast", gpus=8)
    kctl.apply(falapp("web", [fast], gpus=1, replicas=1))
    kctl.run("wait", "--for=condition=Ready", "falapp/web", "--timeout=60s")
    kctl.run("scale", "falapp/web", "--replicas=3")
    kctl.run("wait", "--for=jsonpath={.status.readyReplicas}=3", "falapp/web", "--timeout=60s")
    kctl.run("wait", "--for=condition=Ready", "falapp/web", "--timeout=60s")
    wait_placement(kctl, "web", {fast.lower(): 3})
    scale = json.loads(kctl.run("get", "--raw",
                                f"/apis/fal.ai/v1alpha1/namespaces/{kctl.namespace}/falapps/web/scale").stdout)
    assert scale["spec"]["replicas"] == 3 and scale["status"]["replicas"] == 3
    assert scale["status"]["selector"] == "fal.ai/app=web"


def test_deleted_or_edited_children_are_restored(kctl: Kubectl, running_operator, pools: PrivatePools):
    fast = pools.machine_type("fast")
    pools.add_node("fast")
    kctl.apply(falapp("api", [fast], replicas=2, ports=[{"name": "http", "containerPort": 8080}]))
    wait_condition(kctl, "falapp", "api", "Ready")
    deployment = deployment_name("api", fast.lower())
    uid = kctl.get("deployment", deployment)["metadata"]["uid"]

    kctl.run("set", "image", f"deployment/{deployment}", "app=evil.example.com/miner:1")
    wait_until(lambda: kctl.get("deployment", deployment)["spec"]["template"]["spec"]["containers"][0]["image"]
               == "registry.example.com/app:1", timeout=30, message="image restored")

    kctl.run("delete", "deployment", deployment, "--wait=false")
    wait_until(lambda: (d := kctl.run("get", "deployment", deployment, "-o", "jsonpath={.metadata.uid}",
                                      check=False)).returncode == 0 and d.stdout not in ("", uid),
               timeout=30, message="deployment recreated")
    wait_placement(kctl, "api", {fast.lower(): 2})

    kctl.run("delete", "service", "api", "--wait=false")
    wait_until(lambda: kctl.run("get", "service", "api", check=False).returncode == 0, timeout=30,
               message="service recreated")
    service = kctl.get("service", "api")
    assert service["spec"]["selector"] == {"fal.ai/app": "api"}
    assert service["metadata"]["ownerReferences"][0]["kind"] == "FalApp"


def test_deleting_the_app_removes_its_children(kctl: Kubectl, running_operator, pools: PrivatePools):
    fast = pools.machine_type("fast")
    pools.add_node("fast")
    kctl.apply(falapp("gone", [fast], replicas=1, ports=[{"containerPort": 80}]))
    wait_condition(kctl, "falapp", "gone", "Ready")
    kctl.run("delete", "falapp", "gone")
    wait_until(lambda: not kctl.get("deployments", None, "-l", "fal.ai/app=gone")["items"]
               and kctl.run("get", "service", "gone", check=False).returncode != 0
               and not app_pods(kctl, "gone"), timeout=60, message="children garbage-collected")


def test_machine_type_edit_applies_without_restart(kctl: Kubectl, kubectl: Kubectl, running_operator,
                                                   pools: PrivatePools):
    fast = pools.machine_type("fast", cpu="1")
    pools.add_node("fast")
    kctl.apply(falapp("edit", [fast], gpus=2, replicas=1))
    wait_condition(kctl, "falapp", "edit", "Ready")
    kubectl.run("patch", "machinetype", fast.lower(), "--type=merge", "-p", '{"spec":{"resources":{"cpu":"3"}}}')

    def cpu_request():
        pods = app_pods(kctl, "edit")
        return [p["spec"]["containers"][0]["resources"]["requests"]["cpu"] for p in pods]
    wait_until(lambda: cpu_request() == ["6"], timeout=60, message="pods re-created with 2 x 3 CPUs")


def test_kubectl_explain_reads_the_field_descriptions(kubectl: Kubectl, crds):
    text = kubectl.run("explain", "falapp.spec.fallback").stdout
    assert "unschedulableTimeout" in text and "returnToPreferred" in text
    assert "scaleUpTimeout" in text
    machine = kubectl.run("explain", "machinetype.spec.nodeAffinity").stdout
    assert "operator" in machine


def test_kubectl_describe_shows_fallback_events(kctl: Kubectl, running_operator, pools: PrivatePools):
    fast, slow = pools.machine_type("fast"), pools.machine_type("slow")
    pools.add_node("slow")
    kctl.apply(falapp("told", [fast, slow], gpus=1, replicas=1, timeout="1s"))
    # no fast node: placed on slow directly; then fast appears and the replica returns
    wait_placement(kctl, "told", {slow.lower(): 1})
    pools.add_node("fast")
    wait_placement(kctl, "told", {fast.lower(): 1}, timeout=60)
    described = kctl.run("describe", "falapp", "told").stdout
    assert "ReturnedToPreferred" in described and "FallbackActive" in described


def test_json_logs(kubectl: Kubectl, crds, tmp_path):
    """`--log-format json`: every line the operator logs is a JSON object (here limited to an empty namespace)."""
    log = tmp_path / "json.log"
    env = {**os.environ, "KUBECONFIG": str(kubectl.kubeconfig), "FALAPP_METRICS_PORT": "0"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "falapp_operator", "run", "--log-format", "json",
                                 "--namespace", "falapp-json-logs-test"], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: "startup" in log.read_text(), timeout=30, message="startup logged")
        finally:
            proc.terminate()
            proc.wait(15)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines
    for line in lines:
        record = json.loads(line)
        assert "message" in record and "timestamp" in record
