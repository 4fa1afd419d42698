"""Which nodes a machine type's pods can land on (api: MachineTypeSpec.matches_node, Toleration.tolerates,
scheduling_taints): the one implementation the capacity view and the NodePool detection use."""

from __future__ import annotations

from typing import Any

import pytest

from falapp_operator.api import MachineType
from falapp_operator.api.common import Toleration
from falapp_operator.api.nodes import Taint, scheduling_taints
from falapp_operator.k8s.cache import ClusterCache, nodepool_nodes
from tests import builders

GPU_TAINT = Taint("nvidia.com/gpu", "", "NoSchedule")


@pytest.mark.parametrize(
    ("toleration", "taint", "want"),
    [
        ({"key": "nvidia.com/gpu", "operator": "Exists"}, GPU_TAINT, True),
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, GPU_TAINT, True),
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}, GPU_TAINT, False),
        ({"key": "other", "operator": "Exists"}, GPU_TAINT, False),
        ({"operator": "Exists"}, Taint("anything", "x", "NoExecute"), True),
        ({"key": "team", "value": "a"}, Taint("team", "a", "NoSchedule"), True),  # operator defaults to Equal
        ({"key": "team", "operator": "Equal", "value": "a"}, Taint("team", "b", "NoSchedule"), False),
        ({"key": "team", "operator": "Equal"}, Taint("team", "", "NoSchedule"), True),  # no value: ""
        ({"key": "team", "operator": "Equal"}, Taint("team", "a", "NoSchedule"), False),
    ],
    ids=["exists", "exists-effect", "other-effect", "other-key", "exists-no-key", "equal-default",
         "equal-other-value", "equal-empty-value", "equal-empty-vs-value"],
)
def test_toleration_tolerates(toleration: dict[str, Any], taint: Taint, want: bool) -> None:
    assert Toleration.model_validate(toleration).tolerates(*taint) is want


def test_only_taints_that_keep_pods_off_count() -> None:
    taints = [{"key": "a", "effect": "NoSchedule"}, {"key": "b", "value": "v", "effect": "NoExecute"},
              {"key": "c", "effect": "PreferNoSchedule"}]
    assert scheduling_taints(taints) == (Taint("a", "", "NoSchedule"), Taint("b", "v", "NoExecute"))
    assert scheduling_taints(None) == ()


H100_LABELS = {"nvidia.com/gpu.product": "NVIDIA-H100"}
TOLERATES_GPU = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


@pytest.mark.parametrize(
    ("tolerations", "labels", "taints", "want"),
    [
        ([], H100_LABELS, (), True),
        ([], H100_LABELS, (GPU_TAINT,), False),
        (TOLERATES_GPU, H100_LABELS, (GPU_TAINT,), True),
        (TOLERATES_GPU, H100_LABELS, (GPU_TAINT, Taint("dedicated", "x", "NoExecute")), False),
        (TOLERATES_GPU, {"nvidia.com/gpu.product": "NVIDIA-A100"}, (GPU_TAINT,), False),
    ],
    ids=["untainted", "untolerated-taint", "tolerated-taint", "one-taint-untolerated", "labels-differ"],
)
def test_matches_node_with_taints(tolerations: list[dict[str, Any]], labels: dict[str, str],
                                  taints: tuple[Taint, ...], want: bool) -> None:
    machine_type = MachineType.model_validate(builders.machine_type(tolerations=tolerations))
    assert machine_type.spec.matches_node(labels, taints) is want


def _node(name: str, labels: dict[str, str], taints: list[dict[str, str]]) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "allocatable": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "8"}}}


def test_the_capacity_view_and_nodepools_match_nodes_the_same_way() -> None:
    machine_type = MachineType.model_validate(builders.machine_type(tolerations=TOLERATES_GPU))
    gpu_taint = [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]
    nodes = [_node("fits", H100_LABELS, gpu_taint),
             _node("tainted", H100_LABELS, [*gpu_taint, {"key": "dedicated", "value": "x", "effect": "NoSchedule"}]),
             _node("soft-taint", H100_LABELS, [{"key": "dedicated", "effect": "PreferNoSchedule"}]),
             _node("other", {"nvidia.com/gpu.product": "NVIDIA-A100"}, gpu_taint)]
    cache = ClusterCache()
    for node in nodes:
        cache.upsert_node(node)
    assert sorted(n.name for n in cache.nodes_of_type(machine_type)) == ["fits", "soft-taint"]
    for node in nodes:
        template = {"metadata": {"labels": node["metadata"]["labels"]}, "spec": {"taints": node["spec"]["taints"]}}
        pool = nodepool_nodes({"metadata": {"name": node["metadata"]["name"]}, "spec": {"template": template}})
        assert pool.of_type(machine_type) is (node["metadata"]["name"] in ("fits", "soft-taint"))
