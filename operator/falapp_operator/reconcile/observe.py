"""What the app's children say, read from their API objects (plain dicts): the planner's inputs.

Pure: the controller feeds it what the watches and LISTs return; the simulator under tests/ feeds it
the objects of its model cluster, so both decide from the same reading of the same fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal, TypeVar

from falapp_operator.api import API_VERSION, JsonMapping, JsonObject, parse_time, parse_time_or_none
from falapp_operator.api.names import (
    APP_LABEL,
    DELETION_COST,
    GROWN_ANNOTATION,
    HASH_ANNOTATION,
    MOVES_ANNOTATION,
    REVISION_LABEL,
    SURGE_ANNOTATION,
    TEMPLATE_ANNOTATION,
    TYPE_LABEL,
    deployment_name,
    service_name,
)
from falapp_operator.api.status import MAX_RECORDED_MOVES
from falapp_operator.placement import PodView, Surge
from falapp_operator.reconcile.children import decode_marks

# managers whose fields on our children are the cluster's own bookkeeping
OWN_STATUS_MANAGERS = frozenset({"kube-controller-manager"})

# what the quota admission plugin says when a namespace's ResourceQuota refuses an object (a ReplicaSet
# reports it as FailedCreate): `pods "x" is forbidden: exceeded quota: gpus, requested: ...`
QUOTA_EXCEEDED = "exceeded quota"
# what the API server says when it refuses a pod for as long as nothing changes (its quota, a ServiceAccount
# not there, Pod Security, a validating webhook's denial, an invalid pod), unlike a webhook it could not call
REFUSED_FOR_GOOD = ("is forbidden", "denied the request", "is invalid")
# ... but for a quota the controller manager has not counted yet (one just made or changed), or the
# ReplicaSet controller's own permission refused (RBAC while an API server restarts): seconds only
NOT_FOR_GOOD = ("status unknown for quota", "cannot create resource")


def refused_for_good(message: str) -> bool:
    """Whether a ReplicaSet's FailedCreate message (the first of the failures it reports in a row: the
    Deployment keeps the condition's message while the failure lasts) is a refusal the next try would get
    too."""
    return not any(words in message for words in NOT_FOR_GOOD) and any(words in message for words in REFUSED_FOR_GOOD)

Body = TypeVar("Body", bound=JsonMapping)  # an object as given: a whole one, or what slim_pod keeps of it


@dataclass
class ChildrenState:
    """Per machine type: the Deployment's size, the replica in flight, and why pods cannot be created."""

    counts: dict[str, int] = field(default_factory=dict)
    surge: Surge | None = None
    cover: Surge | None = None  # the second replica in flight of a held move (see Surge)
    # the controller manager's own reason for not creating pods (quota, admission): type -> message
    replica_failures: dict[str, str] = field(default_factory=dict)
    create_failing: set[str] = field(default_factory=set)  # of those, where creating pods failed (FailedCreate)
    # of those, where the pods were refused for good (refused_for_good), and since when the Deployment
    # has said so
    refused_since: dict[str, datetime] = field(default_factory=dict)
    # when the operator last raised the Deployment's replicas (GROWN_ANNOTATION), where it says so
    grown_at: dict[str, datetime] = field(default_factory=dict)
    # the moves recorded there by the last reconcile that raised it with a move (MOVES_ANNOTATION, as written)
    recorded_moves: dict[str, str] = field(default_factory=dict)


def machine_type_of(obj: JsonMapping) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(TYPE_LABEL)


