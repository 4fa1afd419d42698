"""Operator settings: environment variables `FALAPP_*` (or CLI flags), with documented defaults."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FALAPP_")

    field_manager: str = Field("falapp-operator", description="Server-side apply field manager of children.")
    workers: int = Field(8, ge=1, description="Apps reconciled concurrently.")
    metrics_port: int = Field(8080, ge=0, description="Prometheus /metrics port; 0 turns it off.")
    machine_type_status_delay: float = Field(
        2.0, ge=0, description="Seconds to batch capacity changes before writing MachineType status.")
    error_backoff_max: float = Field(
        60.0, gt=0, description="Longest retry delay after a failed reconcile; also the retry period of a "
        "FalApp whose writes the API refuses (quota, RBAC, invalid object).")
    resync_period: float = Field(
        600.0, ge=0, description="Seconds between full LISTs of nodes and pods that correct the capacity view "
        "for anything the watches missed; 0 turns it off.")
    watch_namespaces: str = Field(
        "", description="Comma-separated namespaces whose FalApps are managed; empty: all (set by --namespace).")
    log_format: str = Field("text", pattern="^(text|json)$", description="Log format: text or json.")

    def manages(self, namespace: str) -> bool:
        return not self.watch_namespaces or namespace in self.watch_namespaces.split(",")
