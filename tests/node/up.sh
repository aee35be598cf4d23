#!/usr/bin/env bash
# Brings up a real single-node Kubernetes cluster (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, containerd + runc, kubelet, kube-proxy in iptables mode, a CNI bridge for the
# pods) inside private network, mount and PID namespaces, waits until the node is Ready, and
# prints the node's directory (STATE) on stdout. The node keeps running after this returns;
# tear it down with `tests/node/down.sh STATE`.
#
#   STATE=$(tests/node/up.sh)
#   tests/node/exec.sh "$STATE" kubectl get nodes        # anything that talks to the cluster
#   tests/node/import-image.sh "$STATE" image.tar         # load an OCI archive (mkimage.py)
#   tests/node/down.sh "$STATE"
#
# Or all in one, torn down on exit: tests/node/run.sh CMD [ARGS...]
#
# Needs root (namespaces, cgroups, iptables), the peers of `tests/control-plane/build.sh
# etcd kube node`, and the Debian packages it installs when missing (containerd, runc,
# containernetworking-plugins, iptables, conntrack, gcc for the pause program, docker-registry
# for the node's registry, skopeo to push to it).
#
# Isolation: the cluster's addresses (node IP, pod and service CIDRs) exist only in the node's
# network namespace, which has no route out. Everything the components write lands under STATE:
# inside the node's mount namespace STATE/root/{var/lib,var/log,run} are bind-mounted over
# /var/lib, /var/log and /run, so the kubelet's fixed paths (/var/lib/kubelet/device-plugins,
# /var/log/containers, ...), containerd's, runc's and CNI's never touch the host's. The node's
# processes and pods live in the cgroup tm-node-<id> of every hierarchy. Nothing else on the
# host changes: the kernel tunables the kubelet insists on are shown to it, not set (inside.sh).
#
# Environment: TM_NODE_KEEP=1 keeps STATE (logs) after down.sh; the network settings of lib.sh.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "$0")/lib.sh"
T0=$(date +%s.%N)

[ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces, cgroups, mounts)"
ensure_packages
ensure_peers
for c in unshare nsenter setsid; do
  command -v "$c" >/dev/null || die "$c (util-linux) is required"
done

STATE="$(mktemp -d "${TMPDIR:-/tmp}/tm-node.XXXXXX")"
chmod 755 "$STATE"
CG="$(basename "$STATE" | tr '.' '-')"      # tm-node-XXXXXX: the node's cgroup
export KUBECACHEDIR="$STATE/kube-cache"   # see the env file below

