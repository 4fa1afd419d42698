"""Room an app's asks claim: free room per candidate type as one app may use it (less what other apps'
pending pods and fresh asks claim), and the replicas a plan asked for, remembered until their pods are
seen, given back early where the app's pods are refused for good (a tenant's quota must not hide room
from everyone else)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence

from falapp_operator.api import FalAppSpec, MachineType
from falapp_operator.k8s.app_events import App
from falapp_operator.k8s.cache import ClusterCache
from falapp_operator.k8s.claims import RefusedCreates
from falapp_operator.k8s.workqueue import QueueKey, WorkQueue
from falapp_operator.placement import NodeFree, after_shapes, shape_of
from falapp_operator.placement.eligibility import candidate_types, resolve
from falapp_operator.placement.snapshot import FreeOnRead
from falapp_operator.reconcile.app import AppPlan, AppSnapshot
from falapp_operator.reconcile.observe import QUOTA_EXCEEDED, refused_for_good

logger = logging.getLogger("falapp_operator")
EXPECTATION_TTL = 30.0  # seconds a replica we asked for claims room before its pod is seen
# seconds a type's pods must have been refused for good (the namespace's quota, a ServiceAccount not there,
# a webhook's denial), and the replicas asked for there must have waited, before those stop claiming room:
# an app's own fallback grows the next type before its stuck pod is gone and the quota counted again,
# which a tight quota refuses for a second or two (the ReplicaSet retries); room given back then would be
# promised twice
REFUSAL_LASTING = 12.0  # past the ReplicaSet's retry at about 10 s
# seconds a refusal of an app's pods for good is remembered from the last look that saw it (see
# claims.RefusedCreates): longer than any toggle of a tenant's replicas could hope to wait out cheaply
CREATE_FAILURE_MEMORY = 300.0


class AppAsks:
    def __init__(self, cache: ClusterCache, queue: WorkQueue[QueueKey]):
        self.cache, self.queue = cache, queue
        self.refused_creates = RefusedCreates(CREATE_FAILURE_MEMORY)

    def free_for(self, spec: FalAppSpec, app: App, catalogue: Iterable[MachineType]) -> FreeOnRead:
        """Free room per candidate type, less what other apps' replicas already claim there: their pending
        pods and the replicas they just asked for (so freed room is promised to one app at a time).
        Each type is computed when the planner first reads it (within the same plan: nothing changes)."""
        self.cache.claims.expire(time.monotonic() - EXPECTATION_TTL)
        types = {m.metadata.name: m for m in candidate_types(spec, catalogue)}

        def free(name: str) -> Sequence[NodeFree]:
            nodes = self.cache.free_of_type(types[name], spec.requires_nvenc)
            claims = self.cache.claims.others_on(app, name)
            return after_shapes(nodes, claims) if claims else nodes
        return FreeOnRead(types, free)

    def expect(self, snap: AppSnapshot, result: AppPlan) -> None:
        """Remember the replicas this plan asked for until their pods show up in the cache."""
        if result.decision is None:
            return
        namespace, name = app = (snap.ref.namespace, snap.ref.name)
        counts = result.decision.counts
        # asked for fewer than before the pods of an earlier ask came (a scale-down, a move back): at most
        # the new count less the pods there are still to come
        pods = Counter(p.machine_type for p in snap.pods if not p.terminating)  # the ones that stay
        for type_name in self.cache.claims.expecting(app):
            # the pods have been refused for good for a while (the namespace's quota, a ServiceAccount not
            # there, a webhook's denial; not a webhook timing out, not the moment of the app's own move, see
            # observe.refused_for_good: the condition's first message decides): those asked for that
            # long ago will not come until someone acts (then their pods claim room themselves), so their
            # room goes back now, not when the asks expire (a tenant beyond its quota hid it from everyone
            # that long). Both the refusal and the ask must be that old: the condition may be reported
            # late (the controller manager behind), kept from an earlier refusal, or stamped by a clock
            # behind the API server's
            if (refused := snap.refused_since.get(type_name)) is not None:
                left = REFUSAL_LASTING - (snap.now - refused).total_seconds()
                if left <= 0:  # the refusal has lasted: the asks as old go; look again when the next is
                    now = time.monotonic()
                    oldest = self.cache.claims.give_up_asked_before(app, type_name, now - REFUSAL_LASTING)
                    left = 0.0 if oldest is None else oldest + REFUSAL_LASTING - now
                if left > 0:
                    self.queue.add_after(("app", namespace, name), left + 0.01, due=False)
            self.cache.claims.expect_at_most(app, type_name, counts.get(type_name, 0) - pods[type_name])
        expecting = self.cache.claims.expecting(app)
        # newly asked for, and not expected yet (a reconcile retried after its write failed asks again);
        # none where the ReplicaSet's last creates failed (the namespace's quota, a webhook), nor where the
        # app's pods were refused lately (claims.RefusedCreates): a tenant's app scaled beyond its quota
        # would hide the room from others again at each ask
        refused_types = self._refused_lately(snap)
        added = {t: min(n - snap.counts.get(t, 0), n - pods[t] - expecting.get(t, 0)) for t, n in counts.items()
                 if t not in snap.create_failing and t not in refused_types}
        added = {t: n for t, n in added.items() if n > 0}
        if not added:
            return
        options = {o.name: o for o in resolve(snap.spec, snap.catalogue, namespace, snap.namespace_labels).options}
        at = time.monotonic()
        for type_name, count in added.items():
            if (option := options.get(type_name)) is not None:
                self.cache.claims.expect((namespace, name), type_name, shape_of(option), count, at)

    def _refused_lately(self, snap: AppSnapshot) -> set[str]:
        """The types where the app's asks claim no room: its Deployments' refusals for good are noted first
        (a log line when one starts), and its own end where its Deployment made a pod and reports no
        failure (a pod merely carrying its labels, which a tenant may make by hand, ends nothing)."""
        app = (snap.ref.namespace, snap.ref.name)
        for type_name in {p.machine_type for p in snap.pods if not p.terminating} - snap.create_failing:
            self.refused_creates.created(app, type_name)
        for type_name in snap.create_failing:
            message = snap.replica_failures.get(type_name, "")
            quota = QUOTA_EXCEEDED in message
            if refused_for_good(message) and self.refused_creates.note(app, type_name, quota):
                logger.info("%s/%s: pods refused on %s (%s): replicas %s asks for there claim no room until "
                            "%.0f s after a reconcile last sees the refusal%s", *app, type_name, message,
                            f"any app of namespace {app[0]}" if quota else "it", CREATE_FAILURE_MEMORY,
                            "" if quota else ", or one of its pods is created there")
        return self.refused_creates.refused(app)
