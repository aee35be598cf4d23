#!/usr/bin/env bash
# Tears down a node started by up.sh: stops its components (SIGTERM to its PID 1, which stops
# them in order; SIGKILL after a grace period), kills anything left in its cgroups (pods),
# removes the cgroups, and deletes STATE unless TM_NODE_KEEP=1. The node's mounts and network
# lived in its own namespaces and are gone with its last process. Safe to run twice.
#
#   tests/node/down.sh STATE
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "$0")/lib.sh"

[ $# -eq 1 ] || { echo "usage: $0 STATE" >&2; exit 2; }
STATE="$1"
[ -d "$STATE" ] || { log "$STATE: already gone"; exit 0; }
# up.sh may have failed before writing env: fall back to the pieces it writes first.
NODE_PID="$(cat "$STATE/node.pid" 2>/dev/null || true)"
UNSHARE_PID="$(cat "$STATE/unshare.pid" 2>/dev/null || true)"
CG="$(basename "$STATE" | tr '.' '-')"

# Is PID still the process we started (not a recycled number)? Its cgroup says so.
ours() { [ -n "$1" ] && grep -q "/$CG/" "/proc/$1/cgroup" 2>/dev/null; }

if ours "$NODE_PID"; then
  kill -TERM "$NODE_PID" 2>/dev/null || true
  for _ in $(seq 1 150); do ours "$NODE_PID" || break; sleep 0.1; done
  if ours "$NODE_PID"; then
    log "the node's PID 1 did not stop in 15s; killing it"
    kill -KILL "$NODE_PID" 2>/dev/null || true
  fi
fi
if ours "$UNSHARE_PID"; then
  kill -KILL "$UNSHARE_PID" 2>/dev/null || true
fi

# Whatever is still in our cgroups (nothing, normally: the PID namespace took it along), then
# the cgroups themselves, deepest first.
for h in $(cgroup_hierarchies); do
  [ -d "$h/$CG" ] || continue
  for _ in $(seq 1 50); do
    pids="$(find "$h/$CG" -name cgroup.procs -exec cat {} + 2>/dev/null || true)"
    [ -z "$pids" ] && break
    # shellcheck disable=SC2086  # one word per pid
    kill -KILL $pids 2>/dev/null || true
    sleep 0.1
  done
  find "$h/$CG" -depth -type d -exec rmdir {} + 2>/dev/null || true
  [ -d "$h/$CG" ] && log "warning: could not remove cgroup $h/$CG"
done

if [ "${TM_NODE_KEEP:-0}" = 1 ]; then
  log "kept $STATE"
else
  # The mounts were only in the node's mount namespace, but make sure none lingers before
  # deleting (rm would otherwise descend into a live overlay or tmpfs).
  if grep -q " $STATE/" /proc/self/mountinfo; then
    log "warning: mounts under $STATE in the host namespace; unmounting"
    grep " $STATE/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l || true
  fi
  rm -rf "$STATE"
fi
log "node $CG down"
