"""What a pod takes of a node, as the scheduler counts it (init containers, sidecars, pod-level requests,
overhead), and the capacity view counting each machine type's GPUs under the type's own resource name."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from falapp_operator.api import MachineType
from falapp_operator.api.resources import Resources, pod_requests
from falapp_operator.api.units import whole
from falapp_operator.k8s.cache import ClusterCache
from falapp_operator.placement import NodeFree, after_shapes, shape_of
from tests import builders

GI = 2**30
NVIDIA, AMD = "nvidia.com/gpu", "amd.com/gpu"


def c(requests: dict[str, str] | None = None, limits: dict[str, str] | None = None,
      sidecar: bool = False) -> dict[str, Any]:
    """A container with these requests and limits; `sidecar`: an init container that keeps running."""
    resources = {k: v for k, v in (("requests", requests), ("limits", limits)) if v is not None}
    container: dict[str, Any] = {"name": "c", "image": "registry.example.com/app:1", "resources": resources}
    if sidecar:
        container["restartPolicy"] = "Always"
    return container


def spec(*containers: dict[str, Any], init: tuple[dict[str, Any], ...] = (), **fields: Any) -> dict[str, Any]:
    return {"containers": list(containers), "initContainers": list(init), **fields}


def want(cpu_milli: int = 0, memory: int = 0, others: dict[str, int] | None = None) -> Resources:
    return Resources.parse({"cpu": f"{cpu_milli}m", "memory": str(memory),
                            **{k: str(v) for k, v in (others or {}).items()}})


POD_REQUESTS = [
    ("app containers are summed",
     spec(c({"cpu": "1", "memory": "1Gi"}), c({"cpu": "500m", "memory": "2Gi"})), want(1500, 3 * GI)),
    ("an init container larger than the app containers sets the request",
     spec(c({"cpu": "1"}), c({"cpu": "1"}), init=(c({"cpu": "4"}),)), want(4000)),
    ("an init container smaller than the app containers changes nothing",
     spec(c({"cpu": "2"}), c({"cpu": "2"}), init=(c({"cpu": "3"}),)), want(4000)),
    ("init containers run one at a time: the largest counts, not their sum",
     spec(c({"cpu": "1"}), init=(c({"cpu": "3"}), c({"cpu": "2"}))), want(3000)),
    ("the larger of init and app per resource, each on its own",
     spec(c({"cpu": "1", "memory": "4Gi"}), init=(c({"cpu": "4", "memory": "1Gi"}),)), want(4000, 4 * GI)),
    ("the scheduler's own example: cpu 3, memory 3G",
     spec(c({"cpu": "2", "memory": "1G"}), c({"cpu": "1", "memory": "1G"}),
          init=(c({"cpu": "2", "memory": "1G"}), c({"cpu": "2", "memory": "3G"}))), want(3000, 3 * 10**9)),
    ("GPUs an init container asks for are held for the pod's life",
     spec(c({"cpu": "1"}), init=(c({NVIDIA: "8"}, {NVIDIA: "8"}),)), want(1000, others={NVIDIA: 8})),
    ("a sidecar runs beside the app containers: added to their sum",
     spec(c({"cpu": "1"}), init=(c({"cpu": "1"}, sidecar=True),)), want(2000)),
    ("an init container after a sidecar runs beside it",
     spec(c({"cpu": "1"}), init=(c({"cpu": "1"}, sidecar=True), c({"cpu": "2"}))), want(3000)),
    ("an init container before a sidecar runs without it",
     spec(c({"cpu": "500m"}), init=(c({"cpu": "2"}), c({"cpu": "1"}, sidecar=True))), want(2000)),
    ("sidecars add up while later init containers run",
     spec(c({"cpu": "100m"}), init=(c({"cpu": "1"}, sidecar=True), c({"cpu": "1"}, sidecar=True),
                                     c({"cpu": "1"}))), want(3000)),
    ("overhead comes on top of the app containers",
     spec(c({"cpu": "1", "memory": "1Gi"}), overhead={"cpu": "250m", "memory": "120Mi"}),
     want(1250, GI + 120 * 2**20)),
    ("overhead comes on top of a larger init container",
     spec(c({"cpu": "1"}), init=(c({"cpu": "4"}),), overhead={"cpu": "250m"}), want(4250)),
    ("no requests: nothing taken",
     spec(c(), c({})), want()),
    ("a resource not requested counts as zero, the others count",
     spec(c({"memory": "1Gi"}), c({"cpu": "1"})), want(1000, GI)),
    ("a limit without a request is requested at the limit",
     spec(c(limits={"cpu": "2", "memory": "2Gi", NVIDIA: "1"})), want(2000, 2 * GI, others={NVIDIA: 1})),
    ("a request below its limit counts, not the limit",
     spec(c({"cpu": "1"}, {"cpu": "2", "memory": "1Gi"})), want(1000, GI)),
    ("an init container's limit without a request is requested at the limit",
     spec(c({"cpu": "1"}), init=(c(limits={"cpu": "3"}),)), want(3000)),
    ("a pod-level request replaces the containers' for that resource only",
     spec(c({"cpu": "1", "memory": "1Gi", NVIDIA: "1"}), c({"cpu": "1"}), resources={"requests": {"cpu": "4"}}),
     want(4000, GI, others={NVIDIA: 1})),
    ("a pod-level request takes overhead on top",
     spec(c({"memory": "1Gi"}), resources={"requests": {"memory": "2Gi"}}, overhead={"memory": "1Gi"}),
     want(0, 3 * GI)),
    ("every extended resource is kept by its own name",
     spec(c({AMD: "2", "example.com/fpga": "1"}), init=(c({AMD: "4"}),)), want(others={AMD: 4, "example.com/fpga": 1})),
]


@pytest.mark.parametrize(("pod_spec", "expected"), [(s, w) for _, s, w in POD_REQUESTS],
                         ids=[name for name, _, _ in POD_REQUESTS])
def test_pod_requests_as_the_scheduler_counts_them(pod_spec: dict[str, Any], expected: Resources) -> None:
    assert pod_requests(pod_spec) == expected


def test_gpus_are_read_under_the_name_asked_for() -> None:
    vector = Resources.parse({"cpu": "1", NVIDIA: "2", AMD: "3"})
    assert (vector.counting(NVIDIA).gpus, vector.counting(AMD).gpus, vector.counting(None).gpus) == (2, 3, 0)
    assert vector.gpus == 0, "a vector read as no type's has no GPUs"


def test_vectors_add_subtract_and_take_the_larger_per_resource() -> None:
    a, b = Resources.parse({"cpu": "2", AMD: "1"}), Resources.parse({"memory": "1Gi", AMD: "3", NVIDIA: "1"})
    assert a + b == Resources.parse({"cpu": "2", "memory": "1Gi", AMD: "4", NVIDIA: "1"})
    assert (a + b) - b == a
    assert a.max(b) == Resources.parse({"cpu": "2", "memory": "1Gi", AMD: "3", NVIDIA: "1"})


@pytest.mark.parametrize("bad", [{"cpu": "1e1000000"}, {"memory": "lots"}, {NVIDIA: "1e1000000"}])
def test_a_quantity_that_cannot_be_computed_is_a_value_error(bad: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        pod_requests(spec(c(bad)))


# --- the capacity view -------------------------------------------------------------------------------

def node(name: str, **allocatable: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"nvidia.com/gpu.product": "NVIDIA-H100"}}, "spec": {},
            "status": {"allocatable": {"cpu": "64", "memory": "512Gi", **allocatable},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod(name: str, node_name: str | None, pod_spec: dict[str, Any], type_name: str | None = None) -> dict[str, Any]:
    labels = {builders.APP_LABEL: "other", builders.TYPE_LABEL: type_name} if type_name else {}
    return {"metadata": {"name": name, "uid": f"uid-{name}", "namespace": "team-b", "labels": labels},
            "spec": {"nodeName": node_name, **pod_spec}, "status": {"phase": "Running"}}


def test_the_cache_counts_gpus_under_each_types_resource_name() -> None:
    cache = ClusterCache()
    cache.upsert_node(node("n1", **{AMD: "8", NVIDIA: "4"}))
    cache.upsert_pod(pod("p1", "n1", spec(c({AMD: "3", "cpu": "2"}))))
    nodes = list(cache.nodes.values())
    assert cache.free(nodes, AMD) == [NodeFree(5, 62_000, 512 * GI)]
    assert cache.free(nodes, NVIDIA) == [NodeFree(4, 62_000, 512 * GI)]
    assert cache.free(nodes, None)[0].gpus == 0  # a CPU type's view


@pytest.mark.parametrize("huge", [{NVIDIA: "1e64", "memory": "1e64"}, {"memory": "9e999990"},
                                  {"ephemeral-storage": "9e999990"}, {NVIDIA: "1e19"}])
def test_a_tenant_pod_asking_beyond_64_bits_takes_no_room(huge: dict[str, str]) -> None:
    """The API server takes such a pod and the scheduler binds it (its arithmetic overflows): it must
    neither fill the node in the operator's view nor hold the pod watch while a million digits are made."""
    cache = ClusterCache()
    cache.upsert_node(node("n1", **{NVIDIA: "8"}))
    cache.upsert_pod(pod("huge", "n1", spec(c(huge, {k: v for k, v in huge.items() if k == NVIDIA}))))
    assert cache.free(cache.nodes.values(), NVIDIA) == [NodeFree(8, 64_000, 512 * GI)]


