"""How a pod's API object reads as a replica for placement (reconcile/observe.py)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest

from falapp_operator.api.names import APP_LABEL, DELETION_COST, REVISION_LABEL, TEMPLATE_ANNOTATION, TYPE_LABEL
from falapp_operator.reconcile.observe import pod_view, progress_only, slim_pod
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


# --- mere progress or news (progress_only): how long an app's pod event may wait for others ---------

UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "lastTransitionTime": "2025-01-01T11:10:00Z", "message": "0/4 nodes are available"}
RUNNING = [{"name": "app", "restartCount": 0, "state": {"running": {}}}]
CRASHING = [{"name": "app", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]


def made(**changes: object) -> dict:
    """A replica's pod just made by its ReplicaSet (labels and annotations as the operator's template)."""
    body = builders.pod("p", created="2025-01-01T11:00:00Z", phase="Pending",
                        labels={APP_LABEL: "llm", TYPE_LABEL: "gpu-h100", REVISION_LABEL: "r1"})
    body["metadata"]["annotations"] = {TEMPLATE_ANNOTATION: "t1"}
    body["metadata"]["ownerReferences"] = [{"kind": "ReplicaSet", "name": "llm-r1", "uid": "rs-1", "controller": True}]
    for path, value in changes.items():
        where, key = {"node": ("spec", "nodeName"), "nominated": ("status", "nominatedNodeName"),
                      "gates": ("spec", "schedulingGates"), "phase": ("status", "phase")}[path]
        body[where][key] = value
    return body


def with_conditions(body: dict, *conditions: dict, statuses: list[dict] | None = None) -> dict:
    body = copy.deepcopy(body)
    body["status"]["conditions"] = list(conditions)
    if statuses is not None:
        body["status"]["containerStatuses"] = statuses
    return body


def annotated(body: dict, **annotations: str) -> dict:
    body = copy.deepcopy(body)
    body["metadata"]["annotations"] = {**body["metadata"]["annotations"], **annotations}
    return body


PENDING = made()
BOUND = with_conditions(made(node="n1"), SCHEDULED)
READY = with_conditions(made(node="n1", phase="Running"), SCHEDULED, {"type": "Ready", "status": "True"},
                        statuses=RUNNING)
STUCK = with_conditions(PENDING, UNSCHEDULABLE)
DELETING = copy.deepcopy(READY)
DELETING["metadata"]["deletionTimestamp"] = "2025-01-01T11:40:00Z"

ORPHANED = copy.deepcopy(READY)
ORPHANED["metadata"]["ownerReferences"] = []

PROGRESS_CASES = [
    # (what happened, held before (None: new), now, the app steady, mere progress)
    ("made, not judged yet", None, PENDING, True, True),
    ("bound", PENDING, BOUND, True, True),
    ("Ready", BOUND, READY, True, True),
    ("made, bound and Ready between two events", PENDING, READY, True, True),
    ("nothing the reconcile reads", READY, copy.deepcopy(READY), True, True),
    ("first seen Ready", None, READY, True, True),
    ("Ready while the app moves a replica, is off its preferred type or short of room", BOUND, READY, False, False),
    ("bound while the app is not steady", PENDING, BOUND, False, False),
    ("made while the app is not steady", None, PENDING, False, False),
    ("new and already unschedulable (seen late)", None, STUCK, True, False),
    ("new and gated", None, made(gates=[{"name": "queue"}]), True, False),
    ("new and marked to go first", None, annotated(PENDING, **{DELETION_COST: "-1000"}), True, False),
    ("unschedulable", PENDING, STUCK, True, False),
    ("the scheduler's word changed", STUCK, with_conditions(PENDING, {**UNSCHEDULABLE, "message": "0/5 nodes"}),
     True, False),
    ("unschedulable, then bound", STUCK, BOUND, True, False),
    ("an autoscaler nominated a node", PENDING, made(nominated="n9"), True, False),
    ("no longer Ready", READY, with_conditions(READY, SCHEDULED, {"type": "Ready", "status": "False"}), True, False),
    ("crash-looping", BOUND, with_conditions(BOUND, SCHEDULED, statuses=CRASHING), True, False),
    ("being deleted", READY, DELETING, True, False),
    ("finished", READY, made(node="n1", phase="Failed"), True, False),
    ("marked to go first", READY, annotated(READY, **{DELETION_COST: "-1000"}), True, False),
    ("a new template", READY, annotated(READY, **{TEMPLATE_ANNOTATION: "t2"}), True, False),
    ("released by its ReplicaSet", READY, ORPHANED, True, False),
]


@pytest.mark.parametrize(("old", "new", "steady", "expected"), [case[1:] for case in PROGRESS_CASES],
                         ids=[case[0] for case in PROGRESS_CASES])
def test_mere_progress_is_told_from_news(old: dict | None, new: dict, steady: bool, expected: bool) -> None:
    assert progress_only(old, new, steady) is expected
    # the controller holds a slim copy of what it saw last, and the watch brings the whole pod
    assert progress_only(None if old is None else slim_pod(old), new, steady) is expected
    assert progress_only(None if old is None else slim_pod(old), slim_pod(new), steady) is expected
