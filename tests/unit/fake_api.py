"""A small Kubernetes API server for unit tests: an aiohttp server on loopback that the operator's real
client (k8s/client.py, kubernetes_asyncio) talks to. It keeps objects by path and answers GET, LIST
(paged, label selector `k=v`), server-side apply, merge patches (also of the status subresource),
DELETE, POST (create) and PUT (replace, refused on a stale resourceVersion). It records every request
(method, path, query, content type, body), and answers with a Kubernetes Status error (or late) where
a test asks for it. A watch streams the events a test gives it, and ends.

Not a model of the API server's semantics beyond what the operator's writes need: no admission, no
field ownership (apply replaces the object's spec as sent), no garbage collection.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes_asyncio import client

from falapp_operator.k8s.client import APPLY, MERGE, KubeApi, api_client

FIELD_MANAGER = "falapp-operator"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str]
    content_type: str
    body: Any

    @property
    def field_manager(self) -> str | None:
        return self.query.get("fieldManager")

    @property
    def force(self) -> bool:
        return self.query.get("force", "").lower() == "true"  # kubernetes_asyncio sends "True"

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class Scripted:
    method: str
    path: str  # the request's path ends with this
    status: int  # 0: answered as usual, after `delay`
    message: str
    reason: str
    times: int
    delay: float = 0.0
    kind: str = ""  # the answer's details.kind: what it is about


# the reasons the API server gives with these codes
REASONS = {403: "Forbidden", 404: "NotFound", 409: "Conflict", 410: "Expired", 422: "Invalid",
           429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


def is_collection(path: str) -> bool:
    """/api/v1/pods, /api/v1/namespaces/ns/pods, /apis/g/v/falapps: a collection; else an object (or its
    subresource)."""
    parts = path.strip("/").split("/")
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    return len(rest) == 1 or (len(rest) == 3 and rest[0] == "namespaces")


def status_body(code: int, reason: str, message: str, kind: str = "") -> dict:
    """A Kubernetes Status, as the API server answers an error (`kind`: what it is about, as details say)."""
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    return body | {"details": {"kind": kind}} if kind else body


def merge(target: Any, patch: Any) -> Any:
    """An RFC 7386 JSON merge patch of `target`."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def collection_of(path: str) -> tuple[str, str]:
    """(collection path, object name) of an object's path: /api/v1/namespaces/ns/pods/p -> (…/pods, p)."""
    head, _, name = path.rpartition("/")
    return head, name


