"""The only code that calls the Kubernetes API (async, kubernetes_asyncio). Bodies travel as dicts."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Literal, TypeAlias, cast

import aiohttp
import orjson
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from falapp_operator import metrics
from falapp_operator.api import GROUP, VERSION, JsonMapping, JsonObject, format_time, truncate
from falapp_operator.api.names import DELETE_FIRST, DELETION_COST

logger = logging.getLogger(__name__)

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
PAGE = 500

# A method of kubernetes_asyncio's generated API classes. Called with _preload_content=False (as every
# call here is) it returns aiohttp's response, not the model its annotation names: see _response.
ApiCall: TypeAlias = Callable[..., Awaitable[object]]


async def load_config() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the current kubeconfig."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:
        await config.load_kube_config()
    return api_client(client.Configuration.get_default_copy())


def api_client(configuration: client.Configuration) -> client.ApiClient:
    """The operator's client. Its connections are not limited (kubernetes_asyncio's default is 100): the
    app requests are (settings.requests_in_flight, let through by priority), and a second, unordered limit
    under the watches (eight per watched namespace) would let tidying up hold urgent writes, and enough
    namespaces' watches hold every connection, the leader's Lease renewals included."""
    configuration.connection_pool_maxsize = 0  # aiohttp: no limit
    return _without_env_lookups(client.ApiClient(configuration))


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


class ApiError(Exception):
    """The API server refused a request (or could not be reached). `transient` errors are worth
    retrying as they are; the others need a change by someone (spec, quota, RBAC) and are shown."""

    TRANSIENT = frozenset({408, 409, 429, 500, 502, 503, 504})

    def __init__(self, status: int, reason: str, message: str, what: str = "", details_kind: str = ""):
        super().__init__(f"{what + ': ' if what else ''}{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.what = what
        # what the API server's answer is about (its details.kind: a resource, e.g. "namespaces"), if it says
        self.details_kind = details_kind

    @property
    def transient(self) -> bool:
        return self.status in self.TRANSIENT or self.status == 0

    @property
    def namespace_gone(self) -> bool:
        """A write's 404 about its namespace, not its object: the namespace no longer exists (the API
        server's namespace lifecycle check answers so), though objects stored in it may still be there."""
        return self.status == 404 and self.details_kind == "namespaces"

    @property
    def object_gone(self) -> bool:
        """A 404 not about the namespace: the object is not there (deleted meanwhile), or its path is not
        served (a subresource the CRD lacks)."""
        return self.status == 404 and not self.namespace_gone


class NotLeading(RuntimeError):
    """A write attempted while this process does not hold the leader Lease: refused before it is sent."""


