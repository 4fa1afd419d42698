"""Shared building blocks of the API: base models, wire types, patterns, CEL rules, tolerations.

Pure pydantic: this package must not import kopf, kubernetes_asyncio or aiohttp.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Final, Literal, NotRequired, TypedDict

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

from falapp_operator.api.times import format_time, utc
from falapp_operator.api.units import parse_duration, parse_quantity

GROUP = "fal.ai"
MAX_MACHINE_TYPES = 8  # entries of FalApp spec.machineTypes
# the largest value of Kubernetes' int32 fields
INT32_MAX = 2**31 - 1
MAX_MESSAGE = 1024  # characters of a message the operator writes (attempts, candidates, events)
VERSION = "v1alpha1"
API_VERSION: Final = "fal.ai/v1alpha1"  # spelled out, so that it is the models' Literal to a type checker
assert API_VERSION == f"{GROUP}/{VERSION}"

# --- patterns (RE2-compatible: used both by pydantic and by the apiserver) -------------------------

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# A label/annotation/taint key: optional DNS-1123 subdomain prefix and "/", then a name. No backslashes,
# so the same text is a CEL string literal too. Lengths (prefix <= 253, name <= 63) are checked apart.
QUALIFIED_NAME = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
QUALIFIED_NAME_MAX = 253 + 1 + 63
# Non-negative Kubernetes quantity: 12, 0.5, 500m, 80Gi, 1e3 (exponents are integers, as Kubernetes parses them).
QUANTITY = (
    r"^(([0-9]+([.][0-9]*)?)|([.][0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]{1,3}))?$"
)
QUANTITY_MAX = "1P"  # no cpu, memory or size anywhere comes near; keeps the arithmetic on them finite
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


class CelRule(TypedDict):
    """One `x-kubernetes-validations` entry, spelled as in a CRD's schema."""

    rule: str
    message: str
    messageExpression: NotRequired[str]
    fieldPath: NotRequired[str]
    reason: NotRequired[str]


def cel(rule: str, message: str, *, field_path: str | None = None, reason: str | None = None,
        message_expression: str | None = None) -> CelRule:
    """One `x-kubernetes-validations` entry (`message_expression` may name the offending value; the
    apiserver falls back to `message` if it cannot be evaluated)."""
    out: CelRule = {"rule": rule, "message": message}
    if message_expression:
        out["messageExpression"] = message_expression
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


def x_validations(*rules: CelRule) -> dict[str, Any]:
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

    def to_patch(self) -> dict[str, Any]:
        """The merge patch that writes this status: wire names, only the fields it sets (as read, or
        given when built), none null. A field left out keeps its stored value; a list set to [] empties."""
        return self.to_wire(exclude_unset=True)


