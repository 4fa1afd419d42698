"""The apps' metrics (falapp_fallbacks_total, falapp_replicas, ...) as each reconcile's plan and view say."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from falapp_operator import metrics
from falapp_operator.api import MachineType
from falapp_operator.placement import Move
from falapp_operator.reconcile.app import AppPlan, AppSnapshot

App = tuple[str, str]  # namespace, name


class AppMetrics:
    """Per-namespace gauges kept as totals: an app's counts replace its old ones (summing every app's at
    each reconcile would cost O(apps))."""

    def __init__(self) -> None:
        self.replicas: dict[App, dict[tuple[str, str], int]] = {}  # app -> (type, state) -> replicas
        self._totals: Counter[tuple[str, str, str]] = Counter()  # (namespace, type, state) -> replicas
        self._insufficient: dict[App, str] = {}  # apps with replicas no listed type takes -> namespace
        self._counted: Counter[str] = Counter()  # namespace -> apps with replicas counted

    def record(self, app: App, snap: AppSnapshot, result: AppPlan, catalogue: Iterable[MachineType]) -> None:
        """One reconcile's moves and replicas, under the types' display names."""
        decision = result.decision
        if decision is None:
            return
        display = {m.metadata.name: m.display_name for m in catalogue}
        namespace = app[0]
        for tr in decision.transitions:
            src, dst = display.get(tr.from_type or "", tr.from_type or ""), display.get(tr.to_type or "", "")
            if tr.move == Move.FELL_BACK:
                metrics.FALLBACKS.labels(namespace, src, dst).inc()
                since = next((p.unschedulable_since for p in snap.pods
                              if p.machine_type == tr.from_type and p.unschedulable_since), None)
                if since is not None:
                    metrics.PENDING_SECONDS.labels(src).observe((snap.now - since).total_seconds())
            elif tr.move in (Move.RETURNED, Move.PLACED_PREFERRED):
                metrics.RETURNS.labels(namespace, src, dst).inc()
            elif tr.move == Move.PROBE_FAILED:
                metrics.PROBE_FAILURES.labels(namespace, dst).inc()
        counts: dict[tuple[str, str], int] = {}
        for pod in snap.pods:
            if not pod.terminating:
                key = (display.get(pod.machine_type, pod.machine_type), "ready" if pod.ready else "not_ready")
                counts[key] = counts.get(key, 0) + 1
        self._set_replicas(app, counts)
        if decision.insufficient:
            self._insufficient[app] = namespace
        else:
            self._insufficient.pop(app, None)
        self._set_insufficient(namespace)

    def forget(self, app: App) -> None:
        self._set_replicas(app, {})
        self._insufficient.pop(app, None)
        self._set_insufficient(app[0])

    def _set_replicas(self, app: App, counts: dict[tuple[str, str], int]) -> None:
        """falapp_replicas per namespace, type and state."""
        namespace = app[0]
        old = self.replicas.pop(app, {})
        if counts:
            self.replicas[app] = counts
        self._counted[namespace] += bool(counts) - bool(old)
        for key in set(old) | set(counts):
            total = self._totals[(namespace, *key)] + counts.get(key, 0) - old.get(key, 0)
            self._totals[(namespace, *key)] = total
            metrics.REPLICAS.labels(namespace, key[0], key[1]).set(total)
        if not self._counted[namespace]:  # its last replica gone: its series go too (a series at 0 stays
            del self._counted[namespace]  # while the namespace has replicas: `== 0` alerts see it)
            for series in [k for k in self._totals if k[0] == namespace]:
                del self._totals[series]
                metrics.REPLICAS.remove(*series)

    def _set_insufficient(self, namespace: str) -> None:
        apps = sum(1 for ns in self._insufficient.values() if ns == namespace)
        if apps or self._counted.get(namespace):
            metrics.INSUFFICIENT.labels(namespace).set(apps)
        else:
            metrics.INSUFFICIENT.remove(namespace)  # (no error where there is none)