class ServerClock:
    """The API server's clock, from the Date header of its answers: timeouts compare the server's own
    timestamps (conditions, creation times) with this, so a skewed local clock shifts nothing.

    The header has whole seconds: one answer only says the server's clock read [D, D+1) at some local
    moment between sending and receiving, which bounds the offset (server minus local) to a second-wide
    interval. The intervals of the answers are intersected; once answers fall on both sides of a
    second's edge the offset is known to about a round trip. Kept: the tightest bounds of each of the
    last BUCKETS local seconds that had answers, however long ago (the operator sends nothing while
    all is well, and the first burst after a quiet hour must not rest on its own second alone: hundreds
    of answers within one second leave the offset open over half a second, and so every timeout).
    A bound loosens with age by DRIFT (how fast two clocks may drift apart); one an answer contradicts
    even so goes (the clocks drifted faster, or one was stepped), its second's other bound stays.
    (A guess per answer is off by up to half a second.)"""

    BUCKETS = 128
    DRIFT = 5e-5  # 50 ppm, a free-running quartz clock's worst; NTP keeps clocks far closer

    def __init__(self) -> None:
        # local second -> [lower, upper] bound of the offset as keys that never reorder as they age:
        # lower + DRIFT*t and upper - DRIFT*t (t: local time of the answer); at time T the bounds are
        # key - DRIFT*T and key + DRIFT*T
        self._seconds: OrderedDict[int, list[float]] = OrderedDict()
        self._low_key, self._high_key = -math.inf, math.inf
        self.offset = 0.0

    def observe(self, date_header: str | None, sent: float | None = None, received: float | None = None) -> None:
        """`sent`, `received`: local wall-clock times (time.time()) around the request."""
        if not date_header:
            return
        try:
            server = parsedate_to_datetime(date_header).timestamp()
        except (TypeError, ValueError):
            return
        received = time.time() if received is None else received
        sent = received if sent is None else sent
        if received < sent:  # the local clock was stepped back meanwhile: the answer bounds nothing
            return
        low, high = server - received, server + 1 - sent
        aged = self.DRIFT * received
        if self._low_key - aged > high:  # older lower bounds this answer contradicts go
            for bounds in self._seconds.values():
                bounds[0] = -math.inf if bounds[0] - aged > high else bounds[0]
            self._low_key = max((b[0] for b in self._seconds.values()), default=-math.inf)
        if self._high_key + aged < low:
            for bounds in self._seconds.values():
                bounds[1] = math.inf if bounds[1] + aged < low else bounds[1]
            self._high_key = min((b[1] for b in self._seconds.values()), default=math.inf)
        low_key, high_key = low + aged, high - aged
        bounds = self._seconds.setdefault(int(received), [low_key, high_key])
        bounds[0], bounds[1] = max(bounds[0], low_key), min(bounds[1], high_key)
        self._low_key, self._high_key = max(self._low_key, low_key), min(self._high_key, high_key)
        if len(self._seconds) > self.BUCKETS:
            self._seconds.popitem(last=False)
            self._low_key = max(b[0] for b in self._seconds.values())
            self._high_key = min(b[1] for b in self._seconds.values())
        self.offset = (self._low_key + self._high_key) / 2  # (the ageing of the two bounds cancels out)

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)


async def _response(coro: Awaitable[object]) -> aiohttp.ClientResponse:
    """The raw answer of a call made with _preload_content=False."""
    return cast(aiohttp.ClientResponse, await coro)  # kubernetes_asyncio's annotations assume preloading


async def _answer(coro: Awaitable[object], what: str, clock: ServerClock | None = None) -> JsonObject | None:
    """Await a call made with _preload_content=False; raise ApiError on an error status, else return
    the parsed body (None when empty). kubernetes_asyncio checks the status only when it preloads."""
    sent = time.time()
    try:
        response = await _response(coro)
    except ApiException as e:  # raised by calls that preload, and by the client's own checks
        raise _from_exception(e, what) from e
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        raise ApiError(0, type(e).__name__, str(e) or type(e).__name__, what) from e
    received = time.time()
    try:
        data = await response.read()
        if clock is not None and (response.status < 400 or _kubernetes_status(data)):
            clock.observe(response.headers.get("Date"), sent, received)  # not a proxy's page, with its clock
        if response.status >= 400:
            raise _from_body(response.status, response.reason or "", data, what)
        body: JsonObject | None = orjson.loads(data) if data else None  # the API answers with objects
        return body
    except (aiohttp.ClientError, TimeoutError) as e:
        raise ApiError(0, type(e).__name__, str(e) or type(e).__name__, what) from e
    finally:
        response.release()


def _kubernetes_status(data: bytes) -> bool:
    """Whether an error answer is the API server's own (a Status object), not a proxy's."""
    try:
        body = orjson.loads(data)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("kind") == "Status"


def _from_body(status: int, reason: str, data: bytes, what: str) -> ApiError:
    message = truncate(data.decode(errors="replace"), 2048)  # a body not from the API server (a proxy's page)
    details_kind = ""
    try:
        body = orjson.loads(data)
        if isinstance(body, dict):
            message, reason = body.get("message") or message, body.get("reason") or reason
            details = body.get("details")
            details_kind = str(details.get("kind") or "") if isinstance(details, dict) else ""
    except ValueError:
        pass
    return ApiError(status, reason, message, what, details_kind)


def _from_exception(e: ApiException, what: str) -> ApiError:
    body = e.body if isinstance(e.body, bytes) else (e.body or "").encode()
    return _from_body(e.status or 0, e.reason or "", body, what)


