"""Volumes a FalApp may declare (configMap, secret, persistentVolumeClaim, emptyDir) and their mounts."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from falapp_operator.api.common import (
    DNS1123_LABEL,
    DNS1123_SUBDOMAIN,
    ApiModel,
    Quantity,
    cel,
    x_validations,
)


class ConfigMapVolumeSource(ApiModel):
    """A ConfigMap mounted as files."""

    name: str = Field(max_length=253, pattern=DNS1123_SUBDOMAIN, description="Name of the ConfigMap.")
    optional: bool | None = Field(None, description="Allow the ConfigMap to be missing.")


class SecretVolumeSource(ApiModel):
    """A Secret mounted as files."""

    secret_name: str = Field(max_length=253, pattern=DNS1123_SUBDOMAIN, description="Name of the Secret.")
    optional: bool | None = Field(None, description="Allow the Secret to be missing.")


class PersistentVolumeClaimVolumeSource(ApiModel):
    """An existing PersistentVolumeClaim in the app's namespace."""

    claim_name: str = Field(max_length=253, pattern=DNS1123_SUBDOMAIN, description="Name of the claim.")
    read_only: bool | None = Field(None, description="Mount the volume read-only.")


class EmptyDirVolumeSource(ApiModel):
    """A scratch directory that lives as long as the pod."""

    medium: Literal["", "Memory"] | None = Field(
        None, description='Storage medium: "" (node disk, default) or Memory (tmpfs).'
    )
    size_limit: Quantity | None = Field(None, description="Maximum size, e.g. 10Gi.")


_VOLUME_SOURCES = ("configMap", "secret", "persistentVolumeClaim", "emptyDir")
_ONE_SOURCE = "exactly one volume source: configMap, secret, persistentVolumeClaim or emptyDir"


class Volume(ApiModel):
    """A volume the app container can mount; exactly one volume source."""

    model_config = ConfigDict(
        json_schema_extra=x_validations(
            cel(
                " + ".join(f"(has(self.{f}) ? 1 : 0)" for f in _VOLUME_SOURCES) + " == 1",
                _ONE_SOURCE,
            )
        )
    )

    name: str = Field(
        max_length=63, pattern=DNS1123_LABEL, description="Volume name, referenced by volumeMounts."
    )
    config_map: ConfigMapVolumeSource | None = Field(None, description="A ConfigMap as files.")
    secret: SecretVolumeSource | None = Field(None, description="A Secret as files.")
    persistent_volume_claim: PersistentVolumeClaimVolumeSource | None = Field(
        None, description="An existing PersistentVolumeClaim."
    )
    empty_dir: EmptyDirVolumeSource | None = Field(None, description="A scratch directory.")

    @model_validator(mode="after")
    def _one(self) -> Volume:
        attrs = ("config_map", "secret", "persistent_volume_claim", "empty_dir")
        if sum(getattr(self, a) is not None for a in attrs) != 1:
            raise ValueError(_ONE_SOURCE)
        return self


_BAD_SUBPATH = re.compile(r"(^|/)\.\.(/|$)")


class VolumeMount(ApiModel):
    """Where a declared volume appears in the app container."""

    name: str = Field(max_length=63, pattern=DNS1123_LABEL, description="Name of an entry of volumes.")
    mount_path: str = Field(
        min_length=2, max_length=1024, pattern=r"^/.+", description="Absolute path in the container."
    )
    read_only: bool | None = Field(None, description="Mount read-only.")
    sub_path: str | None = Field(
        None,
        max_length=1024,
        description="Path inside the volume to mount instead of its root (relative, without '..').",
        json_schema_extra=x_validations(
            cel(
                "!self.startsWith('/') && !self.matches('(^|/)[.][.](/|$)')",
                "subPath must be a relative path without '..'",
            )
        ),
    )

    @model_validator(mode="after")
    def _sub_path(self) -> VolumeMount:
        sub = self.sub_path
        if sub is not None and (sub.startswith("/") or _BAD_SUBPATH.search(sub)):
            raise ValueError("subPath must be a relative path without '..'")
        return self