@pytest.mark.parametrize(("value", "expected"), [("9223372036854775807", 9223372036854775807), ("8Ei", 8 * 2**60),
                                                 ("1e19", None), ("1e64", None), ("9e999990", None)])
def test_counts_stop_at_64_bits(value: str, expected: int | None) -> None:
    if expected is None:
        with pytest.raises(ValueError, match="out of range"):
            whole(value)
    else:
        assert whole(value) == expected


def test_the_cache_holds_room_for_init_containers_and_overhead() -> None:
    cache = ClusterCache()
    cache.upsert_node(node("n1", **{NVIDIA: "8"}))
    cache.upsert_pod(pod("init", "n1", spec(c({"cpu": "1"}), init=(c({NVIDIA: "6"}, {NVIDIA: "6"}),))))
    cache.upsert_pod(pod("overhead", "n1", spec(c({"cpu": "1"}), overhead={"cpu": "60"})))
    assert cache.free(cache.nodes.values(), NVIDIA) == [NodeFree(2, 2000, 512 * GI)]
    cache.remove_pod("uid-init")
    assert cache.free(cache.nodes.values(), NVIDIA) == [NodeFree(8, 3000, 512 * GI)]


def test_a_pending_pod_claims_gpus_under_its_types_resource_name() -> None:
    mi300 = MachineType.model_validate(
        builders.machine_type("gpu-mi300", gpu={"resourceName": AMD, "maxGpusPerReplica": 8}))
    cache = ClusterCache()
    cache.upsert_node(node("n1", **{AMD: "8"}))
    cache.upsert_pod(pod("waiting", None, spec(c({AMD: "6"}, {AMD: "6"})), type_name="gpu-mi300"))
    cache.claims.count_gpus_as({"gpu-mi300": mi300.spec.gpu_resource})
    cache.claims.admit(("team-b", "other"))  # (the pod builder's namespace and app)
    free = cache.free(cache.nodes.values(), mi300.spec.gpu_resource)
    assert after_shapes(free, cache.claims.others(("team-b", "mine"))["gpu-mi300"])[0].gpus == 2