CONNECT_TIMEOUT = 30  # seconds to open a connection to the API server
# seconds a watch may say nothing: the API server sends a bookmark a minute to watches it serves from its
# watch cache, so longer silence is a connection that died without a word (a host lost, a load balancer's
# state lost). Watches it serves straight from etcd (Events: no watch cache by default) get no bookmarks;
# their silence says nothing, and TCP keepalive finds their dead connections instead.
WATCH_SILENCE = 90.0
# TCP keepalive on a watch's connection: a peer gone without a word is noticed after KEEPALIVE_IDLE seconds
# of quiet and KEEPALIVE_PROBES unanswered probes KEEPALIVE_INTERVAL apart (the kernel's; no request), and
# data left unacknowledged as long (TCP_USER_TIMEOUT) ends it too. (Only the first hop's peer: behind a
# proxy that keeps its side open when the API server goes, a watch without bookmarks waits for its timeout.)
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES = 30, 10, 3


def watch_timeout(minimum: int) -> int:
    """Seconds to ask the API server to keep a watch open: `minimum` to twice it, at random, as client-go's
    reflectors do, so that a process's watches do not all end and start again in the same second."""
    return int(minimum * (1 + random.random()))


def _keep_alive(response: aiohttp.ClientResponse) -> None:
    """TCP keepalive on the connection a watch holds (see KEEPALIVE_IDLE); a no-op where the connection has
    no socket to set it on."""
    transport = response.connection.transport if response.connection else None
    sock = transport.get_extra_info("socket") if transport else None
    if sock is None:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                          ("TCP_KEEPCNT", KEEPALIVE_PROBES),
                          ("TCP_USER_TIMEOUT", 1000 * (KEEPALIVE_IDLE + KEEPALIVE_INTERVAL * KEEPALIVE_PROBES))):
        if hasattr(socket, option):  # Linux has all four
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


