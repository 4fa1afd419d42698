"""Leader election on a coordination.k8s.io/v1 Lease, as Kubernetes' own controllers do it.

A candidate takes the Lease when it is free, released, or not renewed for `leaseDurationSeconds` since
this candidate last saw it change (its own monotonic clock: no comparison of clocks across machines).
The leader renews it every retry period and counts itself leader only until `renew_deadline` after its
last successful renewal *began*; that is before any candidate may take over (renew deadline < lease
duration), so two processes never write at once. Writes use optimistic concurrency (resourceVersion):
of two candidates racing for a free Lease, one wins.

kubernetes_asyncio's leaderelection module is not used: its calls have no timeout (a hung request keeps a
leader that can no longer renew believing it leads), errors other than an API answer end its loop, and
it writes local wall-clock times as UTC.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

from kubernetes_asyncio import client

from falapp_operator import metrics
from falapp_operator.api import JsonObject, format_micro_time
from falapp_operator.k8s.client import ApiCall, ApiError, KubeApi

logger = logging.getLogger("falapp_operator")
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class LeaseSpec(TypedDict, total=False):
    """The fields of a Lease's spec an election reads and writes (others it keeps as they are)."""

    holderIdentity: str
    leaseDurationSeconds: int
    acquireTime: str
    renewTime: str
    leaseTransitions: int


def default_identity() -> str:
    """The pod name (a pod's host name) plus a random part: a restarted process is a new candidate."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def default_namespace() -> str:
    """In a cluster, the pod's own namespace; elsewhere 'default'."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def _micro_time(api: KubeApi) -> str:
    """Now by the API server's clock, as a MicroTime (shown by kubectl; elections never compare it)."""
    return format_micro_time(api.clock.now())


