"""The operator's start (handlers.startup) against the fake API server on loopback: a start the API
refuses fails with the API's message and leaves nothing behind, so kopf can run it again."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import kopf
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.config import kube_config

from falapp_operator import handlers
from falapp_operator.k8s.client import ApiError
from tests.unit.fake_api import FakeApiServer, listening
from tests.unit.test_controller_writes import wait_for


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{server}"}}}}]
users: [{{name: fake, user: {{token: fake-token}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]
current-context: fake
""")
    return path


async def test_a_start_the_api_refuses_fails_with_its_message_and_leaves_no_connection_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApiServer()
    fake.fail("GET", "/machinetypes", 403, 'machinetypes.fal.ai is forbidden: User "fake" cannot list', times=2)
    async with listening(fake) as server:
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        # kubernetes_asyncio reads $KUBECONFIG once, when imported
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION",
                            str(kubeconfig(tmp_path / "kubeconfig", str(server.make_url("")))))
        monkeypatch.setattr(client.Configuration, "_default", client.Configuration._default)  # load_config sets it
        monkeypatch.setenv("FALAPP_METRICS_PORT", "0")
        monkeypatch.setenv("FALAPP_LEADER_ELECT", "false")
        memo = kopf.Memo()
        for attempt in (1, 2):  # kopf runs a failed start again
            with pytest.raises(ApiError, match="forbidden"):
                await handlers.startup(settings=kopf.OperatorSettings(), memo=memo)
            assert sum(r.path.endswith("/machinetypes") for r in fake.requests) == attempt
            assert "controller" not in memo
            # the failed start's client is closed: its connection to the server is gone
            await wait_for(lambda: not server.runner.server.connections)


async def test_a_metrics_port_in_use_fails_the_start_and_leaves_no_watch_running(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The metrics server starts after the caches are full; a port it cannot bind (another process's)
    failed the start with the controller already watching, and each run kopf made again added one more."""
    fake = FakeApiServer()
    async with listening(fake) as server:
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION",
                            str(kubeconfig(tmp_path / "kubeconfig", str(server.make_url("")))))
        monkeypatch.setattr(client.Configuration, "_default", client.Configuration._default)
        monkeypatch.setenv("FALAPP_LEADER_ELECT", "false")
        with socket.socket() as taken:
            taken.bind(("", 0))
            taken.listen()
            monkeypatch.setenv("FALAPP_METRICS_PORT", str(taken.getsockname()[1]))
            memo = kopf.Memo()
            with pytest.raises(OSError):
                await handlers.startup(settings=kopf.OperatorSettings(), memo=memo)
            assert "controller" not in memo
            watches = [t for t in asyncio.all_tasks() if t.get_name().startswith("falapp-")]
            assert watches == [], f"left running: {[t.get_name() for t in watches]}"
            await wait_for(lambda: not server.runner.server.connections)