@dataclass
class FakeApiServer:
    objects: dict[str, dict] = field(default_factory=dict)  # object path -> object
    requests: list[Request] = field(default_factory=list)
    # collection path -> what its watches stream, one list of events per watch request; once they are
    # used up, a watch stays open with nothing to say until the server stops
    watches: dict[str, list[list[dict]]] = field(default_factory=dict)
    _scripted: list[Scripted] = field(default_factory=list)
    _rv: itertools.count = field(default_factory=lambda: itertools.count(100))
    _generated: itertools.count = field(default_factory=itertools.count)  # generateName's suffixes: never twice

    # --- what tests set up and read ---------------------------------------------------------------
    def fail(self, method: str, path: str, status: int, message: str = "", reason: str = "",
             times: int = 1, after: float = 0.0, kind: str = "") -> None:
        """Answer the next `times` requests `method` whose path ends with `path` with an error Status
        (`after` seconds; `kind`: the kind of object it says it is about)."""
        self._scripted.append(Scripted(method, path, status, message or f"scripted {status}",
                                       reason or REASONS.get(status, "Unknown"), times, after, kind))

    def slow(self, method: str, path: str, seconds: float, times: int = 1) -> None:
        """Answer the next `times` requests `method` whose path ends with `path` only after `seconds`."""
        self._scripted.append(Scripted(method, path, 0, "", "", times, seconds))

    def put(self, path: str, body: Mapping) -> dict:
        """Store an object as if someone created it; returns it as stored (uid, resourceVersion set)."""
        stored: dict = copy.deepcopy(dict(body))
        meta = stored.setdefault("metadata", {})
        meta.setdefault("uid", f"uid-{collection_of(path)[1]}")
        meta["resourceVersion"] = str(next(self._rv))
        meta.setdefault("generation", 1)
        self.objects[path] = stored
        return copy.deepcopy(stored)

    def writes(self) -> list[str]:
        """`METHOD path` of every request but reads, in order."""
        return [str(r) for r in self.requests if r.method != "GET"]

    # --- serving ----------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        content_type = request.headers.get("Content-Type", "").split(";")[0]
        recorded = Request(request.method, request.path, dict(request.query), content_type, body)
        self.requests.append(recorded)
        for scripted in self._scripted:
            if scripted.method == request.method and request.path.endswith(scripted.path) and scripted.times:
                scripted.times -= 1
                await asyncio.sleep(scripted.delay)
                if scripted.status:
                    return self._error(scripted.status, scripted.reason, scripted.message, scripted.kind)
                break
        if request.method == "GET" and request.query.get("watch", "").lower() == "true":
            return await self._watch(request)
        if request.method == "GET":
            if is_collection(request.path):
                return self._list(request)
            if request.path in self.objects:
                return web.json_response(self.objects[request.path])
            return self._not_found(request.path)
        if request.method == "PATCH":
            return self._patch(recorded)
        if request.method == "DELETE":
            if self.objects.pop(request.path, None) is None:
                return self._not_found(request.path)
            return web.json_response(status_body(200, "", "deleted") | {"status": "Success"})
        if request.method == "POST" and isinstance(body, dict):
            name = body["metadata"].get("name") or f"{body['metadata'].get('generateName', 'x')}{next(self._generated)}"
            if f"{request.path}/{name}" in self.objects:
                return self._error(409, "AlreadyExists", f'{request.path.rpartition("/")[2]} "{name}" already exists')
            stored = self.put(f"{request.path}/{name}", merge(body, {"metadata": {"name": name}}))
            return web.json_response(stored, status=201)
        if request.method == "PUT" and isinstance(body, dict):
            current = self.objects.get(request.path)
            if current is None:
                return self._not_found(request.path)
            sent = body["metadata"].get("resourceVersion")
            if sent and sent != current["metadata"]["resourceVersion"]:  # optimistic concurrency
                name = collection_of(request.path)[1]
                return self._error(409, "Conflict", f'Operation cannot be fulfilled on "{name}": the object has '
                                   "been modified; please apply your changes to the latest version and try again")
            return web.json_response(self.put(request.path, body))
        return self._error(405, "MethodNotAllowed", f"{request.method} is not served here")

    def _patch(self, request: Request) -> web.Response:
        path, subresource = request.path, None
        if path.endswith("/status"):
            path, subresource = path.removesuffix("/status"), "status"
        current = self.objects.get(path)
        if request.content_type == APPLY:
            if subresource is not None:
                return self._error(415, "UnsupportedMediaType", "apply of a subresource is not served here")
            created = current is None
            stored = copy.deepcopy(request.body)
            if current is not None:
                stored["metadata"] = {**current["metadata"], **stored["metadata"]}
                stored["metadata"]["generation"] = current["metadata"].get("generation", 1) + (
                    stored.get("spec") != current.get("spec"))
                if "status" in current:
                    stored["status"] = current["status"]
            answer = self.put(path, stored)
            return web.json_response(answer, status=201 if created else 200)
        if request.content_type != MERGE:
            return self._error(415, "UnsupportedMediaType", f"{request.content_type} is not served here")
        if current is None:
            return self._not_found(path)
        patch = request.body
        if subresource == "status":
            patch = {"status": patch.get("status")}
        else:
            patch = {k: v for k, v in patch.items() if k != "status"}
        answer = self.put(path, merge(current, patch))
        return web.json_response(answer)

    def _list(self, request: web.Request) -> web.Response:
        collection = request.path
        wanted = dict(term.split("=", 1) for term in request.query.get("labelSelector", "").split(",") if term)
        items = []
        for path, body in self.objects.items():
            head, _ = collection_of(path)
            parts, want = head.split("/"), collection.split("/")
            # all namespaces: /api/v1/pods lists /api/v1/namespaces/*/pods/*
            in_collection = head == collection or (
                len(parts) == len(want) + 2 and parts[-3] == "namespaces" and parts[:-3] == want[:-1]
                and parts[-1] == want[-1])
            labels = (body.get("metadata") or {}).get("labels") or {}
            if in_collection and all(labels.get(k) == v for k, v in wanted.items()):
                items.append(body)
        start = int(request.query.get("continue") or 0)
        limit = int(request.query.get("limit") or 0) or len(items) or 1
        page = items[start:start + limit]
        token = str(start + limit) if start + limit < len(items) else None
        return web.json_response({"kind": "List", "apiVersion": "v1", "items": page,
                                  "metadata": {"resourceVersion": "99", **({"continue": token} if token else {})}})

    async def _watch(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        batches = self.watches.get(request.path) or []
        if not batches:
            await asyncio.Event().wait()  # cancelled when the server stops
        for event in batches.pop(0):
            await response.write(json.dumps(event).encode() + b"\n")
        await response.write_eof()
        return response

    def _not_found(self, path: str) -> web.Response:
        head, name = collection_of(path)
        resource = head.rpartition("/")[2]
        return self._error(404, "NotFound", f'{resource} "{name}" not found', resource)

    @staticmethod
    def _error(code: int, reason: str, message: str, kind: str = "") -> web.Response:
        return web.json_response(status_body(code, reason, message, kind), status=code)


@asynccontextmanager
async def listening(fake: FakeApiServer) -> AsyncIterator[TestServer]:
    """The fake server on a loopback port."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@asynccontextmanager
async def serving(fake: FakeApiServer | None = None) -> AsyncIterator[tuple[FakeApiServer, KubeApi]]:
    """The fake server on a loopback port, and the operator's client pointed at it."""
    fake = fake or FakeApiServer()
    async with listening(fake) as server:
        configuration = client.Configuration(host=str(server.make_url("")).rstrip("/"))
        api = KubeApi(api_client(configuration), FIELD_MANAGER)  # as load_config makes it
        try:
            yield fake, api
        finally:
            await api.close()
