# shellcheck shell=bash disable=SC2034  # sourced: the variables are used by the scripts
# Shared settings and helpers of the single-node Kubernetes scripts (tests/node/*.sh).
# Sourced, not run. Everything here is overridable from the environment.

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${TM_PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/teleport-mattermost/peers}"
BIN="$CACHE/bin"
# Images built by build-images.sh, keyed by the content of their sources.
IMAGE_CACHE="$CACHE/node-images"

# The node's addresses. They exist only inside the node's network namespace, so they cannot
# clash with the host's networks; nothing routes out of the namespace.
NODE_NAME="${TM_NODE_NAME:-tm-node}"
NODE_IP="${TM_NODE_IP:-172.31.255.1}"         # a /32 on the namespace's lo (kubelet refuses 127/8)
POD_CIDR="${TM_NODE_POD_CIDR:-10.244.0.0/16}"  # the cluster's pod range (kube-proxy, KCM)
NODE_POD_CIDR="${TM_NODE_NODE_POD_CIDR:-10.244.0.0/24}"  # the first /24: what KCM gives the node
SVC_CIDR="${TM_NODE_SVC_CIDR:-10.96.0.0/16}"
API_SVC_IP="${TM_NODE_API_SVC_IP:-10.96.0.1}"  # first address of SVC_CIDR: the kubernetes Service
CLUSTER_DOMAIN="cluster.local"

# The sandbox image every pod's infrastructure container runs (our own pause program).
PAUSE_IMAGE="localhost/tm-pause:1"

# The node's image registry (Debian's docker-registry, the CNCF distribution registry): plain
# HTTP on the node namespace's loopback, where containerd pulls from and the tests push to.
REGISTRY="${TM_NODE_REGISTRY:-127.0.0.1:5000}"

# Debian packages the node needs, and a command each provides (to test for).
NODE_PACKAGES="containerd:containerd runc:runc containernetworking-plugins:/usr/lib/cni/bridge
  iptables:iptables conntrack:conntrack gcc:gcc libc6-dev:/usr/lib/x86_64-linux-gnu/libc.a
  python3:python3 openssl:openssl curl:curl iproute2:ip ca-certificates:/etc/ssl/certs/ca-certificates.crt
  docker-registry:docker-registry skopeo:skopeo"

log() { echo "[node] $*" >&2; }
die() { echo "[node] error: $*" >&2; exit 1; }

# Installs the Debian packages that are missing (the way tests/mattermost/run.sh installs
# PostgreSQL). Only as root: otherwise say what is missing.
ensure_packages() {
  local missing="" entry pkg probe
  for entry in $NODE_PACKAGES; do
    pkg="${entry%%:*}"; probe="${entry#*:}"
    if [[ "$probe" == /* ]]; then [ -e "$probe" ] && continue
    else command -v "$probe" >/dev/null 2>&1 && continue; fi
    missing="$missing $pkg"
  done
  [ -z "$missing" ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing Debian packages:$missing (install them, or run as root)"
  log "installing Debian packages:$missing"
  apt-get update >&2
  # shellcheck disable=SC2086  # one word per package
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing >&2
}

# The Kubernetes binaries from tests/control-plane/build.sh (`build.sh node` for the node ones).
NODE_PEERS="etcd kube-apiserver kubectl kubelet kube-controller-manager kube-scheduler kube-proxy"
ensure_peers() {
  local p missing=""
  for p in $NODE_PEERS; do [ -x "$BIN/$p" ] || missing="$missing $p"; done
  [ -z "$missing" ] && return 0
  if [ "${TM_BUILD_PEERS:-0}" = 1 ]; then
    "$HERE/../control-plane/build.sh" etcd kube node >/dev/null
  else
    die "missing peer binaries:$missing in $BIN; run tests/control-plane/build.sh etcd kube node (or set TM_BUILD_PEERS=1)"
  fi
}

# Reads the state file up.sh wrote into STATE (a node's directory) into the environment.
load_state() {
  local state="$1"
  [ -f "$state/env" ] || die "$state is not a node directory (no env file)"
  # shellcheck disable=SC1091
  . "$state/env"
}

# Every cgroup v1 hierarchy mounted under /sys/fs/cgroup (cpu, memory, ..., name=systemd),
# plus the cgroup v2 one of a hybrid host (unified), which runc may use too.
cgroup_hierarchies() {
  local d
  for d in /sys/fs/cgroup/*/; do
    d="${d%/}"
    [ -f "$d/cgroup.procs" ] && echo "$d"
  done
}
