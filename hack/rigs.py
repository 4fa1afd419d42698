"""Where the second local cluster (the autoscaled fleet, with Karpenter) lives: its state directory
and ports, next to the default cluster's. Used by the demo and the Karpenter cluster tests."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def autoscaled_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """`environ` (default: this process's) pointing hack/cluster.sh at the second cluster: FALAPP_STATE +
    "-autoscaled" and the API/etcd ports + 1 (FALAPP_AUTOSCALED_API_PORT / _ETCD_PORT override)."""
    env = dict(os.environ if environ is None else environ)
    state = env.get("FALAPP_STATE") or str(REPO / ".state" / "cluster")
    api = int(env.get("FALAPP_API_PORT", "16443"))
    etcd = int(env.get("FALAPP_ETCD_PORT", "23790"))
    return {**env, "FALAPP_STATE": f"{state}-autoscaled",
            "FALAPP_API_PORT": env.get("FALAPP_AUTOSCALED_API_PORT", str(api + 1)),
            "FALAPP_ETCD_PORT": env.get("FALAPP_AUTOSCALED_ETCD_PORT", str(etcd + 1))}
