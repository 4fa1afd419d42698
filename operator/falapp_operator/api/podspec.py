"""The curated container/pod subset a FalApp may set (not a raw PodSpec: no privileged or host fields)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from falapp_operator.api.common import (
    DNS1123_LABEL,
    DNS1123_SUBDOMAIN,
    INT32_MAX,
    PORT_NAME_MESSAGE,
    ApiModel,
    CelRule,
    PortRef,
    Quantity,
    cel,
    check_port_name,
    x_validations,
)

ENV_NAME = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
ENV_PREFIX = r"^([-._a-zA-Z][-._a-zA-Z0-9]*)?$"
CONFIG_KEY = r"^[-._a-zA-Z0-9]+$"
# The NVIDIA container runtime reads NVIDIA_* variables (NVIDIA_VISIBLE_DEVICES=all exposes every GPU of
# the node): only the operator sets them, from the machine type.
RESERVED_ENV_PREFIX = "NVIDIA_"
RESERVED_ENV_MESSAGE = f"names starting with {RESERVED_ENV_PREFIX} are reserved for the GPU runtime"
RESERVED_ENV_PREFIX_MESSAGE = (
    f"prefix may not start with {RESERVED_ENV_PREFIX} nor begin it (N, NV, ... NVIDIA): "
    f"{RESERVED_ENV_MESSAGE}"
)
DOWNWARD_FIELD = (
    r"^(metadata\.(name|namespace|uid)|metadata\.(labels|annotations)\['[^']+'\]"
    r"|spec\.(nodeName|serviceAccountName)|status\.(hostIP|hostIPs|podIP|podIPs))$"
)


def exactly_one_rule(fields: tuple[str, ...], what: str) -> CelRule:
    """CEL rule: exactly one of `fields` is set."""
    count = " + ".join(f"(has(self.{f}) ? 1 : 0)" for f in fields)
    return cel(f"{count} == 1", f"{what} must set exactly one of {', '.join(fields)}")


def check_exactly_one(model: BaseModel, attrs: tuple[str, ...], what: str) -> None:
    """Python twin of `exactly_one_rule`; names are wire names, attrs the python attributes."""
    if sum(getattr(model, a) is not None for a in attrs) != 1:
        wire = [type(model).model_fields[a].alias or a for a in attrs]
        raise ValueError(f"{what} must set exactly one of {', '.join(wire)}")


# --- env ------------------------------------------------------------------------------------------------


class ConfigMapKeySelector(ApiModel):
    """Selects a key of a ConfigMap in the app's namespace."""

    name: str = Field(max_length=253, pattern=DNS1123_SUBDOMAIN, description="Name of the ConfigMap.")
    key: str = Field(max_length=253, pattern=CONFIG_KEY, description="Key to select.")
    optional: bool | None = Field(None, description="Allow the ConfigMap or key to be missing.")


class SecretKeySelector(ApiModel):
    """Selects a key of a Secret in the app's namespace."""

    name: str = Field(max_length=253, pattern=DNS1123_SUBDOMAIN, description="Name of the Secret.")
    key: str = Field(max_length=253, pattern=CONFIG_KEY, description="Key to select.")
    optional: bool | None = Field(None, description="Allow the Secret or key to be missing.")


class ObjectFieldSelector(ApiModel):
    """Selects a field of the pod (downward API)."""

    field_path: str = Field(
        max_length=256,
        pattern=DOWNWARD_FIELD,
        description="Pod field to expose, e.g. metadata.name, metadata.namespace, metadata.labels['x'], "
        "spec.nodeName, status.podIP.",
    )


