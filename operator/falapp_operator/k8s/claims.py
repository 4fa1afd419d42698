"""Room about to be taken: the shapes of the managed apps' pods about to be bound, per machine type, kept
up to date pod by pod. A reconcile reads other apps' claims in O(shapes), not O(pending pods): a large
rollout has thousands pending, and every pod event used to make the next reconcile count them all."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping
from typing import TypeVar

from falapp_operator.api.resources import Resources
from falapp_operator.placement.snapshot import Shape, shape_of

App = tuple[str, str]  # (namespace, name)
K = TypeVar("K", bound=Hashable)


class ClaimTally:
    def __init__(self) -> None:
        self._pods: dict[str, tuple[str, App, Resources]] = {}  # uid -> (machine type, app, requests)
        self._gpu_resource: dict[str, str | None] = {}  # per type: the resource its GPUs are counted as
        self._apps: set[App] = set()  # whose pods claim room (a pod merely carrying an app's label does not)
        self._own: dict[str, dict[App, Counter[Shape]]] = {}  # per type, per app (admitted or not)
        self._totals: dict[str, Counter[Shape]] = {}  # per type, the admitted apps' together

    # --- changes -----------------------------------------------------------------------------------
    def claim(self, uid: str, machine_type: str, app: App, requests: Resources) -> None:
        self.release(uid)
        self._pods[uid] = (machine_type, app, requests)
        self._count(machine_type, app, requests, 1)

    def release(self, uid: str) -> None:
        counted = self._pods.pop(uid, None)
        if counted is not None:
            self._count(*counted, -1)

    def admit(self, app: App) -> None:
        if app not in self._apps:
            self._apps.add(app)
            self._move_totals(app, 1)

    def retire(self, app: App) -> None:
        if app in self._apps:
            self._move_totals(app, -1)
            self._apps.discard(app)

    def count_gpus_as(self, gpu_resources: Mapping[str, str | None]) -> None:
        """The catalogue changed: each type's pods are counted as its GPUs are named now."""
        if dict(gpu_resources) == self._gpu_resource:
            return
        self._gpu_resource = dict(gpu_resources)
        self._own.clear()
        self._totals.clear()
        for machine_type, app, requests in self._pods.values():
            self._count(machine_type, app, requests, 1)

    # --- reads -------------------------------------------------------------------------------------
    def admitted(self) -> frozenset[App]:
        return frozenset(self._apps)

    def others(self, app: App) -> dict[str, Counter[Shape]]:
        """Per machine type, the shapes the admitted apps other than `app` are about to take."""
        out = {}
        for machine_type, total in self._totals.items():
            own = self._own.get(machine_type, {}).get(app) if app in self._apps else None
            rest = total - own if own else Counter(total)
            if rest:
                out[machine_type] = rest
        return out

    def _count(self, machine_type: str, app: App, requests: Resources, sign: int) -> None:
        shape = shape_of(requests.counting(self._gpu_resource.get(machine_type)))
        _add(self._own.setdefault(machine_type, {}), app, shape, sign)
        if app in self._apps:
            _add(self._totals, machine_type, shape, sign)

    def _move_totals(self, app: App, sign: int) -> None:
        for machine_type, by_app in self._own.items():
            for shape, n in (by_app.get(app) or {}).items():
                _add(self._totals, machine_type, shape, sign * n)


def _add(counters: dict[K, Counter[Shape]], key: K, shape: Shape, n: int) -> None:
    """counters[key][shape] += n, dropping what reaches zero (a tally of every pod ever pending would grow)."""
    counter = counters.setdefault(key, Counter())
    counter[shape] += n
    if not counter[shape]:
        del counter[shape]
        if not counter:
            del counters[key]
