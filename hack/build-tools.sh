#!/usr/bin/env bash
# Builds the chart-checking tools from pinned Go modules and caches them, like the cluster binaries:
#   helm        (helm.sh/helm/v3, HELM_VERSION)
#   kubeconform (github.com/yannh/kubeconform, KUBECONFORM_VERSION)
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
  # The same -X flags as helm's Makefile: its version, and the Kubernetes minor its client-go is
  # (the default .Capabilities.KubeVersion of `helm template` and `helm lint`'s deprecation checks).
  local modfile k8s_minor ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" pkg
  modfile=$(cd "$bindir" && go mod download -json "helm.sh/helm/v3@$HELM_VERSION" |
            sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  k8s_minor=$(sed -n 's#^\s*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$modfile")
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
  done
  GOBIN="$bindir" go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

build_kubeconform() {
  [ -x "$bindir/kubeconform" ] && return 0
  mkdir -p "$bindir"
  log "building kubeconform $KUBECONFORM_VERSION"
  GOBIN="$bindir" go install -trimpath -ldflags "-s -w -X main.version=$KUBECONFORM_VERSION" \
    "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
}

case "${1:-all}" in
  all) build_helm; build_kubeconform ;;
  helm) build_helm ;;
  kubeconform) build_kubeconform ;;
  bindir) ;;
  *) echo "usage: $0 [all|helm|kubeconform|bindir]" >&2; exit 2 ;;
esac
echo "$bindir"