UP_OK=0
fail() {
  local rc="$1"
  log "bring-up failed (exit $rc); last lines of the logs in $STATE/logs:"
  local f
  for f in "$STATE"/logs/*.log; do
    [ -s "$f" ] || continue
    echo "--- $(basename "$f")" >&2
    grep -v -e 'flags.go' -e '^I' "$f" | tail -n 15 >&2 || true
  done
  TM_NODE_KEEP="${TM_NODE_KEEP:-0}" "$HERE/down.sh" "$STATE" >&2 || true
  exit "$rc"
}
# Any failure from here on: show the logs and tear down what was started.
trap 'rc=$?; [ "$UP_OK" = 1 ] || fail "$rc"' EXIT
trap 'exit 130' INT TERM

mkdir -p "$STATE"/{pki,logs,cni/net.d,containerd,registry/data,root/var/lib/{kubelet,cni,containerd},root/var/log,root/run,sysctl}
mkdir -m 700 "$STATE/etcd"   # etcd wants its data directory private

# ---------------------------------------------------------------------------------------------
# PKI: one CA signs everything; EC P-256 keys (fast to make). Each component gets a client
# certificate whose CN/O is the identity the bootstrap RBAC (and the Node authorizer) expects.
P="$STATE/pki"
openssl ecparam -name prime256v1 -genkey -noout -out "$P/ca.key" 2>/dev/null
openssl req -x509 -new -key "$P/ca.key" -subj "/CN=tm-node test CA" -days 7 -out "$P/ca.crt" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

# [CA=NAME] cert NAME SUBJECT EXTENDED-KEY-USAGE [SUBJECT-ALT-NAMES]: signed by CA (default ca).
cert() {
  local name="$1" subj="$2" eku="$3" san="${4:-}" ca="${CA:-ca}"
  openssl ecparam -name prime256v1 -genkey -noout -out "$P/$name.key.ec" 2>/dev/null
  # PKCS#8, which every consumer reads.
  openssl pkcs8 -topk8 -nocrypt -in "$P/$name.key.ec" -out "$P/$name.key"
  rm -f "$P/$name.key.ec"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    if [ -n "$san" ]; then echo "subjectAltName=$san"; fi
  } > "$P/$name.ext"
  openssl req -new -key "$P/$name.key" -subj "$subj" 2>/dev/null |
    openssl x509 -req -CA "$P/$ca.crt" -CAkey "$P/$ca.key" -set_serial "0x$(openssl rand -hex 12)" \
      -days 7 -extfile "$P/$name.ext" -out "$P/$name.crt" 2>/dev/null
  rm -f "$P/$name.ext"
}
cert apiserver "/CN=kube-apiserver" serverAuth \
  "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,IP:127.0.0.1,IP:$NODE_IP,IP:$API_SVC_IP"
cert admin "/O=system:masters/CN=admin" clientAuth
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
cert controller-manager "/CN=system:kube-controller-manager" clientAuth
cert scheduler "/CN=system:kube-scheduler" clientAuth
cert kube-proxy "/CN=system:kube-proxy" clientAuth
# The kubelet: a node identity (Node authorizer + NodeRestriction), and a serving certificate
# the apiserver verifies when it proxies logs/exec.
cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
cert kubelet-serving "/CN=$NODE_NAME" serverAuth "DNS:$NODE_NAME,IP:$NODE_IP"
# The aggregation layer's front proxy (kubeadm's front-proxy CA): KCM and the scheduler read
# the requestheader CA from kube-system/extension-apiserver-authentication and log errors every
# second without it; aggregated APIs (metrics-server and the like) need it to work at all.
openssl ecparam -name prime256v1 -genkey -noout -out "$P/front-proxy-ca.key" 2>/dev/null
openssl req -x509 -new -key "$P/front-proxy-ca.key" -subj "/CN=tm-node front-proxy CA" -days 7 \
  -out "$P/front-proxy-ca.crt" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
CA=front-proxy-ca cert front-proxy-client "/CN=front-proxy-client" clientAuth
# ServiceAccount tokens: the apiserver signs (and verifies) with this pair, KCM too.
openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null | openssl pkcs8 -topk8 -nocrypt -out "$P/sa.key"
openssl pkey -in "$P/sa.key" -pubout -out "$P/sa.pub"
chmod 600 "$P"/*.key

# kubeconfig NAME SERVER: a kubeconfig for the client certificate NAME.
kubeconfig() {
  cat > "$P/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tm-node
  cluster:
    server: $2
    certificate-authority-data: $(base64 -w0 < "$P/ca.crt")
users:
- name: $1
  user:
    client-certificate-data: $(base64 -w0 < "$P/$1.crt")
    client-key-data: $(base64 -w0 < "$P/$1.key")
contexts:
- name: tm-node
  context:
    cluster: tm-node
    user: $1
current-context: tm-node
EOF
  chmod 600 "$P/$1.kubeconfig"
}
API="https://127.0.0.1:6443"
for k in admin controller-manager scheduler kube-proxy kubelet; do kubeconfig "$k" "$API"; done

# ---------------------------------------------------------------------------------------------
# Configuration files. Paths are as the node's processes see them (inside the mount namespace
# /var/lib, /var/log and /run are STATE/root/...); STATE itself is the same path inside.

# CNI: one bridge for the pods, host-local addresses from the node's /24, portmap for hostPort.
# containerd adds the loopback plugin itself. host-local keeps its leases under /var/lib/cni.
cat > "$STATE/cni/net.d/10-tm-pods.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "tm-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$NODE_POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "/var/lib/cni/networks"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

# TM_NODE_RUNC_DEBUG=1: runc through a wrapper that runs it with --debug and keeps the bundle's
# config.json and runc's log of every failed call in STATE/logs/runc/.
RUNC="$(command -v runc)"
if [ "${TM_NODE_RUNC_DEBUG:-0}" = 1 ]; then
  mkdir -p "$STATE/logs/runc"
  cat > "$STATE/runc-debug" <<EOF
#!/bin/sh
# Written by tests/node/up.sh (TM_NODE_RUNC_DEBUG=1).
bundle=""; log=""; prev=""
for a in "\$@"; do
  case "\$prev" in --bundle|-b) bundle="\$a";; --log) log="\$a";; esac
  prev="\$a"
done
$RUNC --debug "\$@"
rc=\$?
if [ \$rc -ne 0 ]; then
  d="$STATE/logs/runc/\$(date +%s%N)"
  mkdir -p "\$d"
  echo "runc \$* -> \$rc" > "\$d/args"
  [ -n "\$bundle" ] && cp "\$bundle/config.json" "\$d/" 2>/dev/null
  [ -n "\$log" ] && cp "\$log" "\$d/log.json" 2>/dev/null
fi
exit \$rc
EOF
  chmod +x "$STATE/runc-debug"
  RUNC="$STATE/runc-debug"
fi

# containerd 1.6 (Debian bookworm): its own root, state and socket; runc with cgroupfs (the host
# is cgroup v1 and there is no systemd); our pause image as the sandbox; the Debian CNI plugins.
cat > "$STATE/containerd/config.toml" <<EOF
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
# Plugins that need things this node does not have (or that we do not want).
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd-opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # The streaming server (exec/attach/port-forward) on loopback, any port.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # The kubelet asks for oom_score_adj -998 for every pod sandbox; lowering it needs
  # CAP_SYS_RESOURCE, which a CI sandbox may not grant (this machine does not: runc then fails
  # with "failed to update /proc/self/oom_score_adj: Permission denied"). Clamp to containerd's
  # own value instead; raising (every container's own score) still works.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$RUNC"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
    max_conf_num = 1
  # Per-registry host settings (hosts.toml), as a cluster configures a mirror or a private CA.
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$STATE/containerd/certs.d"
EOF

# The node's registry serves plain HTTP: say so to containerd, which otherwise speaks HTTPS to
# any registry host.
mkdir -p "$STATE/containerd/certs.d/$REGISTRY"
cat > "$STATE/containerd/certs.d/$REGISTRY/hosts.toml" <<EOF
server = "http://$REGISTRY"

[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve"]
EOF

# The registry (docker-registry serve): no authentication, storage under STATE, every request
# in its log (the tests read which client pulled what).
cat > "$STATE/registry/config.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $STATE/registry/data
  delete:
    enabled: true
http:
  addr: $REGISTRY
EOF

# No DNS server on this node: pods get an empty resolv.conf (the kubelet's resolvConf is "" and
# clusterDNS is unset, so ClusterFirst falls back to Default and the kubelet records a
# MissingClusterDNS event). In-cluster clients use KUBERNETES_SERVICE_HOST, an IP.
cat > "$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 host: the 1.37 kubelet refuses to start on it unless told not to.
failCgroupV1: false
cgroupDriver: cgroupfs
# All pods (and the QoS cgroups) under our own cgroup, created by up.sh in every hierarchy.
cgroupRoot: /$CG
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $P/kubelet-serving.crt
tlsPrivateKeyFile: $P/kubelet-serving.key
rotateCertificates: false
serverTLSBootstrap: false
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $P/ca.crt}
authorization:
  mode: Webhook
clusterDomain: $CLUSTER_DOMAIN
resolvConf: ""
staticPodPath: ""
# The host's disk may be fuller than the kubelet's defaults like (image GC above 85% use,
# eviction below 10% free): a CI disk could get our imported images deleted (they cannot be
# pulled back) or the node tainted with DiskPressure. Never GC images; evict only near 100%.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
# Graceful node shutdown stays off (the default, spelt out): it takes systemd-logind
# inhibitor locks over D-Bus, and there is no systemd here.
shutdownGracePeriod: 0s
shutdownGracePeriodCriticalPods: 0s
# Faster status for tests (defaults 10s / 5m).
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
EOF

cat > "$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: $P/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
# NodePorts on the node IP only (kube-proxy warns about "all local IPs" otherwise).
nodePortAddresses: ["primary"]
metricsBindAddress: 127.0.0.1:10249
# nf_conntrack_max is a host-wide setting, read-only outside the initial network namespace:
# leave it alone (0 = do not touch). The TCP timeouts are per namespace and stay as kube-proxy
# wants them.
conntrack:
  maxPerCore: 0
  min: 0
iptables:
  minSyncPeriod: 0s
  syncPeriod: 30s
EOF

# What inside.sh needs, as sourceable shell.
cat > "$STATE/node.conf" <<EOF
STATE=$STATE
BIN=$BIN
NODE_NAME=$NODE_NAME
NODE_IP=$NODE_IP
POD_CIDR=$POD_CIDR
SVC_CIDR=$SVC_CIDR
PAUSE_TAR=$("$HERE/build-images.sh" pause)
REGISTRY=$REGISTRY
T0=$T0
EOF

# ---------------------------------------------------------------------------------------------
# cgroups: tm-node-<id> in every hierarchy (the kubelet's cgroupRoot; it checks it exists), and
# tm-node-<id>/node for the node's own processes, so they are easy to account for and kill.
for h in $(cgroup_hierarchies); do
  mkdir -p "$h/$CG/node"
  if [ -f "$h/cpuset.cpus" ]; then
    # A new cpuset cgroup starts with no CPUs and no memory nodes: tasks cannot join it. Copy the
    # parent's, and let the kubelet's children inherit.
    for d in "$h/$CG" "$h/$CG/node"; do
      cat "$h/cpuset.cpus" > "$d/cpuset.cpus"
      cat "$h/cpuset.mems" > "$d/cpuset.mems"
    done
    echo 1 > "$h/$CG/cgroup.clone_children"
  fi
done
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  # cgroup v2 (not the case on the machine this was written on; best effort): let the
  # kubelet's children under tm-node-<id> use the controllers.
  for c in cpuset cpu io memory hugetlb pids; do
    echo "+$c" > "/sys/fs/cgroup/$CG/cgroup.subtree_control" 2>/dev/null || true
  done
fi

# ---------------------------------------------------------------------------------------------
# Launch inside.sh as PID 1 of new network, mount and PID namespaces, in its own session (so a
# Ctrl-C aimed at a later command does not reach it), in the node cgroup. --kill-child: if
# unshare is killed, the node's PID 1 gets SIGTERM and shuts everything down.
# The subshell must not fork before the exec (no command substitution in it): until unshare
# runs, its children would be mistaken for the node's PID 1 below.
HIERARCHIES="$(cgroup_hierarchies)"
(
  for h in $HIERARCHIES; do echo "$BASHPID" > "$h/$CG/node/cgroup.procs"; done
  exec setsid unshare --net --mount --pid --fork --mount-proc --propagation slave \
    --kill-child=SIGTERM -- bash "$HERE/inside.sh" "$STATE/node.conf"
) </dev/null >"$STATE/logs/inside.log" 2>&1 &
UNSHARE_PID=$!
echo "$UNSHARE_PID" > "$STATE/unshare.pid"

# The node's PID 1, as the host sees it: unshare's only child. Everything enters its
# namespaces through it (nsenter -t PID -n).
NODE_PID=""
for _ in $(seq 1 100); do
  if [ "$(cat "/proc/$UNSHARE_PID/comm" 2>/dev/null)" = unshare ]; then
    NODE_PID="$(awk '{print $1}' "/proc/$UNSHARE_PID/task/$UNSHARE_PID/children" 2>/dev/null)" || true
    [ -n "$NODE_PID" ] && break
  fi
  kill -0 "$UNSHARE_PID" 2>/dev/null || die "unshare exited at once: $(cat "$STATE/logs/inside.log")"
  sleep 0.05
done
[ -n "$NODE_PID" ] || die "could not find the node's PID 1"
echo "$NODE_PID" > "$STATE/node.pid"

cat > "$STATE/env" <<EOF
# Written by tests/node/up.sh: source it, or use tests/node/exec.sh.
TM_NODE_STATE=$STATE
TM_NODE_PID=$NODE_PID
TM_NODE_UNSHARE_PID=$UNSHARE_PID
TM_NODE_CGROUP=$CG
TM_NODE_NAME=$NODE_NAME
TM_NODE_IP=$NODE_IP
TM_NODE_POD_CIDR=$POD_CIDR
TM_NODE_SVC_CIDR=$SVC_CIDR
TM_NODE_BIN=$BIN
TM_NODE_CONTAINERD_SOCK=$STATE/root/run/containerd/containerd.sock
TM_NODE_REGISTRY=$REGISTRY
KUBECONFIG=$P/admin.kubeconfig
# Every node's apiserver is https://127.0.0.1:6443: keep kubectl's discovery cache and helm's
# state per node, or one run would see another's (stale) API resources.
KUBECACHEDIR=$STATE/kube-cache
HELM_CACHE_HOME=$STATE/helm/cache
HELM_CONFIG_HOME=$STATE/helm/config
HELM_DATA_HOME=$STATE/helm/data
EOF

# in_node CMD...: run a command in the node's network namespace.
in_node() { nsenter -t "$NODE_PID" -n -- "$@"; }
kubectl() { in_node "$BIN/kubectl" --kubeconfig "$P/admin.kubeconfig" "$@"; }
alive() { kill -0 "$NODE_PID" 2>/dev/null && [ ! -f "$STATE/failed" ]; }

# Wait for the apiserver, then for the node to register and turn Ready.
deadline=$(( $(date +%s) + ${TM_NODE_TIMEOUT:-180} ))
until kubectl get --raw /readyz >/dev/null 2>&1; do
  alive || die "the node stopped before the apiserver was ready ($(cat "$STATE/failed" 2>/dev/null || echo '?') exited)"
  [ "$(date +%s)" -lt "$deadline" ] || die "kube-apiserver not ready in time"
  sleep 0.2
done
T_API=$(date +%s.%N)
until in_node curl -sf "http://$REGISTRY/v2/" >/dev/null 2>&1; do
  alive || die "the node stopped before its registry answered"
  [ "$(date +%s)" -lt "$deadline" ] || die "the node's registry ($REGISTRY) did not answer in time"
  sleep 0.2
done
until kubectl get node "$NODE_NAME" >/dev/null 2>&1; do
  alive || die "the node stopped before the kubelet registered ($(cat "$STATE/failed" 2>/dev/null || echo '?') exited)"
  [ "$(date +%s)" -lt "$deadline" ] || die "the kubelet did not register the node in time"
  sleep 0.2
done
T_REG=$(date +%s.%N)
until [ "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; do
  alive || die "the node stopped before it was Ready ($(cat "$STATE/failed" 2>/dev/null || echo '?') exited)"
  [ "$(date +%s)" -lt "$deadline" ] || die "node not Ready in time"
  sleep 0.2
done
T_READY=$(date +%s.%N)
# The default ServiceAccount appears a moment after the namespace controller starts; pods
# cannot be created in "default" before it.
until kubectl -n default get serviceaccount default >/dev/null 2>&1; do
  alive || die "the node stopped"
  [ "$(date +%s)" -lt "$deadline" ] || die "no default ServiceAccount in time"
  sleep 0.2
done
T_SA=$(date +%s.%N)

since() { awk -v a="$1" -v b="$T0" 'BEGIN { printf "%.2f", a - b }'; }
{
  echo "apiserver_ready_s=$(since "$T_API")"
  echo "node_registered_s=$(since "$T_REG")"
  echo "node_ready_s=$(since "$T_READY")"
  echo "default_sa_s=$(since "$T_SA")"
} > "$STATE/timings"
log "node $NODE_NAME Ready in $(grep node_ready_s "$STATE/timings" | cut -d= -f2)s; state in $STATE"
UP_OK=1
echo "$STATE"
