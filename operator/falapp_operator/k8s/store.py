"""Slim copies of the objects reconciles read (FalApps, their Deployments, Services and pods), kept current
by the watches and by the answers to the operator's own writes, with expectations for those writes.

Write-through: after a write the store holds the object as the API answered it, so the next reconcile
never decides from a view older than the operator's own last write; watch events older than what is
held are stale and left out, and a Deployment the operator deleted stays gone whatever older events
of it still arrive. Each write is expected back on the watch; one not seen there within
CONFIRM_DEADLINE makes `overdue` true for its app, whose next reconcile then reads it fresh from the
API, so a lost watch event cannot leave an app deciding from a wrong view for long.

Which of two versions of an object is newer is told by their resourceVersions, compared as numbers.
Kubernetes calls them opaque, but this operator talks to API servers that keep every object in etcd,
where an object's resourceVersion is the etcd revision of its last write and revisions only grow; the
API server's own watch cache compares them the same way. A version that is not a number (another
storage) is taken as newest, which falls back to "the last report wins".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from falapp_operator.api import JsonMapping, JsonObject

Key = tuple[str, str]  # namespace, name
CONFIRM_DEADLINE = 10.0  # seconds a write may take to come back on its watch


def version(obj: JsonMapping | None) -> int | None:
    """The object's resourceVersion as a number (None: absent or not a number)."""
    rv = ((obj or {}).get("metadata") or {}).get("resourceVersion")
    if rv is None:
        return None
    try:
        return int(rv)
    except (TypeError, ValueError):
        return None


def key_of(obj: JsonMapping) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace") or "", meta["name"]


def same_but_version(a: JsonMapping, b: JsonMapping) -> bool:
    """Whether two slim copies differ in nothing but their resourceVersion."""
    if a.keys() != b.keys() or any(a[k] != b[k] for k in a if k != "metadata"):
        return False
    ma, mb = a["metadata"], b["metadata"]
    return ma.keys() == mb.keys() and all(ma[k] == mb[k] for k in ma if k != "resourceVersion")


