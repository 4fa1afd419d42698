"""Requests the API server refuses are shown on the FalApp, never passed over in silence.

Each test makes the real API server refuse something the operator asks for (a quota, RBAC, an invalid
object, a bad selector) and asserts what the user sees: Stalled with the API's own message naming the
object, a Warning event, and recovery once the cause is gone.
"""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from datetime import UTC, datetime

from falapp_operator.api.names import deployment_name
from tests.cluster.builders import falapp
from tests.cluster.conftest import OperatorProcess
from tests.cluster.helpers import events_for, wait_condition, wait_placement
from tests.cluster.test_chart import TokenOperator, token_kubeconfig
from tests.conftest import CLUSTER
from tests.kube import Kubectl, condition, wait_until


def quota(name: str, hard: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name}, "spec": {"hard": hard}}


def warning(kctl: Kubectl, app: str, reason: str, text: str) -> dict:
    return wait_until(lambda: next((e for e in events_for(kctl, app, reason)
                                    if e["type"] == "Warning" and text in e["message"]), None),
                      timeout=30, message=f"Warning {reason} about {text!r}")


def test_quota_refusing_the_deployment_is_shown_then_recovers(kctl, namespace, running_operator, pools):
    gpu = pools.machine_type("q")
    pools.add_node("q", gpus=8)
    kctl.apply(quota("no-deployments", {"count/deployments.apps": "0"}))
    kctl.apply(falapp("quota", [gpu], gpus=1))
    stalled = wait_condition(kctl, "falapp", "quota", "Stalled", "True", "RequestRejected", timeout=30)
    assert f"Deployment {namespace}/{deployment_name('quota', gpu.lower())}" in stalled["message"], stalled
    assert "exceeded quota" in stalled["message"] and "no-deployments" in stalled["message"], stalled
    app = kctl.get("falapp", "quota")
    assert condition(app, "Ready")["status"] == "False"
    warning(kctl, "quota", "RequestRejected", "exceeded quota")
    # the admin lifts the quota: the app comes up on its own, and says so
    kctl.run("delete", "resourcequota", "no-deployments")
    wait_placement(kctl, "quota", {gpu.lower(): 1}, timeout=60)
    wait_condition(kctl, "falapp", "quota", "Ready", "True", timeout=30)
    assert condition(kctl.get("falapp", "quota"), "Stalled")["status"] == "False"


def test_refused_service_is_shown(kctl, namespace, running_operator, pools):
    """A quota of zero Services: the Deployment is written, the Service refused, and the app says so
    (a name the Service could not take is refused earlier, when the FalApp is applied)."""
    gpu = pools.machine_type("svc")
    pools.add_node("svc", gpus=8)
    kctl.apply(quota("no-services", {"services": "0"}))
    kctl.apply(falapp("web", [gpu], gpus=1, ports=[{"name": "http", "containerPort": 8000}]))
    stalled = wait_condition(kctl, "falapp", "web", "Stalled", "True", "RequestRejected", timeout=30)
    assert f"Service {namespace}/web" in stalled["message"] and "exceeded quota" in stalled["message"], stalled
    assert condition(kctl.get("falapp", "web"), "Ready")["status"] == "False"
    warning(kctl, "web", "RequestRejected", "Service")
    kctl.run("delete", "resourcequota", "no-services")
    wait_condition(kctl, "falapp", "web", "Ready", "True", timeout=60)


def test_gpu_quota_is_shown_with_its_message(kctl, running_operator, pools):
    """The ReplicaSet cannot create the second replica's pod: the quota's message reaches the app."""
    gpu = pools.machine_type("gq")
    pools.add_node("gq", gpus=8)
    kctl.apply(quota("gpus", {"requests.nvidia.com/gpu": "1"}))
    kctl.apply(falapp("gq", [gpu], gpus=1, replicas=2))
    ready = wait_condition(kctl, "falapp", "gq", "Ready", "False", "ReplicaFailure", timeout=60)
    assert "exceeded quota" in ready["message"] and gpu in ready["message"], ready
    assert condition(kctl.get("falapp", "gq"), "Stalled")["status"] == "True"
    warning(kctl, "gq", "ReplicaFailure", "exceeded quota")
    kctl.run("delete", "resourcequota", "gpus")
    wait_condition(kctl, "falapp", "gq", "Ready", "True", timeout=90)


def test_rbac_refusal_is_shown(kubectl: Kubectl, kctl: Kubectl, namespace: str, crds, running_operator, pools,
                               tmp_path):
    """An operator whose role lacks rights on Services: the 403 and its message are on the app."""
    sa, role = "no-services", f"falapp-no-services-{namespace}"
    kctl.run("create", "serviceaccount", sa)
    rules = [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "list", "watch"]},
        {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "create", "patch",
                                                                       "delete"]},
        {"apiGroups": ["fal.ai"], "resources": ["falapps", "machinetypes"], "verbs": ["get", "list", "watch",
                                                                                      "patch"]},
        {"apiGroups": ["fal.ai"], "resources": ["falapps/status", "machinetypes/status"], "verbs": ["patch"]},
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    ]
    kubectl.apply([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": role},
         "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": role},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
         "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": namespace}]},
    ])
    limited: TokenOperator | None = None
    try:
        running_operator.stop()
        limited = TokenOperator(token_kubeconfig(kubectl, namespace, sa, tmp_path / "sa.kubeconfig"), tmp_path,
                                ["--namespace", namespace])
        limited.start()
        gpu = pools.machine_type("rb")
        pools.add_node("rb", gpus=8)
        kctl.apply(falapp("rbac", [gpu], gpus=1, ports=[{"name": "http", "containerPort": 8000}]))
        stalled = wait_condition(kctl, "falapp", "rbac", "Stalled", "True", "RequestRejected", timeout=60)
        assert f"Service {namespace}/rbac" in stalled["message"] and "forbidden" in stalled["message"], stalled
        warning(kctl, "rbac", "RequestRejected", "forbidden")
    finally:
        if limited is not None:
            limited.stop()
        kubectl.run("delete", "clusterrolebinding,clusterrole", role, check=False)
        running_operator.start()


