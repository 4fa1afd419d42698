"""Node label requirements (one node-selector term's matchExpressions), validated like Kubernetes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator

from falapp_operator.api.common import LABEL_VALUE, QUALIFIED_NAME, ApiModel, cel, x_validations

LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]

_IN_NOTIN = "self.operator == 'In' || self.operator == 'NotIn'"
_GT_LT = "self.operator == 'Gt' || self.operator == 'Lt'"


class NodeSelectorRequirement(ApiModel):
    """A node label requirement; all requirements of a machine type must hold (ANDed)."""

    model_config = ConfigDict(
        json_schema_extra=x_validations(
            cel(
                f"!({_IN_NOTIN}) || (has(self.values) && size(self.values) > 0)",
                "values must not be empty for operator In or NotIn",
                field_path=".values",
            ),
            cel(
                f"({_IN_NOTIN}) || ({_GT_LT}) || !has(self.values) || size(self.values) == 0",
                "values must be empty for operator Exists or DoesNotExist",
                field_path=".values",
            ),
            cel(
                f"!({_GT_LT}) || (has(self.values) && size(self.values) == 1 "
                "&& self.values[0].matches('^-?[0-9]+$'))",
                "values must be exactly one integer for operator Gt or Lt",
                field_path=".values",
            ),
        )
    )

    key: str = Field(
        max_length=316, pattern=QUALIFIED_NAME, description="Node label key, e.g. nvidia.com/gpu.product."
    )
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="In/NotIn (label value in/not in values), Exists/DoesNotExist, Gt/Lt (integer compare)."
    )
    values: list[LabelValue] = Field(
        default_factory=list, max_length=64, description="Label values; any of them matches for In."
    )

    @model_validator(mode="after")
    def _values(self) -> NodeSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError("values must not be empty for operator In or NotIn")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError("values must be empty for operator Exists or DoesNotExist")
        if self.operator in ("Gt", "Lt") and (len(self.values) != 1 or not _is_int(self.values[0])):
            raise ValueError("values must be exactly one integer for operator Gt or Lt")
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a node with these labels satisfies the requirement."""
        value = labels.get(self.key)
        match self.operator:
            case "In":
                return value is not None and value in self.values
            case "NotIn":
                return value is None or value not in self.values
            case "Exists":
                return value is not None
            case "DoesNotExist":
                return value is None
            case _:
                if value is None or not _is_int(value):
                    return False
                bound = int(self.values[0])
                return int(value) > bound if self.operator == "Gt" else int(value) < bound


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit() and text.count("-") <= 1