def controller_uid(obj: JsonMapping) -> str | None:
    """The uid of the object's controlling owner, if any."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((r.get("uid") for r in refs if r.get("controller")), None)


def made_by(pods: Iterable[Body], deployments: Iterable[JsonMapping]) -> list[Body]:
    """The pods these Deployments' ReplicaSets made: controlled by a ReplicaSet named
    `<deployment>-<the pod's pod-template-hash>`. Another pod carrying the app's labels (anyone who may
    create pods can make one) is no replica of the app."""
    names = {d["metadata"]["name"] for d in deployments}
    out: list[Body] = []
    for pod in pods:
        meta = pod["metadata"]
        owner = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
        revision = (meta.get("labels") or {}).get("pod-template-hash", "")
        # a hash is letters and digits: with a '-' in it, a hand-made pod could name another Deployment's
        # ReplicaSet as one of these (`<deployment>-<x>-<y>`)
        if (owner is not None and owner.get("kind") == "ReplicaSet" and revision.isascii() and revision.isalnum()
                and owner.get("name", "").removesuffix(f"-{revision}") in names
                and owner.get("name", "").endswith(f"-{revision}")):
            out.append(pod)
    return out


def children_state(deployments: Iterable[JsonMapping], owner_uid: str | None = None) -> ChildrenState:
    """`owner_uid`: only Deployments this FalApp controls count (another object may carry its labels)."""
    state = ChildrenState()
    for body in deployments:
        type_name = machine_type_of(body)
        if type_name is None or (owner_uid is not None and controller_uid(body) != owner_uid):
            continue
        state.counts[type_name] = (body.get("spec") or {}).get("replicas", 0) or 0
        # one of each is in flight; a mark left on a Deployment whose type was unlisted meanwhile is older
        for mark in decode_marks(type_name, ((body["metadata"].get("annotations") or {}).get(SURGE_ANNOTATION))):
            kept = state.cover if mark.cover else state.surge
            if kept is None or _since(mark) > _since(kept):
                if mark.cover:
                    state.cover = mark
                else:
                    state.surge = mark
        grown_at = parse_time_or_none((body["metadata"].get("annotations") or {}).get(GROWN_ANNOTATION))
        if grown_at is not None:
            state.grown_at[type_name] = grown_at
        if moves := (body["metadata"].get("annotations") or {}).get(MOVES_ANNOTATION):
            state.recorded_moves[type_name] = moves
        for condition in (body.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
                state.replica_failures[type_name] = condition.get("message") or condition.get("reason") or ""
                if condition.get("reason") == "FailedCreate":
                    state.create_failing.add(type_name)
                    since = parse_time_or_none(condition.get("lastTransitionTime"))
                    if refused_for_good(condition.get("message") or "") and since is not None:
                        state.refused_since[type_name] = since
    return state


def pod_view(pod: JsonMapping, scale_up_coming: bool, now: datetime, scale_up_refused: bool = False,
             node_gone: bool = False) -> PodView:
    """`scale_up_coming` / `scale_up_refused`: an autoscaler's latest word on this pod (its events, kept by
    the caller): a node is coming, or none will. `node_gone`: the node it is bound to no longer exists."""
    meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    scheduled = conditions.get("PodScheduled", {})
    unschedulable = _unschedulable(scheduled)
    return PodView(
        name=meta["name"],
        machine_type=(meta.get("labels") or {}).get(TYPE_LABEL, ""),
        created=parse_time(meta.get("creationTimestamp")) or now,
        bound=bool(spec.get("nodeName")),
        gated=bool(spec.get("schedulingGates")),
        bound_since=parse_time(scheduled.get("lastTransitionTime")) if scheduled.get("status") == "True" else None,
        failing=container_failure(status),
        # on a deleted node it runs nowhere, whatever its last status said
        ready=pod_ready(pod) and not (node_gone and spec.get("nodeName")),
        terminating=pod_terminating(pod),
        unschedulable_since=(parse_time(scheduled.get("lastTransitionTime")) or now) if unschedulable else None,
        scheduler_message=scheduled.get("message", "") if unschedulable else "",
        scale_up_coming=bool(status.get("nominatedNodeName")) or scale_up_coming,
        scale_up_refused=scale_up_refused,
        node_gone=node_gone and bool(spec.get("nodeName")),
        template=(meta.get("annotations") or {}).get(TEMPLATE_ANNOTATION, ""),
        revision=(meta.get("labels") or {}).get("pod-template-hash", ""),
    )


def progress_only(old: JsonMapping | None, new: JsonMapping, steady: bool) -> bool:
    """Whether a pod's change (`old`: as held before, None: new; whole or as slim_pod keeps it) is mere
    progress of a replica starting as expected: made and not judged yet, bound, Ready, with nothing else
    that pod_view or made_by reads changed (nor its deletion mark). Such news changes the app's counts,
    not a decision, while the app is `steady` (see Controller._steady: no replica in flight, nothing to
    move back, no condition but starting or running). Anything else is news: unschedulable, an
    autoscaler's word, gated, failing, deleted, no longer Ready, a new template or owner."""
    if not steady:
        return False
    now = pod_view(new, False, EPOCH)
    if old is None:
        return not (now.gated or now.failing or now.terminating or now.unschedulable_since
                    or now.scale_up_coming or _marked(new))
    was = pod_view(old, False, EPOCH)
    return (_still(was) == _still(now) and _marked(old) == _marked(new) and was.bound <= now.bound
            and was.ready <= now.ready and controller_uid(old) == controller_uid(new))


