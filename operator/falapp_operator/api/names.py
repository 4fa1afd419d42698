"""Names the operator gives and reads on cluster objects: labels, annotations, and the
names of a FalApp's children. Their one home: the children are built, read and watched by them."""

from __future__ import annotations

import hashlib

from falapp_operator.api.common import GROUP

# --- on the children (Deployments, Service, pods) -------------------------------------------------
APP_LABEL = f"{GROUP}/app"  # the FalApp a child belongs to
TYPE_LABEL = f"{GROUP}/machine-type"  # the machine type (object name) of a Deployment and its pods
MANAGED_BY = {"app.kubernetes.io/managed-by": "falapp-operator"}
SURGE_ANNOTATION = f"{GROUP}/surge"  # on the Deployment of the make-before-break replica in flight
# on a Deployment: when the operator last raised its replicas (a replica lost with its node has had no
# place since then at the latest, whether its pod was replaced yet or not)
GROWN_ANNOTATION = f"{GROUP}/grown-at"
# on a Deployment: the moves (attempts, back-offs) of the last reconcile that raised it and made a move,
# recorded with that write so a crash before the status write forgets none (api/status.with_recorded_moves)
MOVES_ANNOTATION = f"{GROUP}/recorded-moves"
HASH_ANNOTATION = f"{GROUP}/applied-hash"  # a digest of the desired object: unchanged, no write
TEMPLATE_ANNOTATION = f"{GROUP}/template-hash"  # on pods: which template (revision) they run

# --- Kubernetes' own -------------------------------------------------------------------------------
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
DELETE_FIRST = "-1000"  # the deletion cost of a pod its ReplicaSet should remove first
REVISION_LABEL = "pod-template-hash"
KARPENTER_NODEPOOL_LABEL = "karpenter.sh/nodepool"  # on every node a Karpenter NodePool makes


def deployment_name(app: str, machine_type: str) -> str:
    """`<app>-<type>-<6 hex>`: the suffix, a digest of the pair, keeps app `a` on type `b-c` apart from
    app `a-b` on type `c` (any name left to collide is caught by the ownership check before writing)."""
    return f"{app}-{machine_type}-{hashlib.sha256(f'{app}/{machine_type}'.encode()).hexdigest()[:6]}"


def service_name(app: str) -> str:
    """The app's Service is named after the app (its DNS name is the app's)."""
    return app
