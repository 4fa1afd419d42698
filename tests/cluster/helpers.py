"""Assertions on what a user sees: where pods landed, what status and events say."""

from __future__ import annotations

from collections import Counter

from falapp_operator.api.names import KARPENTER_NODEPOOL_LABEL
from tests.builders import TYPE_LABEL
from tests.kube import Kubectl, condition, wait_until


def app_pods(kctl: Kubectl, app: str) -> list[dict]:
    return [p for p in kctl.get("pods", None, "-l", f"fal.ai/app={app}")["items"]
            if not p["metadata"].get("deletionTimestamp")]


def ready_by_type(kctl: Kubectl, app: str) -> Counter:
    return Counter(p["metadata"]["labels"][TYPE_LABEL] for p in app_pods(kctl, app)
                   if (c := condition(p, "Ready")) and c["status"] == "True")


def wait_placement(kctl: Kubectl, app: str, want: dict[str, int], timeout: float = 60) -> list[dict]:
    """Wait until exactly `want` (machine type object name -> count) replicas are Ready and no others exist."""
    def placed():
        pods = app_pods(kctl, app)
        ready = Counter(p["metadata"]["labels"][TYPE_LABEL] for p in pods
                        if (c := condition(p, "Ready")) and c["status"] == "True")
        return pods if ready == Counter(want) and len(pods) == sum(want.values()) else None
    return wait_until(placed, timeout=timeout, message=f"{app} placed as {want}")


def wait_condition(kctl: Kubectl, kind: str, name: str, type_: str, status: str = "True",
                   reason: str | None = None, timeout: float = 60) -> dict:
    def check():
        c = condition(kctl.get(kind, name), type_)
        return c if c and c["status"] == status and (reason is None or c.get("reason") == reason) else None
    return wait_until(check, timeout=timeout, message=f"{kind}/{name} {type_}={status} {reason or ''}")


def events_for(kctl: Kubectl, name: str, reason: str | None = None) -> list[dict]:
    items = kctl.get("events", None, "--field-selector", f"involvedObject.name={name},involvedObject.kind=FalApp")
    return [e for e in items["items"] if reason is None or e["reason"] == reason]


def node_of(kctl: Kubectl, pod: dict) -> dict:
    return kctl.get("node", pod["spec"]["nodeName"])


class Sampler:
    """Samples a value in the background (every 0.2 s) while a scenario runs; keeps every sample."""

    def __init__(self, sample):
        import threading
        self._sample = sample
        self.samples: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self._sample())
            except Exception as e:  # a sample that fails (API hiccup) is recorded, not hidden
                self.samples.append(e)
            self._stop.wait(0.2)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def pool_nodes(kctl: Kubectl, pool: str) -> list[dict]:
    """Nodes Karpenter made for NodePool `pool` (not yet being deleted)."""
    return [n for n in kctl.get("nodes", None, "-l", f"{KARPENTER_NODEPOOL_LABEL}={pool}")["items"]
            if not n["metadata"].get("deletionTimestamp")]


def pod_events(kctl: Kubectl, pod: str, source: str | None = None) -> list[dict]:
    """Core events about a pod (Karpenter posts `Nominated` and `FailedScheduling` there), oldest first."""
    selector = f"involvedObject.name={pod},involvedObject.kind=Pod" + (f",source={source}" if source else "")
    items = kctl.get("events", None, "--field-selector", selector)["items"]
    return sorted(items, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
