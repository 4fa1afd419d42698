"""Matching nodes and labels like Kubernetes: a node-selector term's matchExpressions (machine types'
nodes), a LabelSelector (which namespaces may use a machine type), and node taints against tolerations."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, NamedTuple, Self

from pydantic import ConfigDict, Field, model_validator

from falapp_operator.api.common import (
    LABEL_VALUE,
    QUALIFIED_NAME,
    QUALIFIED_NAME_MAX,
    ApiModel,
    Toleration,
    cel,
    x_validations,
)

LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]

_IN_NOTIN = "self.operator == 'In' || self.operator == 'NotIn'"
_GT_LT = "self.operator == 'Gt' || self.operator == 'Lt'"


def _values_rules(*, numeric: bool) -> dict[str, Any]:
    """The CEL twin of check_values on a requirement kind (with Gt/Lt when `numeric`)."""
    empty_allowed = f"({_IN_NOTIN}) || ({_GT_LT})" if numeric else f"({_IN_NOTIN})"
    rules = [
        cel(
            f"!({_IN_NOTIN}) || (has(self.values) && size(self.values) > 0)",
            "values must not be empty for operator In or NotIn",
            field_path=".values",
        ),
        cel(
            f"{empty_allowed} || !has(self.values) || size(self.values) == 0",
            "values must be empty for operator Exists or DoesNotExist",
            field_path=".values",
        ),
    ]
    if numeric:
        rules.append(
            cel(
                f"!({_GT_LT}) || (has(self.values) && size(self.values) == 1 "
                "&& self.values[0].matches('^-?[0-9]+$'))",
                "values must be exactly one integer for operator Gt or Lt",
                field_path=".values",
            )
        )
    return x_validations(*rules)


class _Requirement(ApiModel):
    """What both kinds of label requirement share: values checked against the operator, and matching."""

    key: str
    operator: str
    values: list[LabelValue] = Field(
        default_factory=list, max_length=64, description="Label values; any of them matches for In."
    )

    @model_validator(mode="after")
    def _values(self) -> Self:
        check_values(self.operator, self.values)
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether an object (a node) with these labels satisfies the requirement."""
        return requirement_matches(self.key, self.operator, self.values, labels)


class NodeSelectorRequirement(_Requirement):
    """A node label requirement; all requirements of a machine type must hold (ANDed)."""

    model_config = ConfigDict(json_schema_extra=_values_rules(numeric=True))

    key: str = Field(
        max_length=QUALIFIED_NAME_MAX,
        pattern=QUALIFIED_NAME,
        description="Node label key, e.g. nvidia.com/gpu.product.",
    )
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="In/NotIn (label value in/not in values), Exists/DoesNotExist, Gt/Lt (integer compare)."
    )


def check_values(operator: str, values: Sequence[str]) -> None:
    """The values a requirement's operator needs (Python twin of the CEL rules on both kinds)."""
    if operator in ("In", "NotIn") and not values:
        raise ValueError("values must not be empty for operator In or NotIn")
    if operator in ("Exists", "DoesNotExist") and values:
        raise ValueError("values must be empty for operator Exists or DoesNotExist")
    if operator in ("Gt", "Lt") and (len(values) != 1 or not _is_int(values[0])):
        raise ValueError("values must be exactly one integer for operator Gt or Lt")


def requirement_matches(key: str, operator: str, values: Sequence[str], labels: Mapping[str, str]) -> bool:
    """Whether labels satisfy one requirement (In, NotIn, Exists, DoesNotExist, Gt, Lt) as Kubernetes
    matches node selector terms and label selectors."""
    value = labels.get(key)
    match operator:
        case "In":
            return value is not None and value in values
        case "NotIn":
            return value is None or value not in values
        case "Exists":
            return value is not None
        case "DoesNotExist":
            return value is None
        case "Gt" | "Lt":
            if value is None or not _is_int(value) or len(values) != 1 or not _is_int(values[0]):
                return False
            bound = int(values[0])
            return int(value) > bound if operator == "Gt" else int(value) < bound
    return False


def _is_int(text: str) -> bool:
    return re.fullmatch(r"-?[0-9]+", text) is not None


class Taint(NamedTuple):
    """A node taint that keeps pods off (NoSchedule, NoExecute); PreferNoSchedule ones do not count."""

    key: str
    value: str
    effect: str


SCHEDULING_EFFECTS = ("NoSchedule", "NoExecute")


def scheduling_taints(taints: Iterable[Mapping[str, Any]] | None) -> tuple[Taint, ...]:
    """The taints (as a Node's or a NodePool template's spec.taints lists them) that keep pods off."""
    return tuple(Taint(t["key"], t.get("value") or "", t["effect"]) for t in taints or []
                 if t.get("effect") in SCHEDULING_EFFECTS)


def tolerated(taint: Taint, tolerations: Iterable[Toleration]) -> bool:
    """Whether any of the tolerations lets a pod onto a node with the taint."""
    return any(toleration.tolerates(*taint) for toleration in tolerations)


class LabelSelectorRequirement(_Requirement):
    """A label requirement of a LabelSelector."""

    model_config = ConfigDict(json_schema_extra=_values_rules(numeric=False))

    key: str = Field(max_length=QUALIFIED_NAME_MAX, pattern=QUALIFIED_NAME, description="Label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In/NotIn (label value in/not in values), Exists/DoesNotExist."
    )


class LabelSelector(ApiModel):
    """A Kubernetes label selector: matchLabels and matchExpressions, all of which must hold. An empty
    selector matches everything."""

    match_labels: dict[str, LabelValue] = Field(
        default_factory=dict, max_length=32, description="Labels that must all be present with these values."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=16, description="Label requirements that must all hold."
    )

    @property
    def matches_everything(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether an object with these labels is selected."""
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        return all(req.matches(labels) for req in self.match_expressions)
