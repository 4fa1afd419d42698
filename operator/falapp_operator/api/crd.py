"""CustomResourceDefinitions built from the pydantic models (used by hack/gen_crds.py and the tests).

`structural_schema()` turns pydantic's JSON schema into a Kubernetes structural schema: every `$ref`
inlined, `Optional` unions collapsed (an optional field is simply not `required`), titles and
`default: null` dropped, real defaults and `x-kubernetes-*` extensions kept. It fails loudly on
anything the apiserver would refuse, and on a property without a description.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from falapp_operator.api.common import CelRule

# Keys that must never reach a structural schema.
_FORBIDDEN = ("$ref", "allOf", "anyOf", "oneOf", "not", "uniqueItems", "examples", "definitions", "$defs")


class SchemaError(ValueError):
    """The model cannot be expressed as a structural schema."""


@dataclass(frozen=True)
class PrinterColumn:
    """One `additionalPrinterColumns` entry (what `kubectl get` shows)."""

    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str
    priority: int = 0

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
        }
        if self.priority:
            out["priority"] = self.priority
        return out


@dataclass(frozen=True)
class ResourceInfo:
    """Names and CRD settings of one kind; the k8s layer reads group/version/plural from here."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    scope: Literal["Namespaced", "Cluster"]
    description: str
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    printer_columns: tuple[PrinterColumn, ...] = ()
    # scale subresource: (specReplicasPath, statusReplicasPath, labelSelectorPath)
    scale: tuple[str, str, str] | None = None
    # extra schema for metadata (only name/generateName may be restricted)
    metadata_schema: dict[str, Any] = field(default_factory=dict)
    # CEL rules on the whole object (the only place where metadata.name and spec meet)
    root_rules: tuple[CelRule, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"

    @property
    def namespaced(self) -> bool:
        return self.scope == "Namespaced"


def _merge(inner: dict[str, Any], outer: dict[str, Any]) -> dict[str, Any]:
    """Overlay a field's own keys (description, default, CEL rules) on its resolved type schema."""
    merged = dict(inner)
    for key, value in outer.items():
        if key == "x-kubernetes-validations" and key in merged:
            merged[key] = list(merged[key]) + [r for r in value if r not in merged[key]]
        else:
            merged[key] = value
    return merged


def _resolve(ref: str, defs: dict[str, Any], path: str) -> dict[str, Any]:
    prefix = "#/$defs/"
    if not ref.startswith(prefix) or ref[len(prefix) :] not in defs:
        raise SchemaError(f"{path}: cannot resolve {ref}")
    return copy.deepcopy(defs[ref[len(prefix) :]])


def _convert(node: dict[str, Any], defs: dict[str, Any], path: str, stack: tuple[str, ...]) -> dict[str, Any]:
    node = dict(node)
    if "$ref" in node:
        ref = node.pop("$ref")
        if ref in stack:
            raise SchemaError(f"{path}: recursive type {ref} cannot be a structural schema")
        node = _merge(_convert(_resolve(ref, defs, path), defs, path, (*stack, ref)), node)
    if "allOf" in node and len(node["allOf"]) == 1:
        node = _merge(_convert(node.pop("allOf")[0], defs, path, stack), node)
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o != {"type": "null"}]
        if len(options) != 1:
            raise SchemaError(f"{path}: unions other than Optional[X] need an explicit int-or-string schema")
        node = _merge(_convert(options[0], defs, path, stack), node)
    node.pop("title", None)
    if "default" in node and node["default"] is None:
        del node["default"]
    if node.get("additionalProperties") is False:
        del node["additionalProperties"]
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for key in _FORBIDDEN:
        if key in node:
            raise SchemaError(f"{path}: {key} is not allowed in a structural schema")
    if "type" not in node and not node.get("x-kubernetes-int-or-string"):
        raise SchemaError(f"{path}: no type")
    if "properties" in node:
        props = {}
        for name, sub in node["properties"].items():
            sub_path = f"{path}.{name}"
            converted = _convert(sub, defs, sub_path, stack)
            if not converted.get("description"):
                raise SchemaError(f"{sub_path}: every field needs a description (kubectl explain)")
            props[name] = converted
        node["properties"] = props
        if not node.get("required"):
            node.pop("required", None)
    if isinstance(node.get("items"), dict):
        node["items"] = _convert(node["items"], defs, f"{path}[]", stack)
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _convert(node["additionalProperties"], defs, f"{path}{{}}", stack)
    return node


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a pydantic model, using wire (alias) names."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _convert(raw, defs, model.__name__, ())


def openapi_schema(info: ResourceInfo) -> dict[str, Any]:
    """The `openAPIV3Schema` of a kind: apiVersion/kind/metadata plus generated spec and status."""
    spec = structural_schema(info.spec_model)
    status = structural_schema(info.status_model)
    metadata: dict[str, Any] = {"type": "object", **copy.deepcopy(info.metadata_schema)}
    root: dict[str, Any] = {
        "type": "object",
        "description": info.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion is the versioned schema of this object.",
            },
            "kind": {
                "type": "string",
                "description": "Kind is the REST resource this object represents.",
            },
            "metadata": metadata,
            "spec": spec,
            "status": status,
        },
    }
    if info.root_rules:
        root["x-kubernetes-validations"] = [dict(r) for r in info.root_rules]
    return root


def build_crd(info: ResourceInfo) -> dict[str, Any]:
    """The apiextensions.k8s.io/v1 CustomResourceDefinition of a kind."""
    subresources: dict[str, Any] = {"status": {}}
    if info.scale:
        spec_path, status_path, selector_path = info.scale
        subresources["scale"] = {
            "specReplicasPath": spec_path,
            "statusReplicasPath": status_path,
            "labelSelectorPath": selector_path,
        }
    names: dict[str, Any] = {
        "kind": info.kind,
        "listKind": f"{info.kind}List",
        "plural": info.plural,
        "singular": info.singular,
    }
    if info.short_names:
        names["shortNames"] = list(info.short_names)
    if info.categories:
        names["categories"] = list(info.categories)
    version = {
        "name": info.version,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": openapi_schema(info)},
        "subresources": subresources,
        "additionalPrinterColumns": [c.to_wire() for c in info.printer_columns],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": info.crd_name},
        "spec": {"group": info.group, "names": names, "scope": info.scope, "versions": [version]},
    }