class KubeApi:
    def __init__(self, api_client: client.ApiClient, field_manager: str, request_timeout: float = 90.0) -> None:
        self.api_client = api_client
        self.field_manager = field_manager
        # seconds a request (not a watch) may go without a byte of its answer: kubernetes_asyncio sets no
        # limit, and a connection that went silent (an API server gone without closing it) would hold its
        # reconcile for good
        self.request_timeout = request_timeout
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.extensions = client.ApiextensionsV1Api(api_client)
        self.clock = ServerClock()
        self.writes = 0  # API write requests made, for the idle-writes benchmark
        self.may_write: Callable[[], bool] = lambda: True  # leader election's fence
        # seconds this process still leads for (leader election: until its renewal deadline)
        self.leading_for: Callable[[], float] = lambda: math.inf

    def _wrote(self, what: str) -> float | None:
        """Count a write about to be sent; its time limit: a write must be answered while this process
        leads (one sent late, landing after a standby took over, would undo the new leader's writes)."""
        if not self.may_write():
            raise NotLeading(f"not the leader: {what} not written")
        self.writes += 1
        metrics.API_WRITES.labels(what).inc()
        left = self.leading_for()
        return None if math.isinf(left) else max(left, 0.001)

    async def _call(self, what: str, call: ApiCall, *args: object, **kwargs: object) -> JsonObject | None:
        """`budget=`: a write's whole time limit (see _wrote)."""
        budget = cast(float | None, kwargs.pop("budget", None))
        own = "_request_timeout" in kwargs  # the caller's own limit (the Lease's renew deadline)
        if not own:  # silence, not length: a long answer that keeps coming is no dead connection
            kwargs["_request_timeout"] = aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT,
                                                               sock_read=self.request_timeout, total=budget)
        try:
            return await _answer(call(*args, _preload_content=False, **kwargs), what, self.clock)
        except ApiError as e:
            if not own and e.status == 0 and isinstance(e.__cause__, TimeoutError):
                limit = f"{self.request_timeout:g}s" + (f" (or the {budget:.1f}s it led for)" if budget else "")
                raise ApiError(0, e.reason, f"no answer within {limit}", what) from e
            raise

    async def _object(self, what: str, call: ApiCall, *args: object, **kwargs: object) -> JsonObject:
        """A call whose answer is an object (any but a delete's)."""
        body = await self._call(what, call, *args, **kwargs)
        if body is None:
            raise ApiError(0, "EmptyAnswer", "the API server answered without a body", what)
        return body

    async def close(self) -> None:
        await self.api_client.close()
        original = _ORIGINAL_SESSIONS.pop(id(self.api_client), None)
        if original is not None:
            await original.close()

    # --- reads ---------------------------------------------------------------------------------------
    async def get_falapp(self, namespace: str, name: str) -> JsonObject | None:
        return await self._get("get_falapp", f"FalApp {namespace}/{name}", self.custom.get_namespaced_custom_object,
                               GROUP, VERSION, namespace, "falapps", name)

    async def _get(self, read: str, what: str, call: ApiCall, *args: object) -> JsonObject | None:
        """A read of one object; None when it does not exist."""
        metrics.API_READS.labels(read).inc()
        try:
            return await self._call(what, call, *args)
        except ApiError as e:
            if e.status == 404:  # a read's 404 is about its object (admission checks no read): a Namespace too
                return None
            raise

    async def get_namespace(self, name: str) -> JsonObject | None:
        return await self._get("get_namespace", f"Namespace {name}", self.core.read_namespace, name)

    def _list_call(self, resource: str, namespace: str | None) -> tuple[ApiCall, tuple[str, ...]]:
        """The call that lists (and watches) a resource the controller keeps in memory, with its leading
        arguments: in one namespace, or in all (None); machine types, Karpenter's NodePools, nodes,
        namespaces and CRDs are the cluster's."""
        if resource in ("nodes", "namespaces"):
            return getattr(self.core, f"list_{resource[:-1]}"), ()
        if resource == "customresourcedefinitions":
            return self.extensions.list_custom_resource_definition, ()
        if resource == "machinetypes":
            return self.custom.list_cluster_custom_object, (GROUP, VERSION, "machinetypes")
        if resource == "nodepools":
            return self.custom.list_cluster_custom_object, ("karpenter.sh", "v1", "nodepools")
        if resource == "falapps":
            if namespace:
                return self.custom.list_namespaced_custom_object, (GROUP, VERSION, namespace, "falapps")
            return self.custom.list_cluster_custom_object, (GROUP, VERSION, "falapps")
        api, kind = {"pods": (self.core, "pod"), "services": (self.core, "service"), "events": (self.core, "event"),
                     "deployments": (self.apps, "deployment")}[resource]
        if namespace:
            return getattr(api, f"list_namespaced_{kind}"), (namespace,)
        return getattr(api, f"list_{kind}_for_all_namespaces"), ()

    @staticmethod
    def _selectors(label_selector: str | None, field_selector: str | None) -> dict[str, str]:
        return {k: v for k, v in (("label_selector", label_selector), ("field_selector", field_selector)) if v}

    async def list_objects(self, resource: str, each: Callable[[JsonObject], object], namespace: str | None = None,
                           label_selector: str | None = None, field_selector: str | None = None,
                           page_size: int = PAGE, read: str | None = None) -> str:
        """Every object of `resource` (pods, events, services, deployments, falapps; machinetypes, nodepools,
        nodes, namespaces) in `namespace` (None: all) matching the selectors, a page at a time into `each` (a
        cluster's objects never sit in memory as one list); returns the list's resourceVersion, from which a
        watch continues."""
        call, args = self._list_call(resource, namespace)
        what = f"{resource.capitalize()}{' in ' + namespace if namespace else ''}"
        selectors = self._selectors(label_selector, field_selector)
        token, version = None, None
        while True:
            metrics.API_READS.labels(read or f"list_{resource}").inc()
            page = await self._object(what, call, *args, limit=page_size, _continue=token, **selectors)
            version = version or page["metadata"].get("resourceVersion")  # every page is of one snapshot
            for item in page["items"]:
                each(item)
            token = page["metadata"].get("continue")
            if not token:
                return version or ""

    async def watch_objects(self, resource: str, resource_version: str, namespace: str | None = None,
                            label_selector: str | None = None, field_selector: str | None = None,
                            server_timeout: int = 300, silence: float | None = WATCH_SILENCE,
                            ) -> AsyncIterator[tuple[str, JsonObject]]:
        """(event type, object) from a watch of `resource` (as list_objects), from `resource_version` on,
        until the server ends it (`server_timeout` seconds) or it stays silent `silence` seconds (None: a
        watch that gets no bookmarks may stay silent until the server ends it). An expired version raises
        ApiError 410: list again."""
        call, args = self._list_call(resource, namespace)
        what = f"{resource.capitalize()}{' in ' + namespace if namespace else ''} (watch)"
        metrics.API_READS.labels(f"watch_{resource}").inc()
        quiet = server_timeout + 30 if silence is None else min(server_timeout + 30, silence)
        try:
            # the answer's head comes at once (keepalive is set only then): a connection that died before it
            # is not left to the watch's long quiet
            async with asyncio.timeout(self.request_timeout):
                response = await _response(call(
                    *args, watch=True, resource_version=resource_version, allow_watch_bookmarks=True,
                    timeout_seconds=server_timeout, _preload_content=False,
                    _request_timeout=aiohttp.ClientTimeout(sock_connect=CONNECT_TIMEOUT, sock_read=quiet),
                    **self._selectors(label_selector, field_selector)))
        except ApiException as e:
            raise _from_exception(e, what) from e
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise ApiError(0, type(e).__name__, str(e) or f"no answer within {self.request_timeout:g}s", what) from e
        try:
            if response.status >= 400:
                raise _from_body(response.status, response.reason or "", await response.read(), what)
            _keep_alive(response)
            async for line in response.content:
                if not line.strip():
                    continue
                event = orjson.loads(line)
                if event["type"] == "ERROR":
                    status = event.get("object") or {}
                    raise ApiError(status.get("code") or 500, status.get("reason") or "", status.get("message") or "",
                                   what)
                yield event["type"], event["object"]
        except TimeoutError:  # silent too long: ends as if the server ended it; the caller watches again
            logger.info("%s: nothing for %gs%s: watching again", what, quiet,
                        "" if silence is None else ", not even a bookmark")
        except (aiohttp.ClientError, ValueError) as e:  # ValueError: a cut line (bad JSON)
            raise ApiError(0, type(e).__name__, str(e) or type(e).__name__, what) from e
        finally:
            response.release()

    async def get_service(self, namespace: str, name: str) -> JsonObject | None:
        return await self._get("get_service", f"Service {namespace}/{name}", self.core.read_namespaced_service,
                               name, namespace)

    # --- writes ------------------------------------------------------------------------------------
    async def apply(self, body: JsonMapping, create: bool = False) -> JsonObject:
        """Server-side apply of a Deployment or Service we own; returns the object as applied. `create`:
        it was absent a moment ago; then fields someone else set meanwhile are a conflict (409), not
        taken over by force."""
        budget = self._wrote("apply")
        meta = body["metadata"]
        call: ApiCall
        if body["kind"] == "Deployment":
            call = self.apps.patch_namespaced_deployment
        elif body["kind"] == "Service":
            call = self.core.patch_namespaced_service
        else:
            raise ValueError(f"cannot apply {body['kind']}")
        return await self._object(f"{body['kind']} {meta['namespace']}/{meta['name']}", call, meta["name"],
                                meta["namespace"], body, field_manager=self.field_manager, force=not create,
                                _content_type=APPLY, budget=budget)

    async def resize_unlisted(self, namespace: str, name: str, body: JsonMapping) -> JsonObject | None:
        """Merge-patch a Deployment whose type is no longer listed (see children.resize_patch); returns
        it as patched (None: gone)."""
        budget = self._wrote("resize")
        try:
            return await self._call(f"Deployment {namespace}/{name}", self.apps.patch_namespaced_deployment,
                                    name, namespace, body, field_manager=self.field_manager, _content_type=MERGE,
                                    budget=budget)
        except ApiError as e:
            if not e.object_gone:
                raise
            return None

    async def delete_deployment(self, namespace: str, name: str) -> None:
        await self._delete(f"Deployment {namespace}/{name}", self.apps.delete_namespaced_deployment,
                           namespace, name)

    async def delete_waiting(self, kind: Literal["ReplicaSet", "Pod"], namespace: str, name: str, uid: str) -> None:
        """Delete a ReplicaSet or pod of a Deployment the operator deleted (see writes.left_waiting), only
        if it is still the object of this uid: another of the same name (409) is no error either."""
        call = self.apps.delete_namespaced_replica_set if kind == "ReplicaSet" else self.core.delete_namespaced_pod
        await self._delete(f"{kind} {namespace}/{name}", call, namespace, name, uid)

    async def delete_service(self, namespace: str, name: str) -> None:
        await self._delete(f"Service {namespace}/{name}", self.core.delete_namespaced_service, namespace, name)

    async def _delete(self, what: str, call: ApiCall, namespace: str, name: str, uid: str | None = None) -> None:
        """A delete in the background; gone already (404: the API server lets deletes through to a namespace
        that is gone) is no error, nor, with `uid` (a precondition), another object of the same name (409)."""
        budget = self._wrote("delete")
        try:
            if uid is None:
                await self._call(what, call, name, namespace, propagation_policy="Background", budget=budget)
            else:
                await self._call(what, call, name, namespace, budget=budget,
                                 body={"preconditions": {"uid": uid}, "propagationPolicy": "Background"})
        except ApiError as e:
            if not e.object_gone and not (uid is not None and e.status == 409):
                raise

    async def mark_pod_for_deletion(self, namespace: str, name: str) -> JsonObject | None:
        """Lowest pod-deletion-cost: the ReplicaSet removes this pod first when its type shrinks. Returns
        the pod as patched (None: gone)."""
        budget = self._wrote("mark")
        try:
            return await self._call(f"Pod {namespace}/{name}", self.core.patch_namespaced_pod, name, namespace,
                                    {"metadata": {"annotations": {DELETION_COST: DELETE_FIRST}}},
                                    field_manager=self.field_manager, _content_type=MERGE, budget=budget)
        except ApiError as e:
            if not e.object_gone:
                raise
            return None

    async def patch_falapp_status(self, namespace: str, name: str, status: JsonMapping) -> JsonObject | None:
        """Merge patch of the status subresource; returns the FalApp as patched (None: deleted meanwhile,
        which is not an error)."""
        budget = self._wrote("status")
        try:
            return await self._call(f"FalApp {namespace}/{name} status",
                                    self.custom.patch_namespaced_custom_object_status,
                                    GROUP, VERSION, namespace, "falapps", name, {"status": status},
                                    field_manager=self.field_manager, _content_type=MERGE, budget=budget)
        except ApiError as e:
            if not e.object_gone:
                raise
            return None

    async def patch_machinetype_status(self, name: str, status: JsonMapping) -> JsonObject | None:
        budget = self._wrote("machinetype_status")
        try:
            return await self._call(f"MachineType {name} status", self.custom.patch_cluster_custom_object_status,
                                    GROUP, VERSION, "machinetypes", name, {"status": status},
                                    field_manager=self.field_manager, _content_type=MERGE, budget=budget)
        except ApiError as e:
            if not e.object_gone:
                raise
            return None

    async def post_event(self, involved: JsonMapping, event_type: str, reason: str, message: str) -> None:
        self._wrote("event")
        now = format_time(self.clock.now())
        body = {
            "metadata": {"generateName": f"{involved['name'][:200]}.", "namespace": involved["namespace"]},
            "involvedObject": dict(involved),
            "reason": reason,
            "message": truncate(message),
            "type": event_type,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "source": {"component": self.field_manager},
            "reportingComponent": self.field_manager,
            "reportingInstance": socket.gethostname()[:128],
        }
        await self._call(f"Event about {involved['kind']} {involved['namespace']}/{involved['name']}",
                         self.core.create_namespaced_event, involved["namespace"], body)
