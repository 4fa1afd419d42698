#!/usr/bin/env bash
# Builds the local cluster's binaries from pinned Go modules and caches them:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (one Kubernetes release),
#   etcd, kwok.
# Kubernetes cannot be `go install`ed (its go.mod replaces every staging module with ./staging/...),
# so a throwaway wrapper module requires k8s.io/kubernetes and replaces each staging module with its
# published v0.Y.Z twin. The list is read from that release's own go.mod. Nothing is committed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${FALAPP_CACHE:-$HOME/.cache/falapp-operator}
bindir="$cache/bin/k8s-$KUBE_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
jobs=${BUILD_JOBS:-2}
log() { echo "[build] $*" >&2; }

build_kubernetes() {
  local want=(kube-apiserver kube-controller-manager kube-scheduler kubectl) missing=0
  for b in "${want[@]}"; do [ -x "$bindir/$b" ] || missing=1; done
  [ $missing = 1 ] || return 0
  local work="$cache/src/k8s-wrapper-$KUBE_VERSION" staging_version="v0.${KUBE_VERSION#v1.}"
  mkdir -p "$work" "$bindir"
  local modfile
  modfile=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module falapp.local/k8s-wrapper"
    echo
    echo "go $(sed -n 's/^go \([0-9.]*\)$/\1/p' "$modfile")"
    echo
    sed -n 's/^godebug \(.*\)$/godebug \1/p' "$modfile" | head -n1
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$modfile" | sort -u |
      while read -r m; do echo "	$m => $m $staging_version"; done
    echo ")"
  } > "$work/go.mod"
  log "wrapper module: $(grep -c ' => ' "$work/go.mod") staging modules replaced with $staging_version"
  local pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
              k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  (cd "$work" && for p in "${pkgs[@]}"; do go get -tool "$p@$KUBE_VERSION"; done)
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local ldflags="-s -w" pkg
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  log "building ${want[*]} $KUBE_VERSION (slow the first time)"
  (cd "$work" && go build -p "$jobs" -trimpath -tags selinux,notest -ldflags "$ldflags" -o "$bindir/" "${pkgs[@]}")
}

build_etcd() {
  [ -x "$bindir/etcd" ] && return 0
  local work="$cache/src/etcd-wrapper-$ETCD_VERSION"
  mkdir -p "$work" "$bindir"
  printf 'module falapp.local/etcd-wrapper\n\ngo 1.25.0\n' > "$work/go.mod"
  (cd "$work" && go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
  log "building etcd $ETCD_VERSION"
  (cd "$work" && go build -p "$jobs" -trimpath -ldflags "-s -w" -o "$bindir/etcd" go.etcd.io/etcd/server/v3)
}

build_kwok() {
  [ -x "$bindir/kwok" ] && return 0
  mkdir -p "$bindir"
  log "building kwok $KWOK_VERSION"
  GOBIN="$bindir" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
}

case "${1:-all}" in
  all) build_etcd; build_kwok; build_kubernetes ;;
  kubernetes) build_kubernetes ;;
  etcd) build_etcd ;;
  kwok) build_kwok ;;
  bindir) ;;
  *) echo "usage: $0 [all|kubernetes|etcd|kwok|bindir]" >&2; exit 2 ;;
esac
echo "$bindir"
