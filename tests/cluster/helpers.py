"""Assertions on what a user sees: where pods landed, what status and events say."""

from __future__ import annotations

from collections import Counter

from tests.kube import Kubectl, condition, wait_until

TYPE_LABEL = "fal.ai/machine-type"


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
