"""crds/ and catalog/default.yaml are generated from the models, current, and structural."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from falapp_operator.api import FALAPP, MACHINETYPE, build_crd

REPO = Path(__file__).resolve().parents[2]
GEN = REPO / "hack" / "gen_crds.py"
CRD_FILES = {
    FALAPP.kind: REPO / "crds" / "fal.ai_falapps.yaml",
    MACHINETYPE.kind: REPO / "crds" / "fal.ai_machinetypes.yaml",
}


def _gen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(GEN), *args], capture_output=True, text=True, cwd=REPO)


def test_generated_files_are_current() -> None:
    result = _gen("--check")
    assert result.returncode == 0, f"run `python hack/gen_crds.py`:\n{result.stdout}{result.stderr}"


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    assert _gen("--root", str(tmp_path)).returncode == 0
    assert _gen("--check", "--root", str(tmp_path)).returncode == 0
    crd = tmp_path / "crds" / "fal.ai_falapps.yaml"
    crd.write_text(crd.read_text().replace("maxItems: 8", "maxItems: 9"))
    (tmp_path / "catalog" / "default.yaml").unlink()
    result = _gen("--check", "--root", str(tmp_path))
    assert result.returncode == 1
    assert "-                maxItems: 9" in result.stdout and "+                maxItems: 8" in result.stdout
    assert "catalog/default.yaml (generated)" in result.stdout


def _crd(kind: str) -> dict[str, Any]:
    return yaml.safe_load(CRD_FILES[kind].read_text())


def _schema(kind: str) -> dict[str, Any]:
    [version] = _crd(kind)["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def _walk(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_schema_is_structural(kind: str) -> None:
    for path, node in _walk(_schema(kind), kind):
        assert "$ref" not in node and "$defs" not in node and "definitions" not in node, path
        assert "title" not in node, path
        assert "nullable" not in node, path
        assert node.get("default", "absent") is not None, f"{path}: default: null"
        assert node.get("type") or node.get("x-kubernetes-int-or-string"), f"{path}: no type"
        for junctor in ("anyOf", "oneOf", "allOf", "not"):
            for sub in node.get(junctor) or []:
                assert "type" not in sub and "description" not in sub and "default" not in sub, path
        assert node.get("additionalProperties") is not False, path
        assert not ("additionalProperties" in node and "properties" in node), path
        assert node.get("uniqueItems") is not True, path
        for name, sub in node.get("properties", {}).items():
            if f"{path}.{name}" != f"{kind}.metadata":
                assert sub.get("description"), f"{path}.{name}: no description"
        if node.get("type") == "array" and node.get("x-kubernetes-list-type") == "map":
            keys = node["x-kubernetes-list-map-keys"]
            item = node["items"]
            for key in keys:
                assert key in item.get("required", []) or "default" in item["properties"][key], (
                    f"{path}: {key}"
                )


def _rules(kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, node in _walk(_schema(kind), kind):
        for rule in node.get("x-kubernetes-validations", []):
            yield path, rule


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_cel_rules_iterate_bounded_collections(kind: str) -> None:
    """Every list/map/string a CEL rule sits on or iterates has a size bound (CEL cost budget)."""
    for path, node in _walk(_schema(kind), kind):
        if not node.get("x-kubernetes-validations"):
            continue
        for rule in node["x-kubernetes-validations"]:
            assert rule["message"], path
        if node.get("type") == "array":
            assert "maxItems" in node, path
        if node.get("type") == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, path
        if node.get("type") == "string":
            assert "maxLength" in node, path
    spec = _schema(kind)["properties"]["spec"]
    for name, sub in spec["properties"].items():
        if sub.get("type") == "array" and any(
            f"self.{name}" in r["rule"] for r in spec.get("x-kubernetes-validations", [])
        ):
            assert "maxItems" in sub, name


def test_falapp_crd_shape() -> None:
    crd = _crd(FALAPP.kind)
    assert crd == build_crd(FALAPP)
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["singular"]) == ("FalApp", "falapps", "falapp")
    assert names["shortNames"] == ["fa"] and names["categories"] == ["fal"]
    assert crd["spec"]["scope"] == "Namespaced" and crd["metadata"]["name"] == "falapps.fal.ai"
    [version] = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns)[:3] == ["Ready", "Machines", "Replicas"]
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Reason"]["priority"] == 1 and columns["Age"]["type"] == "date"
    schema = version["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]
    # machineTypes may be left out when gpuMemory is set (a CEL rule of the spec says so)
    assert schema["required"] == ["spec"] and set(spec["required"]) == {"image"}
    assert any(r["rule"] == "has(self.machineTypes) || has(self.gpuMemory)" for r in spec["x-kubernetes-validations"])
    assert columns["Candidates"]["priority"] == 1 and columns["Candidates"]["jsonPath"] == ".status.candidates"
    props = spec["properties"]
    assert props["replicas"]["default"] == 1 and props["requiresNvenc"]["default"] is False
    assert props["fallback"]["default"] == {}
    fallback = props["fallback"]["properties"]
    assert fallback["unschedulableTimeout"]["default"] == "60s"
    assert fallback["scaleUpTimeout"]["default"] == "15m"
    assert fallback["returnToPreferred"]["default"] is True
    assert (props["machineTypes"]["minItems"], props["machineTypes"]["maxItems"]) == (1, 8)
    assert props["resources"]["properties"]["cpu"]["x-kubernetes-int-or-string"] is True
    for forbidden in ("hostNetwork", "hostPID", "hostIPC", "securityContext", "nodeName", "nodeSelector"):
        assert forbidden not in props
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == [
        "type"
    ]
    assert conditions["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert schema["properties"]["status"]["properties"]["attempts"]["maxItems"] == 20


def test_falapp_status_default_is_unobserved() -> None:
    """A new FalApp reads back with status.observedGeneration 0 (kstatus: InProgress, not Current);
    the default is a status the operator itself accepts. MachineType keeps no status default."""
    from falapp_operator.api import FalAppStatus

    status = _schema(FALAPP.kind)["properties"]["status"]
    assert status["default"] == {"observedGeneration": 0}
    assert status["properties"]["observedGeneration"]["minimum"] == 0
    assert FalAppStatus.model_validate(status["default"]).observed_generation == 0
    assert "default" not in _schema(MACHINETYPE.kind)["properties"]["status"]


def test_machinetype_crd_shape() -> None:
    crd = _crd(MACHINETYPE.kind)
    assert crd == build_crd(MACHINETYPE)
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == ("MachineType", "machinetypes", ["mt"])
    assert crd["spec"]["scope"] == "Cluster"
    [version] = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:7] == ["Display", "VRAM", "GPUs-Per-Replica", "Nodes", "Free-GPUs", "Placed", "Pending"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["resources"]
    assert spec["properties"]["gpu"]["properties"]["resourceName"]["default"] == "nvidia.com/gpu"
    assert any("nvencNodeSelector" in r["message"] for r in spec["x-kubernetes-validations"])


def test_catalog_yaml_matches_models() -> None:
    from falapp_operator.api import DEFAULT_CATALOG, MachineType

    docs = list(yaml.safe_load_all((REPO / "catalog" / "default.yaml").read_text()))
    assert [d["metadata"]["name"] for d in docs] == [mt.name for mt in DEFAULT_CATALOG]
    assert [MachineType.model_validate(d) for d in docs] == list(DEFAULT_CATALOG)
