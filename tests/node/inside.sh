#!/usr/bin/env bash
# PID 1 of the test node's namespaces (network, mount, PID); started by up.sh through
# `unshare`, never by hand. Sets up the namespace's mounts and network, starts the cluster's
# components, and supervises them: when one exits, or on SIGTERM/SIGINT, it stops the others
# and exits, and the kernel then kills whatever is left in the PID namespace (containerd
# shims, every pod's processes), which also drops every mount made in here.
#
#   inside.sh STATE/node.conf
set -euo pipefail
# shellcheck disable=SC1090
. "$1"
L="$STATE/logs"
P="$STATE/pki"
# Times (seconds since up.sh started) of the milestones, for the findings.
mark() { awk -v a="$(date +%s.%N)" -v b="$T0" -v m="$1" 'BEGIN { printf "%s %.2f\n", m, a - b }' >> "$STATE/milestones"; }
say() { echo "[inside] $*"; }

# --- Mounts (this mount namespace only; it is a slave of the host's, so nothing leaks out) ---
# The standard locations the components hard-code, redirected into STATE.
mount --bind "$STATE/root/var/lib" /var/lib
mount --bind "$STATE/root/var/log" /var/log
mount --bind "$STATE/root/run" /run
# The kubelet insists on these kernel tunables and, unless protectKernelDefaults is set (then
# it refuses to start instead), writes them host-wide. Show it the values it wants here; the
# kernel (and the pods, which mount their own /proc) keep the real ones.
for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
          kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
  key="${kv%%=*}"; f="$STATE/sysctl/${key//\//.}"
  echo "${kv#*=}" > "$f"
  mount --bind "$f" "/proc/sys/$key"
done

# --- Network: loopback, carrying the node's address too; no route out ---
# The kubelet refuses a loopback node IP, and pods need an address of the node to reach the
# apiserver at (the kubernetes Service's endpoint), so the node IP is a /32 on lo. (A dummy
# interface would do as well, but not every kernel has one: this one is built without it.)
ip link set lo up
ip addr add "$NODE_IP/32" dev lo
# Service ClusterIPs are virtual (kube-proxy DNATs them in OUTPUT/PREROUTING), but the kernel
# needs a route before it sends to one from this namespace; after the DNAT it routes again, to
# the pod on cni0. A ClusterIP without endpoints is REJECTed by kube-proxy's rules.
ip route add "$SVC_CIDR" dev lo
echo 1 > /proc/sys/net/ipv4/ip_forward
# Pod -> Service -> pod on the same bridge needs the bridge's traffic to see iptables.
if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
  echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables
fi

# --- Components ---
declare -A PIDS=()
start() { # NAME CMD...
  local name="$1"; shift
  "$@" >>"$L/$name.log" 2>&1 &
  PIDS[$name]=$!
  say "started $name (pid ${PIDS[$name]} in the node's PID namespace)"
}

STOPPING=0
stop() {
  [ "$STOPPING" = 1 ] && return
  STOPPING=1
  say "stopping"
  local name pid
  # Clients first, then the runtime and the apiserver, etcd last.
  for name in kube-proxy kubelet kube-scheduler kube-controller-manager containerd registry kube-apiserver etcd; do
    pid="${PIDS[$name]:-}"
    [ -n "$pid" ] || continue
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  # Returning from PID 1 kills the rest (shims, pods) with SIGKILL.
  exit 0
}
trap stop TERM INT

start etcd "$BIN/etcd" \
  --name "$NODE_NAME" --data-dir "$STATE/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster "$NODE_NAME=http://127.0.0.1:2380" \
  --unsafe-no-fsync --log-level warn

