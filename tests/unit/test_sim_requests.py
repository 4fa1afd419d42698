"""The simulated scheduler counts a pod's requests with its own small sum (tests/sim/objects.py), apart
from the operator's `pod_requests`: were the two to share one, a miscount in the operator would go
unnoticed by the simulator. They must agree on every pod the simulator makes."""

from __future__ import annotations

import pytest

from falapp_operator.api import DEFAULT_CATALOG
from falapp_operator.api.resources import pod_requests
from falapp_operator.placement.eligibility import resolve
from falapp_operator.reconcile.children import AppRef, pod_template
from tests.builders import GPU, falapp_spec
from tests.sim.objects import SHAPES, requests_of
from tests.sim.scenario import AppConfig


def operator_pods() -> list[tuple[str, dict]]:
    """The pod specs the operator writes for the simulator's apps: every GPU type, 1 and 2 GPUs a replica."""
    out = []
    for gpus in (1, 2):
        config = AppConfig("app", tuple(m.display_name for m in DEFAULT_CATALOG
                                        if m.metadata.name in SHAPES), gpus=gpus)
        spec = falapp_spec(**config.spec())
        for option in resolve(spec, DEFAULT_CATALOG).options:
            machine_type = next(m for m in DEFAULT_CATALOG if m.metadata.name == option.name)
            out.append((f"{option.name}-x{gpus}", pod_template(AppRef("app", "team", "u"), spec, option,
                                                               machine_type)["spec"]))
    return out


def container(cpu: str | None = None, memory: str | None = None, gpus: str | None = None, *,
              limits_only: bool = False) -> dict:
    amounts = {k: v for k, v in (("cpu", cpu), ("memory", memory), (GPU, gpus)) if v is not None}
    return {"name": "c", "resources": {"limits" if limits_only else "requests": amounts}}


HAND_MADE = [
    ("two containers summed", {"containers": [container("500m", "1Gi", "1"), container("1.5", "512Mi", "1")]}),
    ("a GPU asked by its limit only", {"containers": [container("1", "1Gi"), container(gpus="2", limits_only=True)]}),
    ("an init container larger in cpu only", {"containers": [container("1", "4Gi", "1")],
                                              "initContainers": [container("3", "1Gi")]}),
    ("init containers each alone, not summed", {"containers": [container("2", "2Gi")],
                                                "initContainers": [container("1", "3Gi"), container("1", "3Gi", "4")]}),
    ("no requests at all", {"containers": [{"name": "c"}]}),
]


CASES = [*operator_pods(), *HAND_MADE]


@pytest.mark.parametrize(("case", "spec"), CASES, ids=[case for case, _ in CASES])
def test_the_simulator_counts_a_pod_as_the_operator_does(case: str, spec: dict) -> None:
    operator = pod_requests(spec).counting(GPU)
    assert requests_of(spec) == (operator.gpus, operator.cpu_milli, operator.memory_bytes), case


def test_the_operators_pods_are_all_there() -> None:
    """The table above covers every type the simulator has nodes of (resolve found them all)."""
    assert {case.rsplit("-x", 1)[0] for case, _ in operator_pods()} == set(SHAPES)


@pytest.mark.parametrize("spec", [
    {"containers": [container("1")], "overhead": {"cpu": "250m"}},
    {"containers": [container("1")], "resources": {"requests": {"cpu": "2"}}},
    {"containers": [container("1")], "initContainers": [{**container("1"), "restartPolicy": "Always"}]},
])
def test_what_the_simulator_does_not_count_is_refused(spec: dict) -> None:
    with pytest.raises(ValueError, match="does not count"):
        requests_of(spec)
