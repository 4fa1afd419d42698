#!/usr/bin/env bash
# Builds the operator image from the repository's Dockerfile (unchanged) with podman or Docker.
#
#   hack/build-image.sh                 build (cached) and print the image reference on stdout
#   hack/build-image.sh --refresh-base  rebuild the local Python base too (e.g. for Debian updates)
#
# The image is <FALAPP_IMAGE>:<chart appVersion> (default localhost/falapp-operator:<appVersion>), with
# OCI labels (version = the chart's appVersion, revision = the git commit, created = its commit time).
# Install the chart with it: --set image.repository=localhost/falapp-operator (the tag defaults to
# appVersion).
#
# The base (PYTHON_IMAGE of the Dockerfile):
#   podman: a local Debian bookworm with python3 built by mmdebstrap and imported, cached under a tag
#           made of a hash of its recipe, so only the first build pays for it (no registry needed);
#   Docker: the Dockerfile's default (python:*-slim-bookworm) unless FALAPP_PYTHON_IMAGE=local.
# FALAPP_PYTHON_IMAGE=<image> uses that image instead; FALAPP_DEBIAN_MIRROR is mmdebstrap's MIRROR
# argument (default: this machine's apt sources when it runs the same Debian release).
#
# The build's pip uses this machine's pip settings (podman): the PIP_* variables become the pip.conf
# of the build containers' home, beside the files and directories they name (a CA bundle, a wheel
# directory), mounted read-only. Nothing of them ends up in the image.
#
# FALAPP_ENGINE=podman|docker picks the engine (default: podman if installed, else a running Docker).
set -euo pipefail
shopt -s inherit_errexit  # build_base runs in $(...): a failed import must stop there too
repo=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "[build-image] $*" >&2; }
die() { log "$*"; exit 1; }

refresh_base=false
for arg in "$@"; do
  case "$arg" in
    --refresh-base) refresh_base=true ;;
    *) die "unknown argument: $arg (usage: $0 [--refresh-base])" ;;
  esac
done

engine=${FALAPP_ENGINE:-}
if [ -z "$engine" ]; then
  if command -v podman >/dev/null; then engine=podman
  elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then engine=docker
  else die "neither podman nor a running Docker engine found (Debian: apt-get install podman runc mmdebstrap)"
  fi
fi
case "$engine" in podman|docker) ;; *) die "FALAPP_ENGINE must be podman or docker, not $engine" ;; esac

exists() { "$engine" image inspect "$1" >/dev/null 2>&1; }
seconds() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(seconds)" 'BEGIN { printf "%.1f", b - a }'; }

app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$repo"/charts/*/Chart.yaml)
[ -n "$app_version" ] || die "no appVersion in charts/*/Chart.yaml"
image="${FALAPP_IMAGE:-localhost/falapp-operator}:$app_version"

# --- the Python base -------------------------------------------------------------------------------
suite=bookworm
# Everything that decides the base's content; its hash names the cached image.
base_recipe=(
  --variant=minbase --include=python3,python3-venv,ca-certificates
  # merged /usr without the usrmerge package (which would pull in all of Perl)
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  # the Dockerfile calls `python`
  --customize-hook='ln -s python3 "$1/usr/bin/python"'
  # the image never runs apt: the mirror the build used (maybe a private one) stays out of it
  --customize-hook='rm -f "$1/etc/apt/sources.list" "$1"/etc/apt/sources.list.d/*'
)
base_config=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
             --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]')

