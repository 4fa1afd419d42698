"""hack/fleet.py as hack/cluster.sh runs it: fixed pools become nodes, autoscaled pools NodePools."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from tests.conftest import REPO

FLEET = REPO / "hack" / "fleet.py"


def render(path, output: str = "nodes") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(FLEET), str(path), "--output", output], capture_output=True, text=True)


def test_default_fleet_has_no_autoscaled_pool():
    assert render(REPO / "hack" / "fleets" / "default.yaml", "autoscaled-pools").stdout == ""
    assert render(REPO / "hack" / "fleets" / "default.yaml", "nodepools").stdout == ""


def test_autoscaled_fleet_renders_fixed_nodes_nodepools_and_instance_types():
    path = REPO / "hack" / "fleets" / "autoscaled.yaml"
    nodes = list(yaml.safe_load_all(render(path).stdout))
    assert {n["metadata"]["labels"]["fal.ai/fleet-pool"] for n in nodes} == {"a100", "cpu"}
    objects = list(yaml.safe_load_all(render(path, "nodepools").stdout))
    assert [o["kind"] for o in objects] == ["KWOKNodeClass", "NodePool"]
    pool = objects[1]["spec"]
    # the same GPU Feature Discovery labels and taint as a fixed H100 node of the default fleet
    fixed = next(n for n in yaml.safe_load_all(render(REPO / "hack" / "fleets" / "default.yaml").stdout)
                 if n["metadata"]["labels"].get("fal.ai/fleet-pool") == "h100")
    gfd = {k: v for k, v in fixed["metadata"]["labels"].items() if k.startswith("nvidia.com/")}
    assert gfd.items() <= pool["template"]["metadata"]["labels"].items()
    assert pool["template"]["spec"]["taints"] == fixed["spec"]["taints"]
    assert pool["limits"] == {"nodes": "2"}
    types = json.loads(render(path, "instance-types").stdout)
    assert [t["name"] for t in types] == ["p5.48xlarge"] and types[0]["resources"]["nvidia.com/gpu"] == "8"


def test_an_autoscaled_pool_without_its_limit_is_refused_by_field(tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({
        "pools": [{"name": "cpu", "count": 1, "cpu": 4, "memory": "8Gi"}],
        "karpenter": {"nodePools": [{"name": "h100", "cpu": 192, "memory": "2Ti", "instanceType": "p5.48xlarge"}]},
    }))
    result = render(path, "nodepools")
    assert result.returncode == 1 and "karpenter.nodePools[0] is missing maxNodes" in result.stderr
