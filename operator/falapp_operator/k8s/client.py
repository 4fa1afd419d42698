"""The only code that calls the Kubernetes API (async, kubernetes_asyncio). Bodies travel as dicts."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from falapp_operator import metrics
from falapp_operator.api import GROUP, VERSION

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
PAGE = 500


async def load_config() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the current kubeconfig."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:
        await config.load_kube_config()
    return _without_env_lookups(client.ApiClient())


def _without_env_lookups(api_client: client.ApiClient) -> client.ApiClient:
    """kubernetes_asyncio's session trusts the environment, so aiohttp re-reads ~/.netrc and the proxy
    variables in a thread for every request: a quarter of the operator's CPU in a burst of reconciles.
    Requests go to the API server only; give them a session on the same connector that does not."""
    rest = api_client.rest_client
    original = rest.pool_manager
    rest.pool_manager = aiohttp.ClientSession(connector=original.connector, connector_owner=False,
                                              trust_env=False, read_bufsize=2**21)
    _ORIGINAL_SESSIONS[id(api_client)] = original  # owns the connector; closed with the client
    return api_client


_ORIGINAL_SESSIONS: dict[int, aiohttp.ClientSession] = {}


async def _json(coro) -> Any:
    response = await coro
    try:
        return json.loads(await response.read())
    finally:
        response.release()


async def _discard(coro) -> None:
    """Await a call made with _preload_content=False; errors still raise, the body is not parsed."""
    response = await coro
    response.release()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeApi:
    def __init__(self, api_client: client.ApiClient, field_manager: str):
        self.api_client = api_client
        self.field_manager = field_manager
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.writes = 0  # API write requests made, for the idle-writes benchmark

    def _wrote(self) -> None:
        self.writes += 1
        metrics.API_WRITES.inc()

    async def close(self) -> None:
        await self.api_client.close()
        original = _ORIGINAL_SESSIONS.pop(id(self.api_client), None)
        if original is not None:
            await original.close()

    # --- reads -------------------------------------------------------------------------------------
    async def get_falapp(self, namespace: str, name: str) -> dict | None:
        try:
            return await self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "falapps", name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def list_machinetypes(self) -> list[dict]:
        return (await self.custom.list_cluster_custom_object(GROUP, VERSION, "machinetypes"))["items"]

    async def _pages(self, call, **kwargs) -> AsyncIterator[dict]:
        token = None
        while True:
            page = await _json(call(limit=PAGE, _continue=token, _preload_content=False, **kwargs))
            for item in page["items"]:
                yield item
            token = page["metadata"].get("continue")
            if not token:
                return

    async def list_nodes(self) -> list[dict]:
        return [n async for n in self._pages(self.core.list_node)]

    async def list_pods(self) -> list[dict]:
        return [p async for p in self._pages(self.core.list_pod_for_all_namespaces)]

    async def list_app_deployments(self, namespace: str, selector: str) -> list[dict]:
        page = await _json(self.apps.list_namespaced_deployment(
            namespace, label_selector=selector, _preload_content=False))
        return page["items"]

    async def list_app_pods(self, namespace: str, selector: str) -> list[dict]:
        page = await _json(self.core.list_namespaced_pod(namespace, label_selector=selector,
                                                         _preload_content=False))
        return page["items"]

    # --- writes ------------------------------------------------------------------------------------
    async def apply(self, body: Mapping) -> None:
        """Server-side apply of a Deployment or Service we own."""
        self._wrote()
        meta = body["metadata"]
        kwargs = {"field_manager": self.field_manager, "force": True, "_content_type": APPLY,
                  "_preload_content": False}
        if body["kind"] == "Deployment":
            call = self.apps.patch_namespaced_deployment
        elif body["kind"] == "Service":
            call = self.core.patch_namespaced_service
        else:
            raise ValueError(f"cannot apply {body['kind']}")
        await _discard(call(meta["name"], meta["namespace"], body, **kwargs))

    async def scale_deployment(self, namespace: str, name: str, replicas: int) -> None:
        self._wrote()
        await _discard(self.apps.patch_namespaced_deployment_scale(
            name, namespace, {"spec": {"replicas": replicas}}, field_manager=self.field_manager,
            _content_type=MERGE, _preload_content=False))

    async def delete_deployment(self, namespace: str, name: str) -> None:
        await self._delete(self.apps.delete_namespaced_deployment, namespace, name)

    async def delete_service(self, namespace: str, name: str) -> None:
        await self._delete(self.core.delete_namespaced_service, namespace, name)

    async def _delete(self, call, namespace: str, name: str) -> None:
        self._wrote()
        try:
            await _discard(call(name, namespace, propagation_policy="Background", _preload_content=False))
        except ApiException as e:
            if e.status != 404:
                raise

    async def get_service(self, namespace: str, name: str) -> dict | None:
        try:
            return await _json(self.core.read_namespaced_service(name, namespace, _preload_content=False))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def mark_pod_for_deletion(self, namespace: str, name: str) -> None:
        """Lowest pod-deletion-cost: the ReplicaSet removes this pod first when its type shrinks."""
        self._wrote()
        try:
            await _discard(self.core.patch_namespaced_pod(
                name, namespace, {"metadata": {"annotations": {DELETION_COST: "-1000"}}},
                field_manager=self.field_manager, _content_type=MERGE, _preload_content=False))
        except ApiException as e:
            if e.status != 404:
                raise

    async def patch_falapp_status(self, namespace: str, name: str, status: Mapping) -> None:
        self._wrote()
        await _discard(self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "falapps", name, {"status": status},
            field_manager=self.field_manager, _content_type=MERGE, _preload_content=False))

    async def patch_machinetype_status(self, name: str, status: Mapping) -> None:
        self._wrote()
        await _discard(self.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, "machinetypes", name, {"status": status},
            field_manager=self.field_manager, _content_type=MERGE, _preload_content=False))

    async def post_event(self, involved: Mapping, event_type: str, reason: str, message: str) -> None:
        self._wrote()
        now = _now()
        body = {
            "metadata": {"generateName": f"{involved['name']}.", "namespace": involved["namespace"]},
            "involvedObject": dict(involved),
            "reason": reason,
            "message": message[:1024],
            "type": event_type,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": self.field_manager},
            "reportingComponent": self.field_manager,
            "reportingInstance": socket.gethostname(),
        }
        await _discard(self.core.create_namespaced_event(involved["namespace"], body, _preload_content=False))
