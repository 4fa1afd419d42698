"""Fixtures for tests on the local cluster: CRDs + catalogue installed once, one operator process."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from tests.cluster.builders import PrivatePools
from tests.conftest import REPO
from tests.kube import Kubectl, wait_until


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OperatorProcess:
    """`falapp-operator run` as a user starts it, against the test cluster's kubeconfig, with the tests'
    settings and a test's own `args` and `env` besides. FALAPP_TEST_OPERATOR_VERBOSE=1 adds --verbose
    (debug logs in `log_path`, under pytest's temporary directory)."""

    def __init__(self, kubeconfig: Path, log_dir: Path, args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None):
        self.kubeconfig = kubeconfig
        self.log_path = log_dir / "operator.log"
        self.args, self.env = list(args), dict(env or {})
        self.metrics_port = _free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "FALAPP_METRICS_PORT": str(self.metrics_port),
               "FALAPP_MACHINE_TYPE_STATUS_DELAY": "0.2", "FALAPP_ERROR_BACKOFF_MAX": "5", **self.env}
        env.pop("KUBERNETES_SERVICE_HOST", None)  # outside any cluster, whatever the shell says
        verbose = ["--verbose"] if os.environ.get("FALAPP_TEST_OPERATOR_VERBOSE") == "1" else []
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "falapp_operator", "run", *self.args, *verbose],
                                         env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._serving_metrics, timeout=60, message=f"operator metrics endpoint ({self.log_path.name})")

    def _serving_metrics(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, f"operator exited; see {self.log_path}"
        try:
            with socket.create_connection(("127.0.0.1", self.metrics_port), timeout=0.5):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies or the OOM killer strikes."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def metrics(self) -> str:
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def sample(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include `labels`."""
        total = 0.0
        for m in re.finditer(rf"^{name}(?:{{([^}}]*)}})? (\S+)$", self.metrics(), re.M):
            have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(m.group(2))
        return total

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@pytest.fixture(scope="session")
def crds(kubectl: Kubectl) -> None:
    """The generated CRDs and the default MachineType catalogue, as the chart installs them."""
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    for crd in ("falapps.fal.ai", "machinetypes.fal.ai"):
        kubectl.run("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    kubectl.run("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "catalog" / "default.yaml"))


@pytest.fixture(scope="session")
def operator(kubectl: Kubectl, crds, tmp_path_factory) -> OperatorProcess:
    proc = OperatorProcess(kubectl.kubeconfig, tmp_path_factory.mktemp("operator"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def running_operator(operator: OperatorProcess) -> OperatorProcess:
    """The session operator, restarted if an earlier test killed it."""
    if operator.proc is None or operator.proc.poll() is not None:
        operator.start()
    return operator


@pytest.fixture
def no_session_operator(running_operator: OperatorProcess):
    """The session's operator (no leader election) would write too: stopped for the test."""
    running_operator.stop()
    yield
    running_operator.start()


@pytest.fixture
def pools(kubectl: Kubectl, crds) -> PrivatePools:
    """Private fake GPU nodes and MachineTypes for one test, removed afterwards."""
    pools = PrivatePools(kubectl)
    yield pools
    pools.cleanup()


def settle(seconds: float) -> None:
    """Give the operator a chance to (wrongly) act; used only before asserting that nothing changed."""
    time.sleep(seconds)
