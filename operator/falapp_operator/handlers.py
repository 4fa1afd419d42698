"""kopf registrations: start-up (the API client, the metrics server, leader election), the probe and the
clean-up; kopf watches nothing itself (its scan of the cluster's resources is off).

The controller watches the machine-type catalogue and every namespace, node and pod of the cluster
(read-only, whatever namespaces FalApps are watched in: free room counts other namespaces' pods too),
Karpenter's NodePools while their CRD is there, and FalApps, their Deployments and Services, and the
autoscalers' Events where FalApps are managed (k8s/informer.py): from its start's LISTs on, listing
again when a version expires, with no task per object as kopf keeps (2000 nodes' heartbeats come at
once). It keeps slim copies for the reconciles, knows when its first LISTs are complete, compares
versions with its own writes, and lets the API server filter Events by reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

import kopf
from prometheus_client import start_http_server

from falapp_operator import metrics
from falapp_operator.k8s.client import PAGE, KubeApi, load_config, watch_timeout
from falapp_operator.k8s.controller import Controller
from falapp_operator.k8s.leader import LeaderElector, default_identity, default_namespace
from falapp_operator.settings import OperatorSettings

logger = logging.getLogger("falapp_operator")

# kopf passes every handler its keyword arguments (which differ by handler kind); each takes the ones it
# uses by name and leaves the rest in **_.
@kopf.on.login()
def login(settings: kopf.OperatorSettings, **kwargs: object) -> kopf.ConnectionInfo | None:
    return (kopf.login_with_service_account(settings=settings, **kwargs)
            or kopf.login_with_kubeconfig(settings=settings, **kwargs))


# a start the API refuses (or that failed to answer) is run again in 10 s, not kopf's default minute
@kopf.on.startup(backoff=10)
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: object) -> None:
    config = OperatorSettings()
    settings.posting.level = 30  # kopf's own events only for warnings and errors
    # kopf handles no resource (it has no finalizer, annotation or diff base to keep): no watch of every
    # CRD (and, for given namespaces, every namespace) to notice resources come and go, only its one
    # discovery at the start. Were it to watch: renewed every 5-10 minutes (one draw per process)
    settings.scanning.disabled = True
    settings.watching.server_timeout = watch_timeout(300)
    settings.watching.client_timeout = settings.watching.server_timeout + 30
    settings.watching.chunk_size = PAGE  # kopf's initial LISTs are paged too
    api = KubeApi(await load_config(), config.field_manager, config.api_request_timeout)
    controller = Controller(api, config)
    try:
        await controller.start()  # reads only; its watches start once every LIST has answered
        if config.metrics_port:  # once started: a scrape that answers means the caches are full
            start_http_server(config.metrics_port)  # (a port in use fails the start)
    except BaseException:
        # kopf runs a failed startup again, with a new controller and client: neither this one's watches
        # nor its connections left running beside them (the start's own error is the one to show)
        try:
            with contextlib.suppress(Exception):
                await controller.stop()
        finally:
            with contextlib.suppress(Exception):
                await api.close()
        raise
    memo.controller = controller
    if not config.leader_elect:
        metrics.LEADER.set(1)
        controller.lead()
        return
    elector = LeaderElector(api, config.leader_election_name, config.leader_election_namespace or default_namespace(),
                            config.leader_election_identity or default_identity(), config.lease_duration,
                            config.renew_deadline, config.retry_period)
    api.may_write = elector.leading  # every write is refused unless this process leads, at that moment
    api.leading_for = elector.time_left  # and must be answered while it still does
    settings.posting.enabled = False  # kopf's own events too
    memo.elector = elector
    memo.election = asyncio.create_task(_lead(elector, controller, settings, memo), name="falapp-leader-election")


async def _lead(elector: LeaderElector, controller: Controller, settings: kopf.OperatorSettings,
                memo: kopf.Memo) -> None:
    """Reconcile while leading. Leadership lost: writes stop at once (the fence), then the process exits
    so it comes back as a fresh candidate with fresh caches (a Deployment restarts the container)."""
    def elected() -> None:
        settings.posting.enabled = True
        controller.lead()
    try:
        await elector.run(elected)
    except Exception:
        logger.exception("leader election failed")
    logger.error("no longer the leader (Lease %s/%s): exiting", elector.namespace, elector.name)
    memo.lost_leadership = True
    await controller.stop()
    stop = getattr(memo, "stop", None)  # kopf stops as on SIGTERM (see __main__)
    if stop is not None:
        stop.set()
    else:  # run by `kopf run` rather than our entry point
        os.kill(os.getpid(), signal.SIGTERM)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: object) -> None:
    controller: Controller | None = getattr(memo, "controller", None)
    if controller is not None:  # first, while still leading: no reconcile finds the fence shut mid-way
        await controller.stop()
    election: asyncio.Task[None] | None = getattr(memo, "election", None)
    if election is not None and not election.done():
        election.cancel()
        await asyncio.gather(election, return_exceptions=True)
    if controller is not None:
        elector: LeaderElector | None = getattr(memo, "elector", None)
        if elector is not None:  # after the last write: a candidate takes over without waiting for expiry
            await elector.release()
        await controller.api.close()


def _controller(memo: kopf.Memo) -> Controller:
    """The controller `startup` keeps in the memo (whose attributes kopf types as Any)."""
    controller: Controller = memo.controller
    return controller


@kopf.on.probe(id="queue")
def queue_depth(memo: kopf.Memo, **_: object) -> int:
    return len(_controller(memo).queue)