# Listens on every address of this namespace: 127.0.0.1 for us, the node IP for the pods (the
# kubernetes Service's endpoint is the advertise address).
start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:2379 \
  --bind-address=0.0.0.0 --secure-port=6443 --advertise-address="$NODE_IP" \
  --cert-dir="$STATE/apiserver-certs" \
  --tls-cert-file="$P/apiserver.crt" --tls-private-key-file="$P/apiserver.key" \
  --client-ca-file="$P/ca.crt" \
  --service-account-key-file="$P/sa.pub" --service-account-signing-key-file="$P/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range="$SVC_CIDR" \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction \
  --kubelet-client-certificate="$P/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$P/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$P/ca.crt" \
  --kubelet-preferred-address-types=InternalIP \
  --requestheader-client-ca-file="$P/front-proxy-ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User \
  --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$P/front-proxy-client.crt" \
  --proxy-client-key-file="$P/front-proxy-client.key" \
  --profiling=false \
  --v=1

start containerd containerd --config "$STATE/containerd/config.toml" --log-level info

# The registry pods' images are pulled from (127.0.0.1 here is the node's loopback).
start registry docker-registry serve "$STATE/registry/config.yml"

# Wait for the apiserver (its /readyz includes the RBAC bootstrap roles the others need).
for _ in $(seq 1 600); do
  curl -sf --cacert "$P/ca.crt" --cert "$P/admin.crt" --key "$P/admin.key" \
    https://127.0.0.1:6443/readyz >/dev/null 2>&1 && break
  for name in "${!PIDS[@]}"; do
    kill -0 "${PIDS[$name]}" 2>/dev/null || { say "$name exited during start-up"; echo "$name" > "$STATE/failed"; stop; }
  done
  sleep 0.2
done
mark apiserver-ready

# --flex-volume-plugin-dir: as the kubelet's --volume-plugin-dir, else it creates
# /usr/libexec/kubernetes/kubelet-plugins/volume/exec on the host.
start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig="$P/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$P/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$P/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=10257 \
  --leader-elect=false \
  --service-account-private-key-file="$P/sa.key" \
  --root-ca-file="$P/ca.crt" \
  --use-service-account-credentials=true \
  --cluster-signing-cert-file="$P/ca.crt" --cluster-signing-key-file="$P/ca.key" \
  --allocate-node-cidrs=true --cluster-cidr="$POD_CIDR" --node-cidr-mask-size=24 \
  --service-cluster-ip-range="$SVC_CIDR" \
  --flex-volume-plugin-dir=/var/lib/kube-controller-manager/volume-plugins \
  --profiling=false \
  --v=1

start kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig="$P/scheduler.kubeconfig" \
  --authentication-kubeconfig="$P/scheduler.kubeconfig" \
  --authorization-kubeconfig="$P/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=10259 \
  --leader-elect=false \
  --profiling=false \
  --v=1

# The sandbox image must be in containerd before the first pod: nothing can be pulled here.
# The socket can appear a moment before containerd serves on it: retry.
for i in $(seq 1 100); do
  if [ -S /run/containerd/containerd.sock ] &&
     ctr --address /run/containerd/containerd.sock -n k8s.io images import "$PAUSE_TAR" >>"$L/images.log" 2>&1; then
    break
  fi
  [ "$i" -lt 100 ] || { say "could not import the pause image"; echo containerd > "$STATE/failed"; stop; }
  sleep 0.1
done
mark containerd-ready

# --volume-plugin-dir (a flag, not in KubeletConfiguration): the FlexVolume directory, else the
# kubelet creates /usr/libexec/kubernetes/kubelet-plugins/volume/exec on the host.
start kubelet "$BIN/kubelet" \
  --config="$STATE/kubelet.yaml" \
  --kubeconfig="$P/kubelet.kubeconfig" \
  --hostname-override="$NODE_NAME" \
  --node-ip="$NODE_IP" \
  --volume-plugin-dir=/var/lib/kubelet/volume-plugins \
  --v=1

start kube-proxy "$BIN/kube-proxy" --config="$STATE/kube-proxy.yaml" --v=1
mark all-started

# Supervise: the first component to exit stops the node (a test node with a dead part is
# worse than none). `wait -n` returns when any of them exits, or when a trap fires.
while :; do
  wait -n || true
  for name in "${!PIDS[@]}"; do
    if ! kill -0 "${PIDS[$name]}" 2>/dev/null; then
      say "$name exited; stopping the node"
      echo "$name" > "$STATE/failed"
      stop
    fi
  done
done
