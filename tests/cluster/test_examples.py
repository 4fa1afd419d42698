"""Each example lands on nodes of the right product, with the right requests and tolerations."""

from __future__ import annotations

import pytest
import yaml

from tests.cluster.helpers import node_of, wait_condition, wait_placement
from tests.conftest import REPO
from tests.kube import Kubectl

EXAMPLES = REPO / "examples"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def load(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


@pytest.mark.parametrize("example, want_type, products, gpus", [
    ("sdxl-1gpu.yaml", "gpu-rtx4090", {"NVIDIA-GeForce-RTX-4090"}, 1),
    ("llm-8gpu.yaml", "gpu-h100", {"NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe"}, 8),
    ("video-nvenc.yaml", "gpu-l40", {"NVIDIA-L40S", "NVIDIA-L40"}, 1),
    ("cpu-router.yaml", "m", {None}, 0),
    ("llm-by-vram.yaml", "gpu-rtx5090", {"NVIDIA-GeForce-RTX-5090"}, 2),
], ids=["one-gpu", "multi-gpu", "video-nvenc", "cpu", "by-vram-split"])
def test_example_lands_on_its_machine_type(kctl: Kubectl, running_operator, example, want_type, products, gpus):
    app = load(example)
    name, replicas = app["metadata"]["name"], app["spec"]["replicas"]
    kctl.apply(app)
    pods = wait_placement(kctl, name, {want_type: replicas}, timeout=60)
    for pod in pods:
        node = node_of(kctl, pod)
        assert node["metadata"]["labels"].get("nvidia.com/gpu.product") in products
        container = pod["spec"]["containers"][0]
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        if gpus:
            assert requests["nvidia.com/gpu"] == limits["nvidia.com/gpu"] == str(gpus)
            assert GPU_TOLERATION in pod["spec"]["tolerations"]
        else:
            assert "nvidia.com/gpu" not in requests
            assert requests["cpu"] == "2" and requests["memory"] == "2Gi"
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if app["spec"].get("requiresNvenc"):
            assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility,video"
        else:
            assert "NVIDIA_DRIVER_CAPABILITIES" not in env
        # restricted Pod Security defaults
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    wait_condition(kctl, "falapp", name, "Ready")
    status = kctl.get("falapp", name)["status"]
    assert status["readyReplicas"] == replicas and status["observedGeneration"] == 1
    assert status["selector"] == f"fal.ai/app={name}"
    display = want_type.upper()
    assert status["machines"] == f"{display}x{replicas}"
    assert status["placements"][0]["machineType"] == display


def test_printer_columns_show_where_replicas_run(kctl: Kubectl, running_operator):
    kctl.apply(load("llm-8gpu.yaml"))
    wait_condition(kctl, "falapp", "llm", "Ready")
    table = kctl.run("get", "falapps").stdout.splitlines()
    header = table[0].split()
    assert header[:3] == ["NAME", "READY", "MACHINES"] and "AGE" in header
    assert table[1].split()[:3] == ["llm", "True", "GPU-H100x1"]
    assert "llm" in kctl.run("get", "fa").stdout
    assert "llm" in kctl.run("get", "fal").stdout  # category
