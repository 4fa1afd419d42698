"""The writes one reconcile makes, in order, from its plan and the children as they are now. Pure.

Order matters for availability: grow first (the replacement starts sooner), then mark the pods to go,
then shrink; the status last, so it never claims what was not written. Only the history of the moves
about to be written goes first: a crash half-way must not make the next reconcile forget a move. It
rides on the plan's first write when that is a Deployment it grows (one write, and the replacement
waits on nothing); otherwise it is written into the status first (a refused write then leaves a move
in the history that did not happen; the retry records it again).
The controller performs them one by one and stops at the first the API refuses; the simulator under
tests/ performs them on its model cluster and may crash between any two.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from falapp_operator.api import JsonMapping
from falapp_operator.api.names import DELETE_FIRST, DELETION_COST, HASH_ANNOTATION, deployment_name
from falapp_operator.reconcile import children
from falapp_operator.reconcile.app import AppPlan
from falapp_operator.reconcile.observe import controller_uid, first_foreign, made_by, others_managed_fields

Ref = tuple[str, str]  # an object's name and uid

@dataclass(frozen=True)
class Write:
    kind: Literal["history", "apply", "mark", "resize_unlisted", "delete_deployment"]
    name: str  # object name (pod name for "mark")
    # "apply": the desired object; "resize_unlisted", "history" (of the FalApp's status): a merge patch
    body: JsonMapping | None = None
    create: bool = False  # "apply" of an object not there when planned: no force (a conflict, not a takeover)
    grows: bool = False  # "apply" of a Deployment asking for more replicas than it has (a template change: no)

    @property
    def urgent(self) -> bool:
        """A replacement waits on it: a move's history, a Deployment that grows (when many apps move at
        once, these go first; see k8s/gate.py)."""
        return self.kind == "history" or (self.kind == "apply" and self.grows)


def child_writes(plan: AppPlan, ref: children.AppRef, deployments: Sequence[JsonMapping],
                 pods: Sequence[JsonMapping], field_manager: str, applied: Mapping[str, str] | None = None,
                 status: JsonMapping | None = None) -> list[Write]:
    """The history of the plan's moves (into the app's status, unless the first Deployment it grows
    carries it), then Deployment and pod writes: growths, marks, shrinks, then the rest (a move's mark
    is cleared after its origin shrank: a stop in between leaves no replica unexplained); the Service
    and the full status are the caller's last steps. `applied`: object name -> its version right after
    this operator's last apply (see needs_apply); `status`: the app's status now."""
    applied = applied or {}
    live = {d["metadata"]["name"]: d for d in deployments}
    marked = {p["metadata"]["name"] for p in pods
              if (p["metadata"].get("annotations") or {}).get(DELETION_COST) == DELETE_FIRST}
    changed = [d for d in plan.deployments if (current := live.get(d["metadata"]["name"])) is None
               or needs_apply(current, d, field_manager, applied.get(d["metadata"]["name"]))]
    growing = [d for d in changed if d["spec"]["replicas"] > _replicas(live.get(d["metadata"]["name"]))]
    shrinking = [d for d in changed if d["spec"]["replicas"] < _replicas(live.get(d["metadata"]["name"]))]
    history = plan.history.to_patch() if plan.history is not None else None
    rides = bool(growing) and growing[0]["metadata"]["name"] in plan.history_on
    writes = [Write("history", ref.name, history)] if (history and not rides
                                                       and status_changed(status or {}, history)) else []
    writes += [Write("apply", d["metadata"]["name"], d, create=d["metadata"]["name"] not in live, grows=True)
               for d in growing]
    writes += [Write("mark", name) for name in plan.mark_for_deletion if name not in marked]
    writes += [Write("apply", d["metadata"]["name"], d) for d in shrinking]
    writes += [Write("apply", d["metadata"]["name"], d) for d in changed if d not in growing and d not in shrinking]
    writes += [Write("resize_unlisted", deployment_name(ref.name, t), children.resize_patch(n))
               for t, n in plan.rescale_unlisted.items()]
    writes += [Write("delete_deployment", deployment_name(ref.name, t)) for t in plan.delete_deployments]
    return writes


def left_waiting(pods: Iterable[JsonMapping], deployment: str) -> tuple[list[Ref], list[Ref]]:
    """Of an app's pods, those the Deployment `deployment` (being deleted) made that no node runs, as
    (name, uid), and the ReplicaSets controlling them: the operator deletes them itself, the ReplicaSets
    first (they would replace the pods), rather than leave them to the garbage collector. Meanwhile the
    scheduler would try each (a failed attempt costs it a status write and an Event) before the
    replacements on the next type queued behind them, and their claims would hold room. Pods a node runs
    stay the garbage collector's, as before (the chart's policy lets the operator delete no such pod), and
    so does whatever this misses (a pod made after the view, a refusal)."""
    waiting = [p for p in made_by(pods, [{"metadata": {"name": deployment}}])
               if not (p.get("spec") or {}).get("nodeName")]
    owners = {(r["name"], r["uid"]) for p in waiting for r in p["metadata"].get("ownerReferences") or []
              if r.get("controller") and r.get("uid")}
    return sorted(owners), sorted((p["metadata"]["name"], p["metadata"]["uid"]) for p in waiting)


def name_conflict(kind: str, live: JsonMapping | None, ref: children.AppRef) -> str | None:
    """Why the child `live` (None: absent) must not be written for app `ref`: it exists and is not
    controlled by this FalApp (another app's, or an object of its own: applying would take it over)."""
    if live is None or controller_uid(live) == ref.uid:
        return None
    meta = live["metadata"]
    owner = next((r for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
    by = f"{owner.get('kind')} {owner.get('name')}" if owner else "nothing (not created by this FalApp)"
    return (f"{kind} {meta.get('namespace')}/{meta['name']} already exists and is "
            f"controlled by {by}: rename the FalApp or remove that object")


def status_changed(current: JsonMapping, desired: JsonMapping) -> bool:
    return any(current.get(k) != v for k, v in desired.items())


def counts_only(current: JsonMapping, desired: JsonMapping) -> bool:
    """The status patch changes numbers and messages, not its meaning: the same generation observed, every
    condition with the status and reason it had (Ready=False ReplicasNotReady turning InsufficientCapacity
    is news), the same attempts and probes (a replica Ready more or less)."""
    return (current.get("observedGeneration") == desired.get("observedGeneration")
            and _turns(current) == _turns(desired)
            and all(current.get(k) == desired.get(k) for k in ("attempts", "probes") if k in desired))


# The conditions of a new app whose replicas are starting where it prefers: nothing yet that someone
# must hear of at once (see first_sight).
STARTING = {"Ready": ("False", "ReplicasNotReady"), "Reconciling": ("True", "ReplicasNotReady"),
            "Stalled": ("False", "SpecValid"), "FallbackActive": ("False", "OnPreferred")}


def first_sight(current: JsonMapping, desired: JsonMapping) -> bool:
    """The patch is a new app's first status and says only that its replicas are starting where it prefers.
    Until it is written the app shows the CRD's default status (observedGeneration 0), which kstatus
    (Helm --wait, Flux, Argo CD) reads as InProgress, as it would read this patch: so under load it may
    take its turn like counts, and an app Ready before its turn costs one status write, not two. A new
    app that falls back, fails, or is refused is news, written at once. So is the first status of an app
    with no status at all (a CRD installed without the default): kstatus would read it as Current."""
    if current.get("observedGeneration") != 0 or current.get("conditions"):
        return False
    return (not desired.get("attempts") and not desired.get("probes")
            and all(STARTING.get(kind) == turn for kind, turn in _turns(desired).items()))


def _turns(status: JsonMapping) -> dict[str, tuple[str, str]]:
    """Each condition's status and reason: what a status says, apart from its numbers and messages."""
    return {c.get("type", ""): (c.get("status", ""), c.get("reason", "")) for c in status.get("conditions") or []}


def _replicas(deployment: JsonMapping | None) -> int:
    replicas: int = 0 if deployment is None else (deployment.get("spec") or {}).get("replicas", 0)
    return replicas


def object_version(obj: JsonMapping) -> str:
    """What changes when someone changes the object: its generation, else its resourceVersion."""
    meta = obj.get("metadata") or {}
    return str(meta["generation"]) if meta.get("generation") else f"rv{meta.get('resourceVersion', '')}"


def needs_apply(current: JsonMapping, desired: JsonMapping, field_manager: str,
                applied_version: str | None = None) -> bool:
    """Apply when our desired object changed, or someone else changed a field we set (kubectl edit,
    kubectl scale). Others' notes (a rollout restart's annotation, labels, status) are left alone,
    and so is what another manager added after our last apply (`applied_version`: the object's
    version right after it): applying again could not take it away, only write in a loop."""
    meta = current["metadata"]
    if (meta.get("annotations") or {}).get(HASH_ANNOTATION) != desired["metadata"]["annotations"][HASH_ANNOTATION]:
        return True
    if applied_version is not None and object_version(current) == applied_version:
        return False
    for entry in others_managed_fields(meta, field_manager):
        if first_foreign(entry.get("fieldsV1") or {}) is not None:
            return True
    return False
