"""Shared building blocks of the API: base models, wire types, patterns, CEL rules, tolerations.

Pure pydantic: this package must not import kopf, kubernetes_asyncio or aiohttp.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from falapp_operator.api.units import parse_duration, parse_quantity

GROUP = "fal.ai"
MAX_MACHINE_TYPES = 8  # entries of FalApp spec.machineTypes
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# --- patterns (RE2-compatible: used both by pydantic and by the apiserver) -------------------------

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
# Non-negative Kubernetes quantity: 12, 0.5, 500m, 80Gi, 1e3.
QUANTITY = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DURATION = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_CEL = "^([0-9]+([.][0-9]+)?(ms|s|m|h))+$"  # DURATION without backslashes, for a CEL string
CONDITION_TYPE = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
# What users write in spec.machineTypes: a MachineType's name or displayName, any case.
MACHINE_TYPE_NAME = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


# --- CEL rules (x-kubernetes-validations) -----------------------------------------------------------


def cel(rule: str, message: str, *, field_path: str | None = None, reason: str | None = None) -> dict:
    """One `x-kubernetes-validations` entry."""
    out: dict[str, Any] = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


def x_validations(*rules: dict) -> dict[str, Any]:
    """`json_schema_extra` carrying CEL rules for a field or a model."""
    return {"x-kubernetes-validations": list(rules)}


def list_map(*keys: str) -> dict[str, Any]:
    """`json_schema_extra` of a list merged by keys (server-side apply, duplicate detection)."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


# --- base models ------------------------------------------------------------------------------------


class ApiModel(BaseModel):
    """Spec-side model: camelCase on the wire, unknown fields refused (like the apiserver)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def to_wire(self, **kwargs: Any) -> dict[str, Any]:
        """JSON-ready dict with wire (camelCase) names and no null fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True, **kwargs)


class StatusModel(ApiModel):
    """Status-side model: tolerant when reading what an older operator wrote."""

    model_config = ConfigDict(extra="ignore")


