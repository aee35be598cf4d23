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
STATE=""; CMD_PID=""
cleanup() {
  local rc=$?
  if [ -n "$STATE" ]; then
    if [ "$rc" -ne 0 ] && [ "${TM_NODE_KEEP:-0}" != 1 ]; then
      echo "[node] command failed ($rc); the node's logs were in $STATE/logs (TM_NODE_KEEP=1 keeps them)" >&2
    fi
    # Interrupted: stop the command before its cluster goes away.
    if [ -n "$CMD_PID" ] && kill -0 "$CMD_PID" 2>/dev/null; then
      kill -TERM "$CMD_PID" 2>/dev/null || true
      wait "$CMD_PID" 2>/dev/null || true
    fi
    "$HERE/down.sh" "$STATE" || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

STATE="$("$HERE/up.sh")"
# In the background so that a SIGINT/SIGTERM to this script alone is handled at once (bash runs
# traps only between foreground commands); stdin is passed on explicitly.
"$HERE/exec.sh" "$STATE" "$@" <&0 &
CMD_PID=$!
wait "$CMD_PID"
