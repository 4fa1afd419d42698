"""How a pod's API object reads as a replica for placement (reconcile/observe.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from falapp_operator.reconcile.observe import pod_view
from tests import builders

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def pod(conditions: list[dict], container_statuses: list[dict] | None = None, node: str | None = "n1") -> dict:
    return builders.pod("p", created="2025-01-01T11:00:00Z", node_name=node, conditions=conditions,
                        container_statuses=container_statuses or [])


SCHEDULED = {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2025-01-01T11:30:00Z"}


def test_bound_since_is_when_it_was_scheduled_not_created() -> None:
    view = pod_view(pod([SCHEDULED]), False, NOW)
    assert view.bound and view.bound_since == datetime(2025, 1, 1, 11, 30, tzinfo=UTC)
    assert view.failing == ""


def test_unscheduled_pod_has_no_bound_since() -> None:
    unschedulable = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                     "lastTransitionTime": "2025-01-01T11:50:00Z", "message": "0/3 nodes are available"}
    view = pod_view(pod([unschedulable], node=None), False, NOW)
    assert view.bound_since is None and view.pending and view.scheduler_message == "0/3 nodes are available"


def test_only_a_bound_pod_can_have_lost_its_node() -> None:
    ready = pod([SCHEDULED, {"type": "Ready", "status": "True"}])
    assert pod_view(ready, False, NOW).ready
    gone = pod_view(ready, False, NOW, node_gone=True)
    assert gone.node_gone and not gone.ready, "on a deleted node it runs nowhere, whatever its status says"
    assert not pod_view(pod([SCHEDULED]), False, NOW).node_gone
    assert not pod_view(pod([], node=None), False, NOW, node_gone=True).node_gone


def test_crash_loop_is_a_failure_with_the_kubelets_message() -> None:
    statuses = [{"name": "app", "state": {"running": {}}},
                {"name": "sidecar", "restartCount": 3, "state": {"waiting": {
                    "reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}}}]
    assert pod_view(pod([SCHEDULED], statuses), False, NOW).failing == (
        "CrashLoopBackOff: back-off 40s restarting failed container")


def test_a_crash_in_an_init_container_counts_too() -> None:
    status = pod([SCHEDULED])
    status["status"]["initContainerStatuses"] = [{"name": "fetch-weights", "restartCount": 5, "state": {
        "waiting": {"reason": "CrashLoopBackOff"}}}]
    assert pod_view(status, False, NOW).failing == "CrashLoopBackOff"


def test_transient_start_troubles_are_left_to_the_startup_timeout() -> None:
    """A first crash or two, an image pull that failed once (a busy registry), a container the runtime
    could not create yet: common on a fresh GPU node, not a failed start."""
    for waiting, restarts in (({"reason": "CrashLoopBackOff"}, 1), ({"reason": "ErrImagePull"}, 0),
                              ({"reason": "ImagePullBackOff"}, 0), ({"reason": "CreateContainerError"}, 0),
                              ({"reason": "ContainerCreating"}, 0)):
        statuses = [{"name": "app", "restartCount": restarts, "state": {"waiting": waiting}}]
        assert pod_view(pod([SCHEDULED], statuses), False, NOW).failing == "", waiting


def test_a_missing_secret_fails_without_a_message_too() -> None:
    statuses = [{"name": "app", "state": {"waiting": {"reason": "CreateContainerConfigError"}}}]
    assert pod_view(pod([SCHEDULED], statuses), False, NOW).failing == "CreateContainerConfigError"