def test_an_app_its_namespace_left_behind_is_told_once_and_placed_when_the_namespace_is_back(
        kubectl, kctl, running_operator, pools):
    """A namespace's deletion can leave objects stored without it (the API server restarted during it:
    the rig's API server and etcd restarts do so at times). Every write there answers 404 about the
    namespace: the operator says so once and goes on, without retrying the app, until the namespace is
    back. The state is made on demand by storing the FalApp in etcd past the API server."""
    gpu = pools.machine_type("orphan")
    pools.add_node("orphan", gpus=8)
    gone = f"gone-{uuid.uuid4().hex[:8]}"
    app = falapp("left", [gpu], gpus=1)
    app["metadata"].update(namespace=gone, uid=str(uuid.uuid4()), generation=1,
                           creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    subprocess.run([str(CLUSTER), "etcd-put", f"/registry/fal.ai/falapps/{gone}/left"], input=json.dumps(app),
                   text=True, check=True, capture_output=True)
    left = kubectl.in_namespace(gone)
    told = f"{gone}/left: its namespace no longer exists"
    left_behind = running_operator.sample("falapp_apps_left_behind")  # (others' may be there: a restart's)
    try:
        assert left.get("falapp", "left")["metadata"]["uid"] == app["metadata"]["uid"]  # stored, served
        assert kubectl.run("get", "namespace", gone, check=False).returncode != 0
        wait_until(lambda: told in running_operator.log(), timeout=30, message="the orphan told")
        assert running_operator.sample("falapp_apps_left_behind") == left_behind + 1
        # the operator goes on with the others
        kctl.apply(falapp("alive", [gpu], gpus=1))
        wait_placement(kctl, "alive", {gpu.lower(): 1}, timeout=60)
        log = running_operator.log()
        assert log.count(told) == 1 and f'namespaces "{gone}" not found' in log, log[-3000:]
        assert f"reconcile of ('app', '{gone}', 'left') failed" not in log
        # the namespace again: the app is its own app there, placed and told Ready
        kubectl.run("create", "namespace", gone)
        wait_placement(left, "left", {gpu.lower(): 1}, timeout=60)
        wait_condition(left, "falapp", "left", "Ready", timeout=30)
        assert running_operator.sample("falapp_apps_left_behind") == left_behind
    finally:
        left.run("delete", "falapp", "left", "--ignore-not-found", "--wait=false", check=False)
        kubectl.run("delete", "namespace", gone, "--ignore-not-found", "--wait=false", check=False)


def test_a_webhook_down_is_told_on_the_app_once_its_requests_have_failed_a_while(
        kubectl: Kubectl, kctl: Kubectl, namespace: str, no_session_operator, pools, tmp_path):
    """A validating webhook on Deployments whose server is down (failurePolicy Fail): the real API server
    answers every write of the app's Deployment with 500, an error worth retrying. Once the app's
    reconciles have failed that way FALAPP_REQUESTS_FAILING_AFTER seconds, a Warning RequestsFailing on
    the app says so with the API's message; the webhook back, the app comes up."""
    gpu = pools.machine_type("hook")
    pools.add_node("hook", gpus=8)
    with socket.socket() as s:  # a port nothing listens on: every call of the webhook is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    name = f"falapp-test-down-{namespace}"
    operator = OperatorProcess(kubectl.kubeconfig, tmp_path, args=["--namespace", namespace],
                               env={"FALAPP_REQUESTS_FAILING_AFTER": "3"})
    try:
        kubectl.apply({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": "down.policy.falapp.test", "failurePolicy": "Fail", "sideEffects": "None",
                "admissionReviewVersions": ["v1"], "timeoutSeconds": 2,
                "clientConfig": {"url": f"https://127.0.0.1:{port}/validate"},
                "rules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                           "resources": ["deployments"]}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}]})
        # the API server calls the webhook before the operator writes anything there
        wait_until(lambda: "down.policy.falapp.test" in kctl.run(
            "create", "deployment", "probe", "--image=registry.example.com/x:1", "--dry-run=server",
            check=False).stderr, timeout=30, message="the webhook in force")
        operator.start()
        kctl.apply(falapp("hooked", [gpu], gpus=1))
        told = warning(kctl, "hooked", "RequestsFailing", 'failed calling webhook "down.policy.falapp.test"')
        assert f"Deployment {namespace}/{deployment_name('hooked', gpu.lower())}" in told["message"], told
        assert kctl.get("deployments")["items"] == [], "a Deployment got past the webhook"
        # retried on, and not told again while the answer stays the same
        failure = f"reconcile of ('app', '{namespace}', 'hooked') failed"
        failed = operator.log().count(failure)
        wait_until(lambda: operator.log().count(failure) >= failed + 2, timeout=60,
                   message="two more failed reconciles of the app")
        assert len(events_for(kctl, "hooked", "RequestsFailing")) == 1, "told more than once"
        kubectl.run("delete", "validatingwebhookconfiguration", name)
        wait_placement(kctl, "hooked", {gpu.lower(): 1}, timeout=60)
        wait_condition(kctl, "falapp", "hooked", "Ready", "True", timeout=30)
        assert len(events_for(kctl, "hooked", "RequestsFailing")) == 1, "told again after the webhook was back"
    finally:
        operator.stop()
        kubectl.run("delete", "validatingwebhookconfiguration", name, "--ignore-not-found", check=False)
