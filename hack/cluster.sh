#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, without Docker:
#   etcd + kube-apiserver (RBAC on) + kube-controller-manager + kube-scheduler + KWOK (fake kubelets),
# and a simulated GPU fleet of KWOK nodes from a fleet file. A fleet with `karpenter.nodePools` also
# gets Karpenter's KWOK provider (built once, cached), its CRDs and those NodePools: nodes on demand.
#
#   hack/cluster.sh up [--fleet FILE]   build once (cached), start, wait until healthy, create the fleet
#   hack/cluster.sh down                stop every process this script started
#   hack/cluster.sh status              print component state; exit 0 only when all are running
#                                       (karpenter counts when the fleet has autoscaled pools)
#   hack/cluster.sh restart COMPONENT…  stop the components (e.g. etcd kube-apiserver) and start them again
#   hack/cluster.sh pause|resume COMPONENT  freeze a component (SIGSTOP) and let it go on (SIGCONT): a
#                                       controller manager that falls behind, on demand
#   hack/cluster.sh compact             compact etcd's history up to now, as the API server does every
#                                       5 minutes: a watch from an older version gets 410 Gone
#   hack/cluster.sh etcd-put KEY <JSON  store an object in etcd under KEY (e.g. /registry/fal.ai/falapps/
#                                       NS/NAME), past the API server: a state it can leave behind itself
#                                       (an object in a namespace that is gone) made on demand
#   hack/cluster.sh kubeconfig          print the admin kubeconfig path
#   hack/cluster.sh bindir              print the directory with the cluster binaries (kubectl included)
#
# Environment: FALAPP_STATE (state dir, default <repo>/.state/cluster), FALAPP_CACHE (build cache,
# default ~/.cache/falapp-operator), FALAPP_API_PORT (default 16443), FALAPP_ETCD_PORT (default 23790),
# FALAPP_APISERVER_PROFILING=true (the API server's /debug/pprof, to see where a benchmark's time goes),
# FALAPP_SCHEDULER_FEATURE_GATES (kube-scheduler's --feature-gates, e.g. SchedulerAsyncAPICalls=true;
# default: none, the release's defaults; read when the scheduler starts: `restart kube-scheduler`).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
state=${FALAPP_STATE:-$repo/.state/cluster}
api_port=${FALAPP_API_PORT:-16443}
etcd_port=${FALAPP_ETCD_PORT:-23790}
etcd_peer_port=$((etcd_port + 10))
pki="$state/pki" logs="$state/logs" pids="$state/pids"
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
python=${PYTHON:-$( [ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3)}

log() { echo "[cluster] $*" >&2; }
die() { echo "[cluster] error: $*" >&2; exit 1; }
bindir() { "$here/build-cluster-binaries.sh" bindir; }

running() { # running <component>: its recorded pid is alive
  local f="$pids/$1.pid"
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

start() { # start <component> <binary> args...: detached, own process group, log in $logs
  local name=$1; shift
  running "$name" && return 0
  setsid "$@" >"$logs/$name.log" 2>&1 < /dev/null &
  echo $! >"$pids/$name.pid"
}

wait_for() { # wait_for <what> <seconds> <command...>
  local what=$1 deadline=$((SECONDS + $2)); shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "$what did not come up in time; see $logs/"
    sleep 0.2
  done
}

make_pki() {
  [ -f "$pki/admin.kubeconfig" ] && return 0
  mkdir -p "$pki"
  local d="$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=falapp-local-ca" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  cat >"$d/apiserver.ext" <<EOF
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
EOF
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$d/apiserver.key" \
    -out "$d/apiserver.csr" 2>/dev/null
  openssl x509 -req -in "$d/apiserver.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 3650 -extfile "$d/apiserver.ext" -out "$d/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  # client identities: admin (system:masters) and the components' own users, bound by default RBAC
  local who
  for who in admin:system:masters:admin kube-controller-manager::system:kube-controller-manager \
             kube-scheduler::system:kube-scheduler; do
    local file=${who%%:*} rest=${who#*:}; local org=${rest%%:*} cn=${rest#*:}
    [ "$file" = admin ] && { org=system:masters; cn=falapp-admin; }
    openssl req -newkey rsa:2048 -nodes -subj "/O=$org/CN=$cn" -keyout "$d/$file.key" \
      -out "$d/$file.csr" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >"$d/client.ext"
    openssl x509 -req -in "$d/$file.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -days 3650 -extfile "$d/client.ext" -out "$d/$file.crt" 2>/dev/null
    cat >"$d/$file.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: falapp-local
  cluster: {server: "https://127.0.0.1:$api_port", certificate-authority: $d/ca.crt}
users:
- name: $file
  user: {client-certificate: $d/$file.crt, client-key: $d/$file.key}
contexts:
- name: falapp-local
  context: {cluster: falapp-local, user: $file, namespace: default}
current-context: falapp-local
EOF
  done
}

kwok_stages() { # the stages KWOK >= 0.8 needs, read from its module source in the Go module cache
  local src
  src="$(go env GOMODCACHE)/sigs.k8s.io/kwok@${KWOK_VERSION}/kustomize/stage"
  [ -d "$src" ] || (cd "$here" && GOFLAGS=-mod=mod go mod download "sigs.k8s.io/kwok@$KWOK_VERSION" >/dev/null 2>&1) || true
  [ -d "$src" ] || die "KWOK stage files not found in $src"
  local f
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"; cat "$src/$f"
  done
}

fleet_autoscaled() { # the fleet's autoscaled pools, one name a line (none: no Karpenter)
  "$python" "$here/fleet.py" "$1" --output autoscaled-pools
}

expected_components() { # the base components, and karpenter when the running fleet asks for it
  local fleet
  echo "${components[@]}"
  fleet=$(cat "$state/fleet" 2>/dev/null) || return 0
  [ -f "$fleet" ] && [ -n "$(fleet_autoscaled "$fleet" 2>/dev/null)" ] && echo karpenter
  return 0
}

start_karpenter() { # start_karpenter <fleet>: CRDs, the controller (outside the cluster), the NodePools
  local fleet=$1 kdir
  kdir=$("$here/build-tools.sh" karpenter)
  kubectl_admin apply --server-side --force-conflicts -f "$kdir/crds" >/dev/null
  kubectl_admin wait --for=condition=Established --timeout=60s \
    crd/nodepools.karpenter.sh crd/nodeclaims.karpenter.sh crd/kwoknodeclasses.karpenter.kwok.sh >/dev/null
  "$python" "$here/fleet.py" "$fleet" --output instance-types >"$state/karpenter-instance-types.json"
  # KUBECONFIG is its only way to a cluster outside one. It binds its metrics and health endpoints on
  # every interface (no address flag): port 0 takes a free port, so several local clusters can run.
  start karpenter env KUBECONFIG="$pki/admin.kubeconfig" "$kdir/karpenter-kwok" --disable-leader-election \
    --metrics-port 0 --health-probe-port 0 --instance-types-file-path "$state/karpenter-instance-types.json" \
    --log-level info
  "$python" "$here/fleet.py" "$fleet" --output nodepools |
    kubectl_admin apply --server-side --field-manager falapp-fleet -f - >/dev/null
  # Ready once Karpenter has resolved the node class and the pool's instance types
  kubectl_admin wait --for=condition=Ready nodepools --all --timeout=60s >/dev/null ||
    die "NodePools did not become Ready; see $logs/karpenter.log"
}

kubectl_admin() { "$(bindir)/kubectl" --kubeconfig "$pki/admin.kubeconfig" "$@"; }

cmd_up() {
  local fleet
  fleet=$(cat "$state/fleet" 2>/dev/null || echo "$here/fleets/default.yaml")
  while [ $# -gt 0 ]; do
    case "$1" in
      --fleet) fleet=$2; shift 2 ;;
      --fleet=*) fleet=${1#--fleet=}; shift ;;
      *) die "unknown option $1" ;;
    esac
  done
  [ -f "$fleet" ] || die "fleet file $fleet not found"
  # shellcheck source=versions.env
  source "$here/versions.env"
  local bin; bin=$("$here/build-cluster-binaries.sh" all)
  mkdir -p "$logs" "$pids" "$state/etcd"
  echo "$fleet" >"$state/fleet"
  make_pki
  local t0=$SECONDS

  start etcd "$bin/etcd" --name node0 --data-dir "$state/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "node0=http://127.0.0.1:$etcd_peer_port" --unsafe-no-fsync --quota-backend-bytes 4294967296 \
    --listen-metrics-urls "" --log-level warn
  wait_for etcd 30 curl -sf "http://127.0.0.1:$etcd_port/health"

  start kube-apiserver "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 --endpoint-reconciler-type none \
    --max-requests-inflight 1000 --max-mutating-requests-inflight 500 --profiling=${FALAPP_APISERVER_PROFILING:-false}
  wait_for kube-apiserver 60 curl -sf --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://127.0.0.1:$api_port/readyz"

  start kube-controller-manager "$bin/kube-controller-manager" --kubeconfig "$pki/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig "$pki/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig "$pki/kube-controller-manager.kubeconfig" \
    --use-service-account-credentials --service-account-private-key-file "$pki/sa.key" \
    --root-ca-file "$pki/ca.crt" --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --leader-elect=false --secure-port 0 --kube-api-qps 200 --kube-api-burst 400 \
    --concurrent-deployment-syncs 10 --concurrent-replicaset-syncs 10 --node-monitor-grace-period 10m
  # the scheduler's client at the controller manager's rate (its default, 50/s, makes a lost pool's
  # hundreds of Unschedulable marks queue behind each other)
  cat >"$state/kube-scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection: {kubeconfig: "$pki/kube-scheduler.kubeconfig", qps: 200, burst: 400}
leaderElection: {leaderElect: false}
EOF
  start kube-scheduler "$bin/kube-scheduler" --config "$state/kube-scheduler.yaml" \
    --authentication-kubeconfig "$pki/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig "$pki/kube-scheduler.kubeconfig" --secure-port 0 \
    ${FALAPP_SCHEDULER_FEATURE_GATES:+--feature-gates="$FALAPP_SCHEDULER_FEATURE_GATES"}
  # long node leases: thousands of fake nodes renewing every 10 s would saturate a 2-core API server
  kwok_stages >"$state/kwok-stages.yaml"
  start kwok "$bin/kwok" --kubeconfig "$pki/admin.kubeconfig" --config "$state/kwok-stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --cidr 10.244.0.0/16 --node-ip 10.0.0.1 --node-lease-duration-seconds 300 -v WARN

  wait_for "default service account" 60 kubectl_admin get serviceaccount default -n default
  "$python" "$here/fleet.py" "$fleet" | kubectl_admin apply --server-side --field-manager falapp-fleet -f - >/dev/null
  kubectl_admin wait --for=condition=Ready nodes -l fal.ai/fleet-pool --timeout=60s >/dev/null ||
    die "fleet nodes did not become Ready; see $logs/kwok.log"
  [ -z "$(fleet_autoscaled "$fleet")" ] || start_karpenter "$fleet"
  for c in $(expected_components); do running "$c" || die "$c exited; see $logs/$c.log"; done
  log "up in $((SECONDS - t0))s; kubeconfig: $pki/admin.kubeconfig"
}

stop_one() { # stop_one <component>: its process group, TERM then KILL
  local c=$1 pid
  [ -f "$pids/$c.pid" ] || return 0
  pid=$(cat "$pids/$c.pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$pids/$c.pid"
}

cmd_restart() { # the state (etcd data, PKI) is kept: the same cluster comes back
  local c
  [ $# -gt 0 ] || die "restart: name the components (${components[*]})"
  for c in "$@"; do
    [[ " ${components[*]} karpenter " == *" $c "* ]] || die "restart: unknown component $c"
    stop_one "$c"
  done
  cmd_up
}

cmd_signal() { # cmd_signal STOP|CONT <component>: the component's whole process group
  local signal=$1 c=${2:-}
  [[ " ${components[*]} karpenter " == *" $c "* ]] || die "pause/resume: name one component (${components[*]})"
  running "$c" || die "$c is not running"
  kill "-$signal" -- "-$(cat "$pids/$c.pid")"
}

cmd_compact() { # through etcd's JSON gateway: the current revision, then compaction up to it
  running etcd || die "etcd is not running"
  local url="http://127.0.0.1:$etcd_port/v3/kv" revision answer
  revision=$(curl -fsS --max-time 30 -X POST "$url/range" -d '{"key":"AA=="}' \
    | "$python" -c 'import json, sys; print(json.load(sys.stdin)["header"]["revision"])')
  answer=$(curl -sS --max-time 30 -X POST "$url/compaction" -d "{\"revision\":\"$revision\",\"physical\":true}")
  # compacted already (nothing written since the last compaction): as good
  case "$answer" in *'"code"'*) [[ "$answer" == *"has been compacted"* ]] || die "etcd compaction: $answer" ;; esac
  log "etcd compacted up to revision $revision"
}

cmd_etcd_put() { # KEY, the value on stdin; through etcd's JSON gateway (keys and values in base64)
  running etcd || die "etcd is not running"
  [[ -n "${1:-}" ]] || die "usage: $0 etcd-put KEY <JSON"
  local request answer
  request=$(KEY="$1" "$python" -c 'import base64, json, os, sys
b64 = lambda data: base64.b64encode(data).decode()
print(json.dumps({"key": b64(os.environ["KEY"].encode()), "value": b64(sys.stdin.buffer.read())}))')
  answer=$(curl -sS --max-time 30 -X POST "http://127.0.0.1:$etcd_port/v3/kv/put" --data-binary "$request")
  case "$answer" in *'"header"'*) ;; *) die "etcd put: $answer" ;; esac
  log "etcd: stored $1"
}

cmd_down() {
  local c
  for c in karpenter kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_one "$c"
  done
  rm -f "$state/fleet"
  rm -rf "$state/etcd"   # a fresh cluster next time; PKI is kept
  log "down"
}

cmd_status() {
  local c ok=0
  for c in $(expected_components); do
    if running "$c"; then echo "$c: running (pid $(cat "$pids/$c.pid"))"; else echo "$c: stopped"; ok=1; fi
  done
  return $ok
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  restart) shift; cmd_restart "$@" ;;
  pause) cmd_signal STOP "${2:-}" ;;
  resume) cmd_signal CONT "${2:-}" ;;
  compact) cmd_compact ;;
  etcd-put) shift; cmd_etcd_put "$@" ;;
  kubeconfig) echo "$pki/admin.kubeconfig" ;;
  bindir) bindir ;;
  *) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