async def test_the_controller_reads_free_gpus_of_a_type_under_its_resource_name() -> None:
    from falapp_operator.k8s.controller import Controller
    from falapp_operator.settings import OperatorSettings

    settings = OperatorSettings.model_validate({"workers": 1, "metrics_port": 0})
    controller = Controller(None, settings)  # type: ignore[arg-type]  # no API: only events fed in
    body = builders.machine_type("gpu-mi300", gpu={"resourceName": AMD, "maxGpusPerReplica": 8},
                       nodeAffinity=None, nodeSelector={"pool": "mi300"})
    controller.machinetype_event(body, deleted=False)
    amd_node = node("n1", **{AMD: "8", NVIDIA: "8"})
    amd_node["metadata"]["labels"] = {"pool": "mi300"}
    controller.node_event(amd_node, deleted=False)
    # from the pod watch: its init container holds 5 of the node's AMD GPUs, its NVIDIA GPUs are not the type's
    controller.pod_event(pod("p1", "n1", spec(c({AMD: "3", NVIDIA: "8"}, {AMD: "3", NVIDIA: "8"}),
                                              init=(c({AMD: "5"}, {AMD: "5"}),))), deleted=False)
    free = controller.cache.free_of_type(controller.types.declared["gpu-mi300"], nvenc=False)
    assert [f.gpus for f in free] == [3]


def first_fit_one_by_one(free: list[NodeFree], claims: list[NodeFree]) -> list[NodeFree]:
    """The plain rule after_shapes implements faster: each claim, largest first, on the first node it fits."""
    nodes = list(free)
    for claim in sorted(claims, key=lambda d: (d.gpus, d.cpu_milli, d.memory_bytes), reverse=True):
        for i, node in enumerate(nodes):
            if node.fits(claim):
                nodes[i] = node.minus(claim)
                break
    return nodes


demand = st.builds(NodeFree, st.sampled_from([0, 1, 2, 8]), st.sampled_from([0, 500, 8000]),
                   st.sampled_from([0, GI, 64 * GI]))
room = st.builds(NodeFree, st.integers(-2, 16), st.integers(-1000, 64_000), st.integers(-GI, 512 * GI))


@given(st.lists(room, max_size=8), st.lists(demand, max_size=40))
@settings(max_examples=300, deadline=None)
def test_claims_of_one_shape_placed_together_land_as_one_by_one(free: list[NodeFree],
                                                                 claims: list[NodeFree]) -> None:
    assert after_shapes(free, Counter(shape_of(c) for c in claims)) == first_fit_one_by_one(free, claims)