# --- wire types -------------------------------------------------------------------------------------


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with second precision, as Kubernetes writes metav1.Time."""
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    """A Kubernetes timestamp (`2006-01-02T15:04:05Z`, optionally with fractions) as UTC; None stays None."""
    return _utc(datetime.fromisoformat(text.replace("Z", "+00:00"))) if text else None


Timestamp = Annotated[
    datetime,
    AfterValidator(_utc),
    PlainSerializer(format_time, return_type=str, when_used="json"),
]
"""A date-time, always UTC; serialized as `2006-01-02T15:04:05Z`."""


def _number_to_str(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a quantity must be a number or a string")
    if isinstance(value, int | float):
        return str(value)
    return value


def _check_quantity(value: str) -> str:
    if not re.fullmatch(QUANTITY, value):
        raise ValueError(f"invalid quantity {value!r}: expected a non-negative quantity like 12, 500m, 80Gi")
    parse_quantity(value)
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_number_to_str),
    AfterValidator(_check_quantity),
    WithJsonSchema({"x-kubernetes-int-or-string": True, "pattern": QUANTITY}),
]
"""A non-negative Kubernetes quantity (`12`, `500m`, `80Gi`); integers are accepted and kept as strings."""


def duration_type(minimum: str, maximum: str) -> Any:
    """A Go-style duration string bounded to [minimum, maximum], checked by pydantic and by CEL."""
    lo, hi = parse_duration(minimum), parse_duration(maximum)
    message = f"must be a duration between {minimum} and {maximum} (e.g. 90s, 1m30s, 15m)"

    def check(value: str) -> str:
        if not lo <= parse_duration(value) <= hi:
            raise ValueError(message)
        return value

    # Guarded by the pattern so a malformed value reports only the pattern error.
    rule = (
        f"!self.matches('{_DURATION_CEL}') || "
        f"(duration(self) >= duration('{minimum}') && duration(self) <= duration('{maximum}'))"
    )
    return Annotated[
        str,
        Field(pattern=DURATION, max_length=32),
        AfterValidator(check),
        Field(json_schema_extra=x_validations(cel(rule, message))),
    ]


PORT_REF_MESSAGE = "port must be a number 1-65535 or a port name (lower-case, with a letter, at most 15)"
PORT_NAME_MESSAGE = "a port name must contain at least one letter"


def _check_port_ref(value: int | str) -> int | str:
    if isinstance(value, bool):
        raise ValueError(PORT_REF_MESSAGE)
    if isinstance(value, int):
        if not 1 <= value <= 65535:
            raise ValueError(PORT_REF_MESSAGE)
        return value
    if not (len(value) <= 15 and re.fullmatch(DNS1123_LABEL, value) and re.search("[a-z]", value)):
        raise ValueError(PORT_REF_MESSAGE)
    return value


def check_port_name(value: str) -> str:
    """Validate a container port name (an IANA service name) as Kubernetes does."""
    if not (len(value) <= 15 and re.fullmatch(DNS1123_LABEL, value)):
        raise ValueError("a port name has at most 15 lower-case letters, digits and '-'")
    if not re.search("[a-z]", value):
        raise ValueError(PORT_NAME_MESSAGE)
    return value


PortRef = Annotated[
    int | str,
    AfterValidator(_check_port_ref),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "maxLength": 15,
            "x-kubernetes-validations": [
                cel(
                    "type(self) == int ? (int(self) >= 1 && int(self) <= 65535)"
                    " : (string(self).matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')"
                    " && string(self).matches('[a-z]'))",
                    PORT_REF_MESSAGE,
                )
            ],
        }
    ),
]
"""A container port, by number (1..65535) or by name."""


# --- tolerations ------------------------------------------------------------------------------------


class Toleration(ApiModel):
    """Lets pods schedule onto nodes with a matching taint (the Kubernetes core Toleration)."""

    model_config = ConfigDict(
        json_schema_extra=x_validations(
            cel(
                "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
                "value must be empty when operator is Exists",
                field_path=".value",
            ),
            cel(
                "(has(self.key) && self.key != '') || (has(self.operator) && self.operator == 'Exists')",
                "operator must be Exists when key is empty",
                field_path=".operator",
            ),
            cel(
                "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
                "tolerationSeconds requires effect NoExecute",
                field_path=".tolerationSeconds",
            ),
        )
    )

    key: str | None = Field(
        None,
        max_length=316,
        pattern=QUALIFIED_NAME,
        description="Taint key the toleration applies to. Empty matches all keys (operator must be Exists).",
    )
    operator: Literal["Exists", "Equal"] | None = Field(
        None, description="Exists (any value) or Equal (the value must match). Defaults to Equal."
    )
    value: str | None = Field(
        None, max_length=63, pattern=LABEL_VALUE, description="Taint value to match; empty with Exists."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match. Empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        None,
        description="For effect NoExecute: how long the pod stays bound after the taint appears. "
        "Absent means forever.",
    )

    @model_validator(mode="after")
    def _rules(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("value must be empty when operator is Exists")
        if not self.key and self.operator != "Exists":
            raise ValueError("operator must be Exists when key is empty")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds requires effect NoExecute")
        return self


# --- object metadata (read side; never part of a CRD schema) ----------------------------------------


class ObjectMeta(BaseModel):
    """The subset of Kubernetes object metadata the operator reads."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    name: str = Field(description="Object name.")
    namespace: str | None = Field(None, description="Namespace; absent for cluster-scoped objects.")
    uid: str | None = Field(None, description="Server-assigned unique id.")
    generation: int | None = Field(None, description="Spec generation.")
    resource_version: str | None = Field(None, description="Opaque version for optimistic concurrency.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")
    creation_timestamp: Timestamp | None = Field(None, description="Creation time.")
    deletion_timestamp: Timestamp | None = Field(None, description="Set when deletion was requested.")


def plain(value: Any) -> Any:
    """Deep-copy Mappings/sequences (e.g. kopf bodies) into plain dicts and lists."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value
