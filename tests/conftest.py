"""Session-wide fixtures. Cluster tests (marker `cluster`) share one local cluster per session."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.kube import Kubectl, wait_until

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "hack" / "cluster.sh"


def _cluster_running() -> bool:
    return subprocess.run([str(CLUSTER), "status"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def kubectl() -> Kubectl:
    """Admin kubectl for the local cluster; starts the cluster once, or reuses a running one."""
    started = False
    if not _cluster_running():
        subprocess.run([str(CLUSTER), "up"], check=True)
        started = True
    binary = Path(subprocess.run([str(CLUSTER), "bindir"], check=True, capture_output=True,
                                 text=True).stdout.strip()) / "kubectl"
    kubeconfig = Path(subprocess.run([str(CLUSTER), "kubeconfig"], check=True, capture_output=True,
                                     text=True).stdout.strip())
    yield Kubectl(binary, kubeconfig)
    if started and not os.environ.get("FALAPP_KEEP_CLUSTER"):
        subprocess.run([str(CLUSTER), "down"], check=False)


@pytest.fixture
def namespace(kubectl: Kubectl) -> str:
    """A fresh namespace per test, deleted afterwards (without waiting). Ready once its default
    ServiceAccount is there: until the controller manager has made it, every pod create there is refused
    (after a control-plane restart its informers may take a while to see the new namespace)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)
    try:
        wait_until(lambda: kubectl.run("get", "serviceaccount", "default", "--namespace", name,
                                       check=False).returncode == 0,
                   timeout=120, message=f"the default ServiceAccount of namespace {name}")
        yield name
    finally:
        kubectl.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def kctl(kubectl: Kubectl, namespace: str) -> Kubectl:
    """kubectl bound to the test's namespace."""
    return kubectl.in_namespace(namespace)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/cluster" in str(item.fspath):
            item.add_marker(pytest.mark.cluster)
