#!/usr/bin/env bash
# Runs a command in a test node's network namespace (where the apiserver, the kubelet, the pods
# and the Service IPs are), with the node's environment (KUBECONFIG, TM_NODE_*) and its peer
# binaries (kubectl, helm, ...) first on PATH.
#
#   tests/node/exec.sh STATE CMD [ARGS...]
#   tests/node/exec.sh "$STATE" kubectl get pods -A
#   tests/node/exec.sh "$STATE" curl -s http://10.96.12.34:8080/
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "$0")/lib.sh"

[ $# -ge 2 ] || { echo "usage: $0 STATE CMD [ARGS...]" >&2; exit 2; }
STATE="$1"; shift
load_state "$STATE"
set -a
# shellcheck disable=SC1091
. "$STATE/env"
set +a
export PATH="$TM_NODE_BIN:$PATH"
exec nsenter -t "$TM_NODE_PID" -n -- "$@"