build_base() {
  local hash ref
  hash=$(printf '%s\n' "$suite" "${base_recipe[@]}" "${base_config[@]}" | sha256sum | cut -c1-12)
  ref="localhost/falapp-python-base:$suite-$hash"
  if exists "$ref" && ! $refresh_base; then
    log "base $ref: cached"
    echo "$ref"
    return
  fi
  command -v mmdebstrap >/dev/null || die "mmdebstrap is needed for the local base (Debian: apt-get install mmdebstrap), or set FALAPP_PYTHON_IMAGE"
  local mirror=${FALAPP_DEBIAN_MIRROR:-}
  if [ -z "$mirror" ] && grep -qx "VERSION_CODENAME=$suite" /etc/os-release 2>/dev/null; then
    for sources in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
      [ -s "$sources" ] && { mirror=$sources; break; }
    done
  fi
  local start
  # not local: the EXIT trap of this subshell still needs it (the root filesystem goes however it ends)
  base_tmp=$(mktemp -d)
  trap 'rm -rf "$base_tmp"' EXIT
  start=$(seconds)
  log "base $ref: mmdebstrap $suite (python3, python3-venv, ca-certificates)"
  mmdebstrap --quiet "${base_recipe[@]}" "$suite" "$base_tmp/rootfs.tar" ${mirror:+"$mirror"} >&2 || die "mmdebstrap failed"
  "$engine" import "${base_config[@]}" "$base_tmp/rootfs.tar" "$ref" >/dev/null
  log "base $ref: built in $(elapsed "$start") s"
  echo "$ref"
}

python_image=${FALAPP_PYTHON_IMAGE:-}
if [ "$python_image" = local ] || { [ -z "$python_image" ] && [ "$engine" = podman ]; }; then
  python_image=$(build_base)
fi

# --- the operator image ----------------------------------------------------------------------------
build=(build --network host --file "$repo/Dockerfile" --tag "$image")
[ -n "$python_image" ] && build+=(--build-arg "PYTHON_IMAGE=$python_image")
# crun (podman's first choice) refuses hybrid cgroup layouts: build with runc there
if [ "$engine" = podman ] && [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ] && command -v runc >/dev/null; then
  build+=(--runtime runc)
fi
if git -C "$repo" rev-parse HEAD >/dev/null 2>&1; then
  revision=$(git -C "$repo" rev-parse HEAD)
  # a build from uncommitted sources says so
  [ -z "$(git -C "$repo" status --porcelain -- Dockerfile pyproject.toml README.md operator)" ] || revision+=-dirty
  build+=(--label "org.opencontainers.image.revision=$revision"
          --label "org.opencontainers.image.created=$(git -C "$repo" log -1 --format=%cI)")
fi
build+=(--label "org.opencontainers.image.version=$app_version")

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pip_vars=$(compgen -e | grep '^PIP_' || true)
if [ -n "$pip_vars" ] && [ "$engine" = docker ]; then
  log "note: docker build cannot mount pip settings into an unchanged Dockerfile; PIP_* are not used"
elif [ -n "$pip_vars" ]; then
  # The build's home (/root: pip reads ~/.config/pip/pip.conf) is a temporary directory holding the
  # settings (PIP_FIND_LINKS=x is find-links = x) and, mounted read-only, the files and directories
  # they name: mount points inside it are made here, never in the image's layers.
  home="$tmp/home"
  mkdir -p "$home/.config/pip" "$home/.pip-files"
  build+=(--volume "$home:/root")
  n=0
  {
    echo "[global]"
    for var in $pip_vars; do
      [ "$var" = PIP_CONFIG_FILE ] && continue
      value=""
      set -f  # the words are split, never globbed
      for word in ${!var}; do
        if [[ "$word" == /* ]] && [ -e "$word" ]; then
          n=$((n + 1))
          target="/root/.pip-files/$n-$(basename "$word")"
          build+=(--volume "$word:$target:ro")
          word=$target
        fi
        value+="${value:+ }$word"
      done
      set +f
      echo "$(echo "${var#PIP_}" | tr 'A-Z_' 'a-z-') = $value"
    done
  } > "$home/.config/pip/pip.conf"
  log "pip settings forwarded: $(echo $pip_vars | tr ' ' ',')"
fi

previous=$("$engine" image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
start=$(seconds)
log "$engine build $image (PYTHON_IMAGE=${python_image:-the Dockerfile default})"
"$engine" "${build[@]}" "$repo" >&2
took=$(elapsed "$start")
# the image this tag named before is left untagged: remove it unless a container still uses it
current=$("$engine" image inspect --format '{{.Id}}' "$image")
[ -z "$previous" ] || [ "$previous" = "$current" ] || "$engine" rmi "$previous" >/dev/null 2>&1 || true
size=$("$engine" image inspect --format '{{.Size}}' "$current")
log "image $image: built in $took s, $(awk -v s="$size" 'BEGIN { printf "%.0f", s / 1e6 }') MB"
echo "$image"