EPOCH = datetime.min.replace(tzinfo=UTC)


def _still(view: PodView) -> PodView:
    """The view but for what moves forward as a replica starts."""
    return replace(view, bound=False, bound_since=None, ready=False)


def _marked(pod: JsonMapping) -> str | None:
    return (pod["metadata"].get("annotations") or {}).get(DELETION_COST)


def pod_terminating(pod: JsonMapping) -> bool:
    """Being deleted, or finished: no replica any more."""
    return bool(pod["metadata"].get("deletionTimestamp")) or (pod.get("status") or {}).get("phase") in (
        "Succeeded", "Failed")


def pod_unschedulable(pod: JsonMapping) -> bool:
    """The scheduler found no node for it (as it last said)."""
    return any(c.get("type") == "PodScheduled" and _unschedulable(c)
               for c in (pod.get("status") or {}).get("conditions") or [])


def _unschedulable(scheduled: JsonMapping) -> bool:
    return scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable"


def pod_ready(pod: JsonMapping) -> bool:
    """The pod's Ready condition is True (as its kubelet last said)."""
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


# a container waiting for one of these will not start by itself: an image name that cannot be pulled
# ever, a missing Secret or ConfigMap key (image pulls and container creation can fail for a while
# on a fresh node; those are left to startupTimeout)
FAILING_REASONS = frozenset({"InvalidImageName", "CreateContainerConfigError"})
CRASH_LOOP_RESTARTS = 3  # one or two quick crashes may be a cold node; three is a crash loop


def container_failure(status: JsonMapping) -> str:
    """Why a container of the pod cannot run, with the kubelet's message ("" if none)."""
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        waiting = (container.get("state") or {}).get("waiting") or {}
        crash_loop = waiting.get("reason") == "CrashLoopBackOff" and (
            container.get("restartCount") or 0) >= CRASH_LOOP_RESTARTS
        if crash_loop or waiting.get("reason") in FAILING_REASONS:
            message = waiting.get("message") or ""
            return f"{waiting['reason']}: {message}" if message else waiting["reason"]
    return ""


def _since(surge: Surge) -> datetime:
    return surge.since or datetime.min.replace(tzinfo=UTC)


# --- what the controller keeps of each object: only the fields read above and in writes.py ---------
# (same shapes as the API's objects, so the functions here take either; the simulator feeds whole ones)

# fields others may set on our children without it being drift (kubectl rollout restart, tools' notes)
FOREIGN_OK = ("f:metadata", "f:status", "f:spec.f:template.f:metadata.f:annotations")


def first_foreign(fields: JsonMapping, prefix: str = "") -> JsonObject | None:
    """A managedFields fieldsV1 set cut to its first leaf (a path such as `f:spec.f:replicas`) outside
    FOREIGN_OK; None when every leaf is inside: another manager's fields that are no drift."""
    for key, sub in fields.items():
        if key == ".":
            continue
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(sub, Mapping) and sub:
            if (found := first_foreign(sub, path)) is not None:
                return {key: found}
        elif not path.startswith(FOREIGN_OK):
            return {key: {}}
    return None


def others_managed_fields(meta: JsonMapping, field_manager: str) -> list[JsonObject]:
    """managedFields entries of other managers than this operator and the cluster's own status
    bookkeeping: whose changes to a child may be drift (see writes.needs_apply)."""
    return [e for e in meta.get("managedFields") or [] if e.get("subresource") != "status"
            and e.get("manager") not in OWN_STATUS_MANAGERS and e.get("manager") != field_manager]


def _pick(values: JsonMapping | None, keys: Iterable[str]) -> JsonObject:
    return {k: values[k] for k in keys if values and k in values}


# how long a value of each annotation the operator writes may be and still be read: anyone who may edit
# an object may make its annotations 256 KiB, which the stores would hold for as long as the object lives
SHORT_ANNOTATION = 256
MARKS_ANNOTATION = 1024  # a move and its cover on one type, each naming a type of up to 63 characters
_CHILD_ANNOTATIONS = {HASH_ANNOTATION: SHORT_ANNOTATION, SURGE_ANNOTATION: MARKS_ANNOTATION,
                      GROWN_ANNOTATION: SHORT_ANNOTATION, MOVES_ANNOTATION: MAX_RECORDED_MOVES}
_POD_ANNOTATIONS = {TEMPLATE_ANNOTATION: SHORT_ANNOTATION, DELETION_COST: SHORT_ANNOTATION}


