#!/usr/bin/env bash
# The node tier: the operator's image in pods on a real node, installed with the chart.
#
#   tests/node/run-tier.sh [TEST-FILTER...]    # extra args go to the test binary
#   TM_BUILD_PEERS=1 tests/node/run-tier.sh    # build the node's peers first if missing
#   TM_NODE_KEEP=1 tests/node/run-tier.sh      # keep the node's logs (its STATE) afterwards
#
# 1. installs the Debian packages the node needs when missing (containerd, runc, the CNI
#    plugins, docker-registry, skopeo, ...: tests/node/lib.sh) and builds cosign
#    (tests/registry/build.sh, cached),
# 2. builds tests/node_tier.rs (outside the node: cargo may need crates.io),
# 3. builds the operator image from the Dockerfile without Docker (tests/image/build.sh),
# 4. brings a node up (tests/node/run.sh: its own network, mount and PID namespaces, with an
#    image registry on its loopback) and runs the test binary INSIDE the node's network
#    namespace, so the doubles it starts are reachable only there (pods reach them through
#    the node's IP). The tests push the image and the chart to the node's registry, sign them,
#    and install from there: containerd pulls the image. The node is torn down however the
#    tests end.
#
# Without the node's peer binaries or root it prints one line saying what to run and exits 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=SCRIPTDIR/lib.sh
. tests/node/lib.sh
t0=$(date +%s.%N)
now() { date +%s.%N; }
secs() { awk -v a="$2" -v b="$1" 'BEGIN { printf "%.1f", a - b }'; }

missing=""
for p in $NODE_PEERS helm; do [ -x "$BIN/$p" ] || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if [ "${TM_BUILD_PEERS:-0}" = 1 ]; then
    tests/control-plane/build.sh etcd kube helm node >/dev/null
  else
    echo "skipped: node tier: peers missing ($missing) in $BIN; run tests/control-plane/build.sh etcd kube helm node (or TM_BUILD_PEERS=1 tests/node/run-tier.sh)"
    exit 0
  fi
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: node tier: needs root (namespaces, cgroups, iptables); run sudo tests/node/run-tier.sh"
  exit 0
fi
# Debian packages are installed, not skipped over (root can).
ensure_packages
tests/registry/build.sh >/dev/null

t=$(now)
bin=$(cargo test --test node_tier --no-run --message-format=json \
  | jq -r 'select(.reason == "compiler-artifact" and .target.name == "node_tier" and .executable != null) | .executable' \
  | tail -n 1)
[ -x "$bin" ] || { echo "could not find the node_tier test binary" >&2; exit 1; }
t_bin=$(secs "$t" "$(now)")

t=$(now)
tar=$(tests/image/build.sh)
t_image=$(secs "$t" "$(now)")
log "image $tar (test binary ${t_bin}s, image ${t_image}s)"
# Another image, pushed under the operator image's tag to show that cosign then refuses it.
other=$(tests/node/build-images.sh pause)

# Inside the node: the tests (one at a time: they share the node). The operator image is not
# imported: the tests push it to the node's registry and containerd pulls it from there.
t=$(now)
rc=0
# shellcheck disable=SC2016  # expanded by the inner bash, inside the node
TM_IMAGE_TAR="$tar" TM_OTHER_IMAGE_TAR="$other" tests/node/run.sh bash -c '
  echo "[node] node Ready $(grep node_ready_s "$TM_NODE_STATE/timings" | cut -d= -f2)s after up.sh started; registry $TM_NODE_REGISTRY" >&2
  exec "$@"
' node-tier "$bin" --test-threads 1 --nocapture "$@" || rc=$?
t_run=$(secs "$t" "$(now)")
log "tier $([ "$rc" -eq 0 ] && echo passed || echo "FAILED ($rc)") in $(secs "$t0" "$(now)")s: test binary ${t_bin}s, image ${t_image}s, node up + tests + down ${t_run}s"
exit "$rc"
