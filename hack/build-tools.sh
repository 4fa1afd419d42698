#!/usr/bin/env bash
# Builds the chart-checking tools from pinned Go modules and caches them, like the cluster binaries:
#   helm        (helm.sh/helm/v4, HELM_VERSION)
#   kubeconform (github.com/yannh/kubeconform, KUBECONFORM_VERSION)
#   karpenter-kwok (sigs.k8s.io/karpenter/kwok, KARPENTER_VERSION: Karpenter with its KWOK cloud
#                  provider, for fleets with autoscaled pools) and its CRDs, in a directory of its own
# Prints the directory holding them. Nothing is downloaded but Go modules.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${FALAPP_CACHE:-$HOME/.cache/falapp-operator}
bindir="$cache/bin/tools-helm-$HELM_VERSION-kubeconform-$KUBECONFORM_VERSION"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
log() { echo "[build-tools] $*" >&2; }

build_helm() {
  [ -x "$bindir/helm" ] && return 0
  mkdir -p "$bindir"
  log "building helm $HELM_VERSION"
  # Helm 4's Makefile sets its version with -X on helm.sh/helm/v4/internal/version (metadata empty:
  # a release build). The Kubernetes version of `helm template`/`helm lint` (.Capabilities.KubeVersion)
  # is no longer an -X flag: helm 4 reads its k8s.io/client-go version from the binary's build info,
  # which `go install module@version` records.
  GOBIN="$bindir" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
}

build_kubeconform() {
  [ -x "$bindir/kubeconform" ] && return 0
  mkdir -p "$bindir"
  log "building kubeconform $KUBECONFORM_VERSION"
  GOBIN="$bindir" go install -trimpath -ldflags "-s -w -X main.version=$KUBECONFORM_VERSION" \
    "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
}

karpenter_dir="$cache/bin/karpenter-kwok-$KARPENTER_VERSION"

build_karpenter() {
  [ -x "$karpenter_dir/karpenter-kwok" ] && [ -f "$karpenter_dir/crds/.complete" ] && return 0
  mkdir -p "$karpenter_dir"
  log "building karpenter-kwok $KARPENTER_VERSION (slow the first time)"
  # The package is called kwok like the fake-node runner: install into a scratch GOBIN, then rename.
  local scratch="$karpenter_dir/.gobin"
  rm -rf "$scratch"
  GOBIN="$scratch" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/karpenter/kwok@$KARPENTER_VERSION"
  mv "$scratch/kwok" "$karpenter_dir/karpenter-kwok"
  rm -rf "$scratch"
  # Its CRDs ship in the module (NodePool, NodeClaim, ... and the KWOKNodeClass).
  local src
  src=$(go mod download -json "sigs.k8s.io/karpenter@$KARPENTER_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  rm -rf "$karpenter_dir/crds"
  mkdir -p "$karpenter_dir/crds"
  cp "$src"/kwok/charts/crds/*.yaml "$src"/kwok/apis/crds/*.yaml "$karpenter_dir/crds/"
  chmod u+w "$karpenter_dir"/crds/*.yaml
  touch "$karpenter_dir/crds/.complete"
}

case "${1:-all}" in
  all) build_helm; build_kubeconform; build_karpenter ;;
  karpenter) build_karpenter; echo "$karpenter_dir"; exit 0 ;;
  helm) build_helm ;;
  kubeconform) build_kubeconform ;;
  bindir) ;;
  karpenter-dir) echo "$karpenter_dir"; exit 0 ;;
  *) echo "usage: $0 [all|helm|kubeconform|karpenter|karpenter-dir|bindir]" >&2; exit 2 ;;
esac
echo "$bindir"