def _meta(meta: JsonMapping, labels: Iterable[str], annotations: Mapping[str, int]) -> JsonObject:
    """The metadata the reconcile reads; an annotation longer than its limit is left out (no reader would
    take it)."""
    out = _pick(meta, ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
                       "deletionTimestamp"))
    out["labels"] = _pick(meta.get("labels"), labels)
    given = meta.get("annotations") or {}
    out["annotations"] = {k: given[k] for k, limit in annotations.items()
                          if isinstance(given.get(k), str) and len(given[k]) <= limit}
    owner = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
    if owner is not None:
        out["ownerReferences"] = [_pick(owner, ("apiVersion", "kind", "name", "uid", "controller"))]
    return out


def slim_child(body: JsonMapping, field_manager: str, kind: Literal["Deployment", "Service"] = "Deployment",
               known_type: Callable[[str], bool] = lambda _: True) -> JsonObject:
    """A Deployment or Service of an app, as children_state, made_by, name_conflict and needs_apply
    read it; anyone else's only as name_conflict reads it (name and controller: its name is taken),
    also when it carries an app's label without being what the operator makes for that app: a FalApp
    (of this API: the garbage collector deletes one whose FalApp is not there) named as the label says
    its controller, and the name the operator gives it. A move's record is kept on a Deployment of a
    type the catalogue knows (`known_type`) only: a tenant may make such objects for its own app under
    any type's name, which must not cost the operator what a record may hold (MAX_RECORDED_MOVES)."""
    meta = body["metadata"]
    out = {"metadata": _meta(meta, (APP_LABEL, TYPE_LABEL), _CHILD_ANNOTATIONS)}
    labels, annotations = out["metadata"]["labels"], out["metadata"]["annotations"]
    app, type_name = labels.get(APP_LABEL), labels.get(TYPE_LABEL) or ""
    owner = (out["metadata"].get("ownerReferences") or [{}])[0]
    made = service_name(app) if kind == "Service" else deployment_name(app, type_name) if app else None
    if (not app or owner.get("kind") != "FalApp" or owner.get("apiVersion") != API_VERSION
            or owner.get("name") != app or meta.get("name") != made):
        del out["metadata"]["labels"], out["metadata"]["annotations"]
        return out
    if kind == "Service" or not known_type(type_name):
        annotations.pop(MOVES_ANNOTATION, None)
    # of others' fields, only whether one is outside what others may set (see writes.needs_apply)
    out["metadata"]["managedFields"] = [
        {"manager": e.get("manager"), "fieldsV1": foreign} for e in others_managed_fields(meta, field_manager)
        if (foreign := first_foreign(e.get("fieldsV1") or {})) is not None]
    if "replicas" in (body.get("spec") or {}):
        out["spec"] = {"replicas": body["spec"]["replicas"]}
    failures = [_pick(c, ("type", "status", "reason", "message", "lastTransitionTime"))
                for c in (body.get("status") or {}).get("conditions") or [] if c.get("type") == "ReplicaFailure"]
    if failures:
        out["status"] = {"conditions": failures}
    return out


def _container_status(status: JsonMapping) -> JsonObject:
    out = {"restartCount": status.get("restartCount") or 0}
    waiting = (status.get("state") or {}).get("waiting")
    if waiting:
        out["state"] = {"waiting": _pick(waiting, ("reason", "message"))}
    return out


def slim_pod(body: JsonMapping) -> JsonObject:
    """An app's pod, as pod_view, made_by and child_writes read it."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    out_status = _pick(status, ("phase", "nominatedNodeName"))
    out_status["conditions"] = [_pick(c, ("type", "status", "reason", "message", "lastTransitionTime"))
                                for c in status.get("conditions") or [] if c.get("type") in ("PodScheduled", "Ready")]
    for key in ("initContainerStatuses", "containerStatuses"):
        if status.get(key):
            out_status[key] = [_container_status(c) for c in status[key]]
    return {"metadata": _meta(body["metadata"], (APP_LABEL, TYPE_LABEL, REVISION_LABEL), _POD_ANNOTATIONS),
            "spec": _pick(spec, ("nodeName", "schedulingGates")), "status": out_status}


def slim_falapp(body: JsonMapping) -> JsonObject:
    """A FalApp without what the reconcile never reads (managedFields, annotations such as kubectl's
    last-applied copy of the spec)."""
    meta = body["metadata"]
    return {"metadata": _pick(meta, ("name", "namespace", "uid", "resourceVersion", "generation",
                                     "deletionTimestamp")),
            "spec": body.get("spec"), "status": body.get("status")}