def truncate(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` in at most `limit` characters; a cut one ends in "..." so a reader sees it was cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- wire types -------------------------------------------------------------------------------------


Timestamp = Annotated[
    datetime,
    AfterValidator(utc),
    PlainSerializer(format_time, return_type=str, when_used="json"),
]
"""A date-time, always UTC; serialized as `2006-01-02T15:04:05Z`."""


def _number_to_str(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a quantity must be a number or a string")
    if isinstance(value, int | float):
        return str(value)
    return value


QUANTITY_RANGE_MESSAGE = f"must be at most {QUANTITY_MAX}"


def _check_quantity(value: str) -> str:
    if not re.fullmatch(QUANTITY, value):
        raise ValueError(f"invalid quantity {value!r}: expected a non-negative quantity like 12, 500m, 80Gi")
    if parse_quantity(value) > parse_quantity(QUANTITY_MAX):
        raise ValueError(f"quantity {value!r} {QUANTITY_RANGE_MESSAGE}")
    return value


def _quantity_schema(range_rule: str, message: str) -> WithJsonSchema:
    """The schema of a quantity field: int-or-string, the pattern, and a CEL rule on its range (guarded,
    so a malformed value reports only the pattern error)."""
    return WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "pattern": QUANTITY,
            "maxLength": 64,
            "x-kubernetes-validations": [cel(f"!isQuantity(string(self)) || {range_rule}", message)],
        }
    )


Quantity = Annotated[
    str,
    BeforeValidator(_number_to_str),
    AfterValidator(_check_quantity),
    _quantity_schema(f"!quantity(string(self)).isGreaterThan(quantity('{QUANTITY_MAX}'))", QUANTITY_RANGE_MESSAGE),
]
"""A non-negative Kubernetes quantity (`12`, `500m`, `80Gi`) of at most 1P; integers are accepted and kept
as strings."""


GPU_MEMORY_MIN = "1Mi"
GPU_MEMORY_MAX = "16Ti"  # 16 GPUs (the most a replica may use) of 1Ti each: far beyond any GPU
GPU_MEMORY_MESSAGE = (
    f"gpuMemory must be between {GPU_MEMORY_MIN} and {GPU_MEMORY_MAX} (the VRAM one replica needs, e.g. 60Gi)"
)


def _check_gpu_memory(value: str) -> str:
    _check_quantity(value)
    if not parse_quantity(GPU_MEMORY_MIN) <= parse_quantity(value) <= parse_quantity(GPU_MEMORY_MAX):
        raise ValueError(GPU_MEMORY_MESSAGE)
    return value


GpuMemory = Annotated[
    str,
    BeforeValidator(_number_to_str),
    AfterValidator(_check_gpu_memory),
    _quantity_schema(
        f"(quantity(string(self)).compareTo(quantity('{GPU_MEMORY_MIN}')) >= 0 && "
        f"quantity(string(self)).compareTo(quantity('{GPU_MEMORY_MAX}')) <= 0)",
        GPU_MEMORY_MESSAGE,
    ),
]
"""VRAM a replica needs: a quantity between GPU_MEMORY_MIN and GPU_MEMORY_MAX."""


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


# --- keys: qualified names and reserved domains -----------------------------------------------------

# Label, annotation and taint keys in these domains, or their subdomains (node-role.kubernetes.io,
# controller.kubernetes.io, container.apparmor.security.beta.kubernetes.io, ...), belong to Kubernetes,
# node autoscalers, the GPU stack and this operator: a FalApp may not set or tolerate them.
RESERVED_DOMAINS = ("fal.ai", "kubernetes.io", "k8s.io", "karpenter.sh", "nvidia.com")
# ...except the recommended labels (app.kubernetes.io/part-of, ...), which are the user's.
USER_DOMAINS = ("app.kubernetes.io",)


def _domains_regex(domains: tuple[str, ...], subdomains: bool) -> str:
    alternatives = "|".join(d.replace(".", "[.]") for d in domains)
    return f"^{'([^/]*[.])?' if subdomains else ''}({alternatives})/"


RESERVED_KEY = _domains_regex(RESERVED_DOMAINS, subdomains=True)
USER_KEY = _domains_regex(USER_DOMAINS, subdomains=False)
RESERVED_DOMAINS_TEXT = ", ".join(f"{d}/" for d in RESERVED_DOMAINS) + " and their subdomains"


def is_reserved_key(key: str) -> bool:
    """Whether a label/annotation/taint key is in a reserved domain (see RESERVED_DOMAINS)."""
    return re.match(RESERVED_KEY, key) is not None and re.match(USER_KEY, key) is None


QUALIFIED_NAME_MESSAGE = (
    "is not a qualified name: an optional DNS subdomain of at most 253 characters and /, "
    "then a name of at most 63 (letters, digits, -, _, .)"
)


def is_qualified_name(key: str) -> bool:
    """Whether `key` is a Kubernetes qualified name (a label or annotation key)."""
    prefix, _, name = key.rpartition("/")
    return re.fullmatch(QUALIFIED_NAME, key) is not None and len(prefix) <= 253 and len(name) <= 63


# CEL twins of the two checks above, for a key variable `k`.
_CEL_QUALIFIED = f"(k.matches('{QUALIFIED_NAME}') && k.indexOf('/') <= 253 && k.size() - k.indexOf('/') <= 64)"
_CEL_NOT_RESERVED = f"(!k.matches('{RESERVED_KEY}') || k.matches('{USER_KEY}'))"
assert "\\" not in QUALIFIED_NAME + RESERVED_KEY + USER_KEY, "CEL string literals take no backslashes"


def map_key_rules(field: str) -> list[CelRule]:
    """CEL rules on a map whose keys are label/annotation keys; the messages name the first bad key."""
    return [
        cel(
            f"self.all(k, {_CEL_QUALIFIED})",
            f"{field} keys must be qualified names (prefix/name, e.g. example.com/team)",
            message_expression=f"'{field} key ' + self.filter(k, !{_CEL_QUALIFIED})[0] + ' {QUALIFIED_NAME_MESSAGE}'",
        ),
        cel(
            f"self.all(k, {_CEL_NOT_RESERVED})",
            f"{field} may not use keys under {RESERVED_DOMAINS_TEXT}",
            message_expression=f"'{field} key ' + self.filter(k, !{_CEL_NOT_RESERVED})[0] + ' is reserved: "
            f"{field} may not use keys under {RESERVED_DOMAINS_TEXT}'",
        ),
    ]


def check_map_keys(value: dict[str, str], field: str) -> dict[str, str]:
    """Python twin of `map_key_rules`."""
    for key in value:
        if not is_qualified_name(key):
            raise ValueError(f"{field} key {key} {QUALIFIED_NAME_MESSAGE}")
        if is_reserved_key(key):
            raise ValueError(f"{field} key {key} is reserved: {field} may not use keys under {RESERVED_DOMAINS_TEXT}")
    return value


# --- tolerations ------------------------------------------------------------------------------------


_TOLERATION_RULES = (
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


class Toleration(ApiModel):
    """Lets pods schedule onto nodes with a matching taint (the Kubernetes core Toleration)."""

    model_config = ConfigDict(json_schema_extra=x_validations(*_TOLERATION_RULES))

    key: str | None = Field(
        None,
        max_length=QUALIFIED_NAME_MAX,
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

    def tolerates(self, key: str, value: str, effect: str) -> bool:
        """Whether a pod with this toleration may land on a node with the taint `key=value:effect`, as
        the scheduler matches them (no effect: any; Exists without a key: every taint)."""
        if self.effect and self.effect != effect:
            return False
        if self.operator == "Exists":
            return not self.key or self.key == key
        return self.key == key and (self.value or "") == value


RESERVED_TAINT_MESSAGE = (
    f"a toleration key may not be under {RESERVED_DOMAINS_TEXT}: those taints (control plane, node "
    "conditions, autoscalers, GPUs) are tolerated only through machine types"
)


class AppToleration(Toleration):
    """A toleration a FalApp adds to its pods: always for one named taint key, never for a key the
    cluster or the machine types own (see RESERVED_DOMAINS)."""

    model_config = ConfigDict(
        json_schema_extra=x_validations(
            *_TOLERATION_RULES,
            cel(
                f"!self.key.matches('{RESERVED_KEY}') || self.key.matches('{USER_KEY}')",
                RESERVED_TAINT_MESSAGE,
                field_path=".key",
                message_expression=f"'key ' + self.key + ' is reserved: {RESERVED_TAINT_MESSAGE}'",
            ),
        )
    )

    key: str = Field(
        min_length=1,
        max_length=QUALIFIED_NAME_MAX,
        pattern=QUALIFIED_NAME,
        description="Taint key the toleration applies to (required: a FalApp cannot tolerate every taint). "
        f"Keys under {RESERVED_DOMAINS_TEXT} are refused; machine types tolerate those.",
    )

    @model_validator(mode="after")
    def _app_rules(self) -> AppToleration:
        if is_reserved_key(self.key):
            raise ValueError(f"key {self.key} is reserved: {RESERVED_TAINT_MESSAGE}")
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