class Store:
    """One kind's slim copies by (namespace, name), indexed by the value of `index_label` (the app)."""

    def __init__(self, slim: Callable[[JsonMapping], JsonObject], index_label: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slim = slim
        self.index_label = index_label
        self.clock = clock
        self.objects: dict[Key, JsonObject] = {}
        self._index: dict[Key, set[str]] = {}  # (namespace, label value) -> names
        self._keys: dict[str, Key] = {}  # uid -> key
        # expectations: versions the operator wrote and the watch has not reported yet, with deadlines
        self._pending: dict[Key, dict[int, float]] = {}
        self._pending_app: dict[Key, Key] = {}  # key -> the app whose reconcile wrote it
        # objects the operator deleted whose deletion the watch has not reported: uid -> (key, app, deadline)
        self._deleted: dict[str, tuple[Key, Key, float]] = {}

    # --- reads ---------------------------------------------------------------------------------------
    def get(self, key: Key) -> JsonObject | None:
        return self.objects.get(key)

    def key_of_uid(self, uid: str) -> Key | None:
        return self._keys.get(uid)

    def of_app(self, namespace: str, app: str) -> list[JsonObject]:
        """The objects labelled with the app, by name (as a LIST returns them)."""
        names = self._index.get((namespace, app)) or ()
        return [self.objects[(namespace, n)] for n in sorted(names)]

    def overdue(self, app: Key) -> bool:
        """Whether a write of this app's reconciles is not back from its watch within the deadline."""
        now = self.clock()
        return (any(self._pending_app.get(k) == app and min(versions.values()) < now
                    for k, versions in self._pending.items())
                or any(owner == app and deadline < now for _, owner, deadline in self._deleted.values()))

    # --- from watches and LISTs ------------------------------------------------------------------------
    def observe(self, event: str, body: JsonMapping) -> bool:
        """Take a watch event (ADDED, MODIFIED, DELETED) or a listed object (ADDED). Returns whether a
        reconcile of its app may decide differently: not for the operator's own writes coming back, nor
        for changes of fields no reconcile reads."""
        meta = body["metadata"]
        key, uid, rv = key_of(body), meta.get("uid", ""), version(body)
        if uid in self._deleted:  # deleted by the operator: what still arrives of it predates that
            if event == "DELETED":
                del self._deleted[uid]
            return False
        pending = self._pending.get(key)
        ours = pending is not None and rv in pending
        if pending is not None and rv is not None:
            for written in [v for v in pending if v <= rv]:
                del pending[written]
            if not pending:
                del self._pending[key]
                self._pending_app.pop(key, None)
        old = self.objects.get(key)
        old_rv = version(old)
        if old is not None and rv is not None and old_rv is not None and rv <= old_rv:
            # stale: what is held already includes it; someone else's change still deserves a look
            return not ours and rv < old_rv
        if event == "DELETED":
            if old is None or uid and old["metadata"].get("uid") not in (None, uid):
                return False  # nothing held of it (a relist reports an object made again under its name)
            self._remove(key)
            return True
        slim = self.slim(body)
        self._put(key, slim, old)
        return not ours and (old is None or not same_but_version(old, slim))

    # --- the operator's own writes ---------------------------------------------------------------------
    def wrote(self, body: JsonMapping | None, app: Key) -> None:
        """The API's answer to a write by `app`'s reconcile (None: the object is gone)."""
        if body is None:
            return
        key, rv = key_of(body), version(body)
        old = self.objects.get(key)
        old_rv = version(old)
        if old is None or rv is None or old_rv is None or rv > old_rv:
            self._put(key, self.slim(body), old)
            # a new version: expected back on the watch (a write that changed nothing keeps the version
            # held, and no event ever reports it again)
            if rv is not None:
                self._pending.setdefault(key, {})[rv] = self.clock() + CONFIRM_DEADLINE
                self._pending_app[key] = app

    def deleted(self, key: Key, app: Key) -> None:
        """The operator deleted the object (or found it gone)."""
        old = self.objects.get(key)
        if old is None:
            return
        self._remove(key)
        uid = old["metadata"].get("uid")
        if uid:
            self._deleted[uid] = (key, app, self.clock() + CONFIRM_DEADLINE)

    def refresh(self, app: Key, key: Key | None, body: JsonMapping | None) -> None:
        """A fresh read of one object of the app (None: absent): it replaces what is held, and the app's
        expectations of it are settled."""
        if key is None:
            return
        self._settle(app, {key})
        old = self.objects.get(key)
        if body is None:
            if old is not None:
                self._remove(key)
        elif (old is None or (new_rv := version(body)) is None or (old_rv := version(old)) is None
              or new_rv >= old_rv):
            self._put(key, self.slim(body), old)

    def refresh_app(self, app: Key, namespace: str, items: Sequence[JsonMapping],
                    list_version: str | None = None) -> None:
        """A fresh LIST of the objects labelled with the app (at `list_version`): what it lacks is gone,
        unless the watch reported it after the LIST's snapshot."""
        listed = {key_of(i) for i in items}
        held = {(namespace, n) for n in self._index.get((namespace, app[1]), ())}
        self._settle(app, listed | held)
        at = version({"metadata": {"resourceVersion": list_version}})
        for key in held - listed:
            if at is None or (held_version := version(self.objects[key])) is None or held_version <= at:
                self._remove(key)
        for item in items:
            self.refresh(app, key_of(item), item)

    def _settle(self, app: Key, keys: set[Key]) -> None:
        for key in [k for k, owner in self._pending_app.items() if owner == app or k in keys]:
            self._pending.pop(key, None)
            self._pending_app.pop(key, None)
        for uid in [u for u, (k, owner, _) in self._deleted.items() if owner == app or k in keys]:
            del self._deleted[uid]

    # --- storage -----------------------------------------------------------------------------------------
    def _label(self, obj: JsonMapping | None) -> str | None:
        if obj is None or self.index_label is None:
            return None
        label: str | None = (obj["metadata"].get("labels") or {}).get(self.index_label)
        return label

    def _put(self, key: Key, slim: JsonObject, old: JsonObject | None) -> None:
        before, after = self._label(old), self._label(slim)
        if before != after and before is not None:
            self._unindex(key, before)
        if after is not None:
            self._index.setdefault((key[0], after), set()).add(key[1])
        if old is not None and old["metadata"].get("uid") != slim["metadata"].get("uid"):
            self._keys.pop(old["metadata"].get("uid", ""), None)
        if slim["metadata"].get("uid"):
            self._keys[slim["metadata"]["uid"]] = key
        self.objects[key] = slim

    def _remove(self, key: Key) -> None:
        old = self.objects.pop(key, None)
        if old is not None:
            self._keys.pop(old["metadata"].get("uid", ""), None)
        label = self._label(old)
        if label is not None:
            self._unindex(key, label)

    def _unindex(self, key: Key, label: str) -> None:
        names = self._index.get((key[0], label))
        if names is not None:
            names.discard(key[1])
            if not names:
                del self._index[(key[0], label)]
