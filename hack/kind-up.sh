#!/usr/bin/env bash
# For laptops with Docker: a kind cluster with KWOK running in it and the same simulated GPU fleet
# as hack/cluster.sh (same fleet file, same renderer), then the Helm chart.
#
#   hack/kind-up.sh [--fleet FILE] [--name NAME]
#
# Needs kind, kubectl, helm and network access to KWOK's release manifests.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
# shellcheck source=versions.env
source "$here/versions.env"
fleet="$here/fleets/default.yaml" name=falapp
while [ $# -gt 0 ]; do
  case "$1" in
    --fleet) fleet=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
kind get clusters | grep -qx "$name" || kind create cluster --name "$name"
kubectl config use-context "kind-$name"
releases="https://github.com/kubernetes-sigs/kwok/releases/download/$KWOK_VERSION"
kubectl apply -f "$releases/kwok.yaml"        # KWOK controller, managing nodes annotated kwok.x-k8s.io/node=fake
kubectl apply -f "$releases/stage-fast.yaml"  # node and pod stages: Ready at once
python3 "$here/fleet.py" "$fleet" | kubectl apply --server-side --field-manager falapp-fleet -f -
kubectl wait --for=condition=Ready nodes -l fal.ai/fleet-pool --timeout=120s
helm upgrade --install falapp-operator "$repo/charts/falapp-operator" \
  --namespace falapp-system --create-namespace
echo "kind-$name: fleet and operator installed; try: kubectl apply -n default -f $repo/examples/"
