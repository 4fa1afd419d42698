"""docs/argocd-health.lua, the Argo CD health check for FalApp, run with Lua 5.1 (as Argo CD's
gopher-lua) on the same sample statuses as the kstatus test: it must agree with kstatus."""

from __future__ import annotations

from pathlib import Path

import pytest
from lupa import lua51

from tests.unit import status_samples
from tests.unit.status_samples import SAMPLES
from tests.unit.test_kstatus import kstatus

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "argocd-health.lua"
KSTATUS_TO_ARGO = {"Current": "Healthy", "InProgress": "Progressing", "Failed": "Degraded",
                   "Terminating": "Progressing"}


def health(obj: dict) -> dict[str, str]:
    """Run the script as Argo CD does: `obj` is the live object as a Lua table, the script returns hs."""
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)

    def to_lua(value):
        if isinstance(value, dict):
            return lua.table_from({k: to_lua(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([to_lua(v) for v in value])
        return value

    lua.globals().obj = to_lua(obj)
    result = lua.execute(SCRIPT.read_text())
    return dict(result.items())


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_health_of_each_sample(name: str):
    build, want_kstatus, want_argo = SAMPLES[name]
    obj = build()
    hs = health(obj)
    assert hs["status"] == want_argo
    assert hs["status"] == KSTATUS_TO_ARGO[kstatus(obj)[0]], "Argo CD and kstatus disagree"
    assert hs["message"]


def test_messages_say_why():
    assert health(status_samples.replicas_starting())["message"] == "ReplicasNotReady: 1/2 replicas ready"
    assert health(status_samples.ready_after_fallback())["message"] == (
        "AllReplicasReady: 2/2 replicas ready (GPU-H100x1,GPU-A100x1)")
    no_room = health(status_samples.no_capacity())["message"]
    assert no_room.startswith("InsufficientCapacity: no listed machine type has room")
    invalid = health(status_samples.invalid_spec())
    assert invalid["status"] == "Degraded" and invalid["message"].startswith("InvalidSpec: ")
    assert "GPU-NOPE" in invalid["message"]
    assert "observe generation 2" in health(status_samples.spec_changed_not_observed())["message"]


def test_before_the_first_status():
    obj = status_samples.falapp({})
    del obj["status"]
    assert health(obj) == {"status": "Progressing", "message": "Waiting for the falapp-operator to report status"}
    assert health(status_samples.falapp({"observedGeneration": 1}))["status"] == "Progressing"