_VALUE_FROM = ("secretKeyRef", "configMapKeyRef", "fieldRef")


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from; exactly one source."""

    model_config = ConfigDict(json_schema_extra=x_validations(exactly_one_rule(_VALUE_FROM, "valueFrom")))

    secret_key_ref: SecretKeySelector | None = Field(None, description="A key of a Secret.")
    config_map_key_ref: ConfigMapKeySelector | None = Field(None, description="A key of a ConfigMap.")
    field_ref: ObjectFieldSelector | None = Field(None, description="A field of the pod.")

    @model_validator(mode="after")
    def _one(self) -> EnvVarSource:
        check_exactly_one(self, ("secret_key_ref", "config_map_key_ref", "field_ref"), "valueFrom")
        return self


class EnvVar(ApiModel):
    """An environment variable of the app container."""

    model_config = ConfigDict(
        json_schema_extra=x_validations(
            cel("!has(self.value) || !has(self.valueFrom)", "env may set value or valueFrom, not both")
        )
    )

    name: str = Field(
        max_length=256,
        pattern=ENV_NAME,
        description=f"Variable name. Names starting with {RESERVED_ENV_PREFIX} are reserved for the GPU runtime.",
        json_schema_extra=x_validations(cel(f"!self.startsWith('{RESERVED_ENV_PREFIX}')", RESERVED_ENV_MESSAGE)),
    )
    value: str | None = Field(None, description="Literal value.")
    value_from: EnvVarSource | None = Field(
        None, description="Value taken from a Secret, ConfigMap or pod field."
    )

    @model_validator(mode="after")
    def _not_both(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError("env may set value or valueFrom, not both")
        return self

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value.startswith(RESERVED_ENV_PREFIX):
            raise ValueError(f"{value}: {RESERVED_ENV_MESSAGE}")
        return value


class ConfigMapEnvSource(ApiModel):
    """A ConfigMap whose keys all become environment variables."""

    name: str = Field(max_length=253, pattern=DNS1123_SUBDOMAIN, description="Name of the ConfigMap.")
    optional: bool | None = Field(None, description="Allow the ConfigMap to be missing.")


class SecretEnvSource(ApiModel):
    """A Secret whose keys all become environment variables."""

    name: str = Field(max_length=253, pattern=DNS1123_SUBDOMAIN, description="Name of the Secret.")
    optional: bool | None = Field(None, description="Allow the Secret to be missing.")


class EnvFromSource(ApiModel):
    """A set of environment variables from a ConfigMap or a Secret; exactly one source."""

    model_config = ConfigDict(
        json_schema_extra=x_validations(exactly_one_rule(("configMapRef", "secretRef"), "envFrom"))
    )

    config_map_ref: ConfigMapEnvSource | None = Field(None, description="The ConfigMap to read.")
    secret_ref: SecretEnvSource | None = Field(None, description="The Secret to read.")
    prefix: str | None = Field(
        None,
        max_length=256,
        pattern=ENV_PREFIX,
        description="Prefix added to every variable name. It may not make names starting with "
        f"{RESERVED_ENV_PREFIX}. Required in an app with GPUs (keys named {RESERVED_ENV_PREFIX}* would "
        "become variables the GPU runtime reads); on pods without GPUs the operator pins "
        "NVIDIA_VISIBLE_DEVICES=void, which takes precedence.",
        json_schema_extra=x_validations(
            cel(
                f"!self.startsWith('{RESERVED_ENV_PREFIX}') && "
                f"(self == '' || !'{RESERVED_ENV_PREFIX}'.startsWith(self))",
                RESERVED_ENV_PREFIX_MESSAGE,
            )
        ),
    )

    @model_validator(mode="after")
    def _one(self) -> EnvFromSource:
        check_exactly_one(self, ("config_map_ref", "secret_ref"), "envFrom")
        return self

    @field_validator("prefix")
    @classmethod
    def _prefix_not_reserved(cls, value: str | None) -> str | None:
        if value and (value.startswith(RESERVED_ENV_PREFIX) or RESERVED_ENV_PREFIX.startswith(value)):
            raise ValueError(RESERVED_ENV_PREFIX_MESSAGE)
        return value


# --- ports and probes -----------------------------------------------------------------------------------


class ContainerPort(ApiModel):
    """A port the app container listens on."""

    name: str | None = Field(
        None,
        max_length=15,
        pattern=DNS1123_LABEL,
        description="Port name (at most 15 characters, lower-case, with at least one letter), "
        "usable in probes.",
        json_schema_extra=x_validations(cel("self.matches('[a-z]')", PORT_NAME_MESSAGE)),
    )
    container_port: int = Field(ge=1, le=65535, description="Port number.")
    protocol: Literal["TCP", "UDP", "SCTP"] = Field("TCP", description="TCP (default), UDP or SCTP.")

    @model_validator(mode="after")
    def _name(self) -> ContainerPort:
        if self.name is not None:
            check_port_name(self.name)
        return self


class HTTPGetAction(ApiModel):
    """Probe by HTTP GET; a status from 200 to 399 succeeds."""

    path: str | None = Field(None, max_length=2048, description="HTTP path, e.g. /healthz.")
    port: PortRef = Field(description="Port number or name.")
    scheme: Literal["HTTP", "HTTPS"] | None = Field(None, description="HTTP (default) or HTTPS.")


class TCPSocketAction(ApiModel):
    """Probe by opening a TCP connection."""

    port: PortRef = Field(description="Port number or name.")


class ExecAction(ApiModel):
    """Probe by running a command in the container; exit status 0 succeeds."""

    command: list[str] = Field(min_length=1, max_length=64, description="Command and arguments (no shell).")


class GRPCAction(ApiModel):
    """Probe with the gRPC health checking protocol."""

    port: int = Field(ge=1, le=65535, description="Port number of the gRPC service.")
    service: str | None = Field(None, max_length=256, description="Service name sent in the health request.")


_PROBE_HANDLERS = ("httpGet", "tcpSocket", "exec", "grpc")


class Probe(ApiModel):
    """A container probe: exactly one of httpGet, tcpSocket, exec, grpc, plus timing."""

    model_config = ConfigDict(json_schema_extra=x_validations(exactly_one_rule(_PROBE_HANDLERS, "a probe")))

    http_get: HTTPGetAction | None = Field(None, description="HTTP GET check.")
    tcp_socket: TCPSocketAction | None = Field(None, description="TCP connect check.")
    exec_: ExecAction | None = Field(None, alias="exec", description="Command check.")
    grpc: GRPCAction | None = Field(None, description="gRPC health check.")
    initial_delay_seconds: int | None = Field(
        None, ge=0, le=INT32_MAX, description="Seconds before the first probe."
    )
    period_seconds: int | None = Field(
        None, ge=1, le=INT32_MAX, description="Seconds between probes (default 10)."
    )
    timeout_seconds: int | None = Field(
        None, ge=1, le=INT32_MAX, description="Seconds until a probe times out (default 1)."
    )
    failure_threshold: int | None = Field(
        None, ge=1, le=INT32_MAX, description="Consecutive failures that count as failed (default 3)."
    )
    success_threshold: int | None = Field(
        None,
        ge=1,
        le=INT32_MAX,
        description="Consecutive successes that count as succeeded (default 1; must be 1 for "
        "liveness and startup probes).",
    )

    @model_validator(mode="after")
    def _one(self) -> Probe:
        check_exactly_one(self, ("http_get", "tcp_socket", "exec_", "grpc"), "a probe")
        return self


class ResourceOverrides(ApiModel):
    """Per-replica cpu/memory requests that replace what the machine type computes."""

    cpu: Quantity | None = Field(None, description="CPU request per replica, e.g. 4 or 500m.")
    memory: Quantity | None = Field(None, description="Memory request per replica, e.g. 16Gi.")


class LocalObjectReference(ApiModel):
    """A reference to an object in the app's namespace."""

    name: str = Field(max_length=253, pattern=DNS1123_SUBDOMAIN, description="Object name.")
