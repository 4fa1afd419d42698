"""The local cluster is real: the scheduler binds, the controller manager creates, RBAC refuses."""

from __future__ import annotations

import json

import pytest

from tests.kube import Kubectl, KubectlError, condition, wait_until

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def gpu_pod(name: str, gpus: int, product: str | None = None) -> dict:
    spec: dict = {
        "containers": [{"name": "main", "image": "example.invalid/app:1",
                        "resources": {"requests": {"nvidia.com/gpu": str(gpus)},
                                      "limits": {"nvidia.com/gpu": str(gpus)}}}],
        "tolerations": [GPU_TOLERATION],
    }
    if product:
        spec["nodeSelector"] = {"nvidia.com/gpu.product": product}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_fleet_has_every_machine_type(kubectl: Kubectl):
    nodes = kubectl.get("nodes", None, "-l", "fal.ai/fleet-pool")["items"]
    products = {n["metadata"]["labels"].get("nvidia.com/gpu.product") for n in nodes}
    assert {"NVIDIA-GeForce-RTX-4090", "NVIDIA-GeForce-RTX-5090", "NVIDIA-A100-SXM4-40GB", "NVIDIA-L40S",
            "NVIDIA-H100-80GB-HBM3", "NVIDIA-H200", "NVIDIA-B200", None} <= products
    h100 = next(n for n in nodes if n["metadata"]["labels"].get("nvidia.com/gpu.product") == "NVIDIA-H100-80GB-HBM3")
    assert h100["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in h100["spec"]["taints"]
    assert condition(h100, "Ready")["status"] == "True"


def test_server_reports_the_built_release(kubectl: Kubectl):
    version = json.loads(kubectl.run("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.35.")
    assert version["serverVersion"]["minor"] == "35"


def test_gpu_pod_is_bound_to_an_h100_node_and_becomes_ready(kctl: Kubectl):
    kctl.apply(gpu_pod("h100-job", 8, "NVIDIA-H100-80GB-HBM3"))
    pod = wait_until(lambda: (p := kctl.get("pod", "h100-job")) and condition(p, "Ready")
                     and condition(p, "Ready")["status"] == "True" and p, timeout=30, message="pod Ready")
    node = kctl.get("node", pod["spec"]["nodeName"])
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"


def test_pod_asking_for_too_many_gpus_is_unschedulable(kctl: Kubectl):
    kctl.apply(gpu_pod("too-big", 64))

    def scheduled_condition():
        c = condition(kctl.get("pod", "too-big"), "PodScheduled")
        return c if c and c["status"] == "False" else None

    c = wait_until(scheduled_condition, timeout=30, message="PodScheduled=False")
    assert c["reason"] == "Unschedulable"
    assert c["message"].startswith("0/") and "nodes are available" in c["message"]
    assert "Insufficient nvidia.com/gpu" in c["message"]


def test_deployment_pods_are_created_by_the_controller_manager(kctl: Kubectl):
    kctl.apply({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]}}},
    })
    deployment = wait_until(lambda: (d := kctl.get("deployment", "web"))
                            and d["status"].get("readyReplicas") == 3 and d, timeout=60,
                            message="3 ready replicas")
    assert deployment["status"]["replicas"] == 3
    pods = kctl.get("pods", None, "-l", "app=web")["items"]
    assert len(pods) == 3 and all(p["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet" for p in pods)


def test_rbac_refuses_a_service_account_without_rights(kubectl: Kubectl, kctl: Kubectl, namespace: str, tmp_path):
    kctl.run("create", "serviceaccount", "nobody")
    token = kctl.run("create", "token", "nobody").stdout.strip()
    server = kubectl.json("config", "view", "--raw", "--minify")["clusters"][0]["cluster"]
    config = tmp_path / "nobody.kubeconfig"
    config.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": server}],
        "users": [{"name": "nobody", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "nobody", "namespace": namespace}}],
        "current-context": "c",
    }))
    nobody = Kubectl(kubectl.binary, config, namespace)
    with pytest.raises(KubectlError) as refused:
        nobody.run("get", "pods")
    assert "forbidden" in refused.value.stderr.lower()
    assert f"system:serviceaccount:{namespace}:nobody" in refused.value.stderr
    # the same identity works once granted, so the refusal above was RBAC and not a broken token
    kctl.run("create", "role", "pod-reader", "--verb=list", "--resource=pods")
    kctl.run("create", "rolebinding", "nobody-reads", "--role=pod-reader", f"--serviceaccount={namespace}:nobody")
    wait_until(lambda: nobody.run("get", "pods", check=False).returncode == 0, timeout=10, message="access granted")