class LeaderElector:
    def __init__(self, api: KubeApi, name: str, namespace: str, identity: str, lease_duration: float,
                 renew_deadline: float, retry_period: float):
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError("leader election needs retry_period < renew_deadline < lease_duration")
        self.api = api
        self.coordination = client.CoordinationV1Api(api.api_client)
        self.name, self.namespace, self.identity = name, namespace, identity
        self.lease_duration, self.renew_deadline, self.retry_period = lease_duration, renew_deadline, retry_period
        self._leading = False
        self._valid_until = 0.0  # monotonic: the leader writes only before this
        self._held_until = 0.0  # monotonic: no one else may hold the Lease before this
        self._observed_version: str | None = None
        self._observed_at = 0.0  # monotonic: when the Lease was last seen to change
        self.holder: str | None = None  # the holder as last read

    @property
    def what(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    def leading(self) -> bool:
        """True while this process may write: it holds the Lease and its renewal deadline has not passed."""
        return self._leading and time.monotonic() < self._valid_until

    def time_left(self) -> float:
        """Seconds a write sent now has before another candidate may take the Lease over (from the last
        renewal's start, the Lease's duration: 13-15 s with the defaults while renewals succeed)."""
        return max(self._held_until - time.monotonic(), 0.0) if self._leading else 0.0

    async def run(self, on_elected: Callable[[], None]) -> None:
        """Campaign until elected, call `on_elected`, then renew; returns as soon as leadership is lost."""
        logger.info("%s: candidate %s waiting for the leader Lease", self.what, self.identity)
        while True:
            if await self._try_acquire_or_renew():
                break
            await asyncio.sleep(self.retry_period * (1 + 0.2 * random.random()))  # spread candidates' tries
        self._leading = True
        metrics.LEADER.set(1)
        logger.info("%s: %s is the leader", self.what, self.identity)
        try:
            on_elected()
            while True:
                await asyncio.sleep(self.retry_period)
                if not await self._renew():
                    return
        finally:
            self._leading = False
            metrics.LEADER.set(0)

    async def _renew(self) -> bool:
        """Retry renewal until the deadline; False when it passed or another candidate holds the Lease."""
        while True:
            remaining = self._valid_until - time.monotonic()
            if remaining <= 0:
                logger.error("%s: not renewed within %.0fs", self.what, self.renew_deadline)
                return False
            try:
                async with asyncio.timeout(remaining):
                    if await self._try_acquire_or_renew():
                        return True
            except TimeoutError:
                logger.error("%s: renewal did not answer within the %.0fs deadline", self.what, self.renew_deadline)
                return False
            if self.holder not in (None, "", self.identity):
                logger.error("%s: now held by %s", self.what, self.holder)
                return False
            await asyncio.sleep(min(self.retry_period, max(self._valid_until - time.monotonic(), 0)))

    async def _try_acquire_or_renew(self) -> bool:
        started = time.monotonic()  # a renewal counts from when it began: the API may have applied it at once
        try:
            lease = await self._request("read", self.coordination.read_namespaced_lease, self.name, self.namespace)
        except ApiError as e:
            if e.status != 404:
                logger.warning("%s: %s", self.what, e)
                return False
            lease = None
        now = _micro_time(self.api)
        if lease is None:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec({}, now)}
            return await self._write("create", self.coordination.create_namespaced_lease, started,
                                     self.namespace, body)
        spec: LeaseSpec = lease.get("spec") or {}
        self.holder = spec.get("holderIdentity") or ""
        version = lease["metadata"].get("resourceVersion")
        if version != self._observed_version:
            self._observed_version, self._observed_at = version, time.monotonic()
        if self.holder and self.holder != self.identity:
            if self._leading:
                return False  # taken over: this process lost it, whatever its own deadline says
            duration = spec.get("leaseDurationSeconds") or self.lease_duration
            if time.monotonic() < self._observed_at + duration:
                return False
            logger.info("%s: %s did not renew within %ss; taking over", self.what, self.holder, duration)
        return await self._write("replace", self.coordination.replace_namespaced_lease, started, self.name,
                                 self.namespace, {**lease, "spec": self._spec(spec, now)})

    def _spec(self, current: LeaseSpec, now: str) -> LeaseSpec:
        spec: LeaseSpec = {**current, "holderIdentity": self.identity,
                           "leaseDurationSeconds": math.ceil(self.lease_duration), "renewTime": now}
        if current.get("holderIdentity") != self.identity:  # a new holder (on a new Lease: the first)
            spec["acquireTime"] = now
            spec["leaseTransitions"] = current["leaseTransitions"] + 1 if "leaseTransitions" in current else 0
        return spec

    async def _write(self, verb: str, call: ApiCall, started: float, *args: object) -> bool:
        try:
            written = await self._request(verb, call, *args)
        except ApiError as e:
            if e.status == 409:  # another candidate wrote it first (or created it meanwhile)
                logger.debug("%s: %s lost a race: %s", self.what, verb, e)
            else:
                logger.warning("%s: %s", self.what, e)
            return False
        self._observed_version, self._observed_at = written["metadata"].get("resourceVersion"), time.monotonic()
        self.holder = self.identity
        self._valid_until = started + self.renew_deadline
        # no other candidate takes the Lease before its duration has run from when it saw this renewal,
        # which it saw after this process began it: a write answered before then cannot land over theirs.
        # Less half the gap to the renewal deadline: a write the client gave up on may still be carried out
        # by the API server (and the event loop may start a request's timer late)
        self._held_until = started + self.lease_duration - (self.lease_duration - self.renew_deadline) / 2
        return True

    async def _request(self, verb: str, call: ApiCall, *args: object) -> JsonObject:
        return await self.api._object(f"{self.what} ({verb})", call, *args, _request_timeout=self.renew_deadline)

    async def release(self) -> None:
        """On a clean shutdown, after the last write: free the Lease so a candidate takes it at once."""
        self._leading = False
        if time.monotonic() >= self._valid_until:  # never elected, or no longer sure it holds the Lease
            return
        try:
            lease = await self._request("read", self.coordination.read_namespaced_lease, self.name, self.namespace)
            spec: LeaseSpec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            released: LeaseSpec = {**spec, "leaseDurationSeconds": 1, "renewTime": _micro_time(self.api)}
            released.pop("holderIdentity", None)
            await self._request("release", self.coordination.replace_namespaced_lease, self.name, self.namespace,
                                {**lease, "spec": released})
            logger.info("%s: released by %s", self.what, self.identity)
        except ApiError as e:
            logger.warning("%s: could not release it (candidates take it when it expires): %s", self.what, e)
