"""One reconcile of one FalApp against the world's objects, assembled as `Controller.reconcile_app` does.

Everything the operator decides comes from its own code: `ClusterCache` for free room per node,
`ClaimTally` and `after_shapes` for other apps' pending pods, `children_state` and `pod_view` for the snapshot, `plan`
for the decision, `child_writes` for the ordered writes, `status_changed` for the status write (last).
The only mirrored piece is `free_for` (AppAsks.free_for over `ClusterCache.free_of_type`), minus
the controller's short-lived "expected replicas" claims: in the model the Deployment controller
creates an app's pods right after the app's writes, before the next app is reconciled, so the pods
themselves are the claims.

The operator keeps no memory between reconciles: each one reads the world afresh, so a crash after k
writes leaves exactly what those k writes did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from falapp_operator.api import DEFAULT_CATALOG, FalAppSpec, FalAppStatus, MachineType
from falapp_operator.api.names import DELETE_FIRST, TYPE_LABEL
from falapp_operator.k8s.cache import COMING, ClusterCache
from falapp_operator.k8s.nodeless import NodelessTimes
from falapp_operator.placement import NodeFree, after_shapes
from falapp_operator.placement.eligibility import candidate_types
from falapp_operator.reconcile import children
from falapp_operator.reconcile.app import AppPlan, AppSnapshot, plan
from falapp_operator.reconcile.observe import children_state, made_by, pod_view, slim_child, slim_pod
from falapp_operator.reconcile.writes import Write, child_writes, status_changed
from tests.sim.objects import NAMESPACE
from tests.sim.world import World

FIELD_MANAGER = "falapp-operator"
CATALOGUE: list[MachineType] = list(DEFAULT_CATALOG)
UNOBSERVED_STATUS = {"observedGeneration": 0}  # the CRD's structural default, before the first write
STATUS = Write("apply", "<status>")  # stands for the status write in an Outcome's list


@dataclass
class App:
    """A FalApp object: the spec as written, its generation and the status the operator wrote."""

    name: str
    spec: dict
    generation: int = 1
    status: dict = field(default_factory=lambda: dict(UNOBSERVED_STATUS))
    _validated: tuple[int, FalAppSpec] | None = None

    @property
    def ref(self) -> children.AppRef:
        return children.AppRef(self.name, NAMESPACE, f"uid-{self.name}")

    def validated(self) -> FalAppSpec:
        if self._validated is None or self._validated[0] != self.generation:
            self._validated = (self.generation, FalAppSpec.model_validate(self.spec))
        return self._validated[1]

    def edit(self, **changes) -> None:
        """A user edit of the spec (kubectl apply / scale): a new generation when something changed."""
        spec = {**self.spec, **changes}
        if spec != self.spec:
            self.spec, self.generation = spec, self.generation + 1


@dataclass
class Outcome:
    """One reconcile: the plan, its writes in order (the status write last), how many were made."""

    snapshot: AppSnapshot
    plan: AppPlan
    writes: list[Write]
    applied: int
    status_changed: bool = False  # the status write was made and changed something

    @property
    def crashed(self) -> bool:
        return self.applied < len(self.writes)

    @property
    def wrote(self) -> bool:
        """Anything written: a child, or a status that changed."""
        return min(self.applied, len(self.writes) - 1) > 0 or self.status_changed


def build_cache(world: World) -> ClusterCache:
    """The controller's cache as its watches would hold it: every node, every pod, autoscaler signals
    (built afresh whenever the world changed; never written to by the operator's code)."""
    memo = world.memo.get("cache")
    if memo is not None and memo[0] == world.version:
        return memo[1]
    cache = ClusterCache()
    for node in world.nodes.values():
        cache.upsert_node(node.body())
    for pod in world.all_pods():
        cache.upsert_pod(pod.body())
        if pod.scale_up_coming:
            cache.record_scale_signal(pod.uid, COMING, pod.announced_at)
    world.memo["cache"] = (world.version, cache)
    return cache


def _pending_claims(cache: ClusterCache, apps: set[tuple[str, str]], exclude: tuple[str, str]) -> dict:
    """Other apps' claims as the controller's ClaimTally keeps them (apps admitted as they are seen), without
    the short-lived expectations (see the module doc)."""
    cache.claims.count_gpus_as({m.metadata.name: m.spec.gpu_resource for m in CATALOGUE})
    for gone in cache.claims.admitted() - apps:
        cache.claims.retire(gone)
    for known in apps:
        cache.claims.admit(known)
    return cache.claims.others(exclude)


def free_for(cache: ClusterCache, spec: FalAppSpec, app: tuple[str, str], apps: set[tuple[str, str]],
             world: World) -> tuple[dict[str, list[NodeFree]], dict[str, datetime]]:
    """AppAsks.free_for: free room per candidate type, less other apps' pending pods; and the
    operator's NodelessTimes.observe_for: the types without a Ready, schedulable node, since a reconcile first saw
    them so (the operator knows from the node event; here a reconcile follows each change in the same
    step). Kept in the world's memo, so unlike the operator's it outlives a crash."""
    out = {}
    claims = _pending_claims(cache, apps, app)
    for machine_type in candidate_types(spec, CATALOGUE):
        name = machine_type.metadata.name
        free = cache.free(cache.nodes_of_type(machine_type, spec.requires_nvenc), machine_type.spec.gpu_resource)
        out[name] = after_shapes(free, claims[name]) if name in claims else free
    nodeless = NodelessTimes(cache, lambda: world.now, since=world.memo.setdefault("nodeless_since", {}))
    return out, nodeless.observe_for(spec, CATALOGUE)


def snapshot(world: World, app: App, apps: set[tuple[str, str]]) -> tuple[AppSnapshot, list[dict], list[dict]]:
    cache = build_cache(world)
    # what the controller's stores keep of each object (slim copies), so the planner sees what it would
    deployments = [slim_child(d.body, FIELD_MANAGER) for d in world.deployments_of(app.name)]
    pods = made_by([slim_pod(p.body()) for p in world.pods_of(app.name)], deployments)
    now = world.now
    state = children_state(deployments, app.ref.uid)
    spec = app.validated()
    free, nodeless = free_for(cache, spec, (NAMESPACE, app.name), apps, world)
    snap = AppSnapshot(
        ref=app.ref, generation=app.generation, spec=spec, status=FalAppStatus.model_validate(app.status),
        catalogue=CATALOGUE,
        counts=state.counts, surge=state.surge, cover=state.cover,
        pods=[pod_view(p, cache.scale_up_coming(p["metadata"]["uid"]), now) for p in pods
              if TYPE_LABEL in (p["metadata"].get("labels") or {})],
        free=free, nodeless_since=nodeless, grown_at=state.grown_at,
        recorded_moves=state.recorded_moves, now=now, replica_failures=state.replica_failures,
    )
    return snap, deployments, pods


def reconcile(world: World, app: App, apps: set[tuple[str, str]], crash_after: int | None = None) -> Outcome:
    """Plan and write; with `crash_after` k, only the first k writes happen (the status write counts,
    last). The Deployment controller then catches up with whatever was written. `apps`: every FalApp
    the controller knows, as (namespace, name)."""
    snap, deployments, pods = snapshot(world, app, apps)
    result = plan(snap)
    writes = child_writes(result, app.ref, deployments, pods, FIELD_MANAGER, status=app.status) + [STATUS]
    applied = len(writes) if crash_after is None else min(crash_after, len(writes))
    outcome = Outcome(snap, result, writes, applied)
    for write in writes[:applied]:
        if write is STATUS:
            patch = result.status.to_patch()
            if status_changed(app.status, patch):
                app.status = {**app.status, **patch}  # merge patch of the status subresource
                outcome.status_changed = True
        elif write.kind == "history":
            app.status = {**app.status, **write.body}  # merge patch of the status subresource
        elif write.kind == "apply":
            world.apply_deployment(write.body)
        elif write.kind == "mark":
            world.mark_pod(write.name, DELETE_FIRST)
        elif write.kind == "resize_unlisted":
            world.resize_unlisted(write.name, write.body)
        else:
            world.delete_deployment(write.name)
    world.sync_deployments(app.name)
    return outcome
