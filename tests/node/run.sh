#!/usr/bin/env bash
# Brings up a test node (up.sh), runs a command inside its network namespace with its
# environment (exec.sh: KUBECONFIG, TM_NODE_*, kubectl/helm on PATH), and tears the node down
# (down.sh) however the command ends. Exits with the command's status.
#
#   tests/node/run.sh CMD [ARGS...]
#   tests/node/run.sh tests/node/smoke.sh
#   tests/node/run.sh helm install --wait op charts/teleport-mattermost ...
#   TM_NODE_KEEP=1 tests/node/run.sh ...     # keep the node's directory (logs) afterwards
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"

[ $# -gt 0 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }
STATE=""
cleanup() {
  local rc=$?
  if [ -n "$STATE" ]; then
    if [ "$rc" -ne 0 ] && [ "${TM_NODE_KEEP:-0}" != 1 ]; then
      echo "[node] command failed ($rc); the node's logs were in $STATE/logs (TM_NODE_KEEP=1 keeps them)" >&2
    fi
    "$HERE/down.sh" "$STATE" || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

STATE="$("$HERE/up.sh")"
"$HERE/exec.sh" "$STATE" "$@"
