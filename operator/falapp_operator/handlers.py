"""kopf registrations only: every handler hands its event to the controller and returns nothing."""

from __future__ import annotations

import kopf
from prometheus_client import start_http_server

from falapp_operator.api import GROUP, VERSION
from falapp_operator.k8s.cache import APP_LABEL, SCALE_UP_REASONS
from falapp_operator.k8s.client import KubeApi, load_config
from falapp_operator.k8s.controller import Controller
from falapp_operator.settings import OperatorSettings

OWNED = {APP_LABEL: kopf.PRESENT}


class NoDiffBase(kopf.DiffBaseStorage):
    """Only event handlers are registered, so kopf never needs a diff base: skip its deep copy of
    every watched body (a tenth of the CPU during bursts of pod events)."""

    def build(self, *, body, extra_fields=None):
        return {}

    def fetch(self, *, body):
        return None

    def store(self, *, body, patch, essence) -> None:
        return None


@kopf.on.login()
def login(**kwargs):
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_) -> None:
    config = OperatorSettings()
    settings.posting.level = 30  # kopf's own events only for warnings and errors
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="fal.ai")
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.persistence.finalizer = "fal.ai/operator"
    api = KubeApi(await load_config(), config.field_manager)
    controller = Controller(api, config)
    await controller.start()
    memo.controller = controller
    if config.metrics_port:
        start_http_server(config.metrics_port)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_) -> None:
    controller: Controller | None = getattr(memo, "controller", None)
    if controller is not None:
        await controller.stop()
        await controller.api.close()


@kopf.on.probe(id="queue")
def queue_depth(memo: kopf.Memo, **_) -> int:
    return len(memo.controller.queue)


@kopf.on.event(GROUP, VERSION, "falapps")
async def falapp_event(namespace: str, name: str, body: kopf.Body, memo: kopf.Memo, **_) -> None:
    meta = body.get("metadata", {})
    memo.controller.app_event(namespace, name, generation=meta.get("generation"), uid=meta.get("uid", ""))


@kopf.on.event(GROUP, VERSION, "machinetypes")
async def machinetype_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_) -> None:
    memo.controller.machinetype_event(body, deleted=type == "DELETED")


@kopf.on.event("", "v1", "nodes")
async def node_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_) -> None:
    memo.controller.node_event(body, deleted=type == "DELETED")


@kopf.on.event("", "v1", "pods")
async def pod_event(body: kopf.Body, type: str | None, memo: kopf.Memo, **_) -> None:
    memo.controller.pod_event(body, deleted=type == "DELETED")


@kopf.on.event("", "v1", "events", when=lambda body, **_: body.get("reason") in SCALE_UP_REASONS)
async def autoscaler_event(body: kopf.Body, memo: kopf.Memo, **_) -> None:
    memo.controller.scale_signal_event(body)


@kopf.on.event("apps", "v1", "deployments", labels=OWNED)
@kopf.on.event("", "v1", "services", labels=OWNED)
async def child_event(body: kopf.Body, memo: kopf.Memo, **_) -> None:
    memo.controller.child_event(body)
