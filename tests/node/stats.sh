#!/usr/bin/env bash
# Prints the memory (RSS) and CPU time of every process of a test node, read from the host's
# /proc: the components, the containerd shims, and the pods' processes (all live in the node's
# cgroup, see up.sh). Totals at the end.
#
#   tests/node/stats.sh STATE
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "$0")/lib.sh"

[ $# -eq 1 ] || { echo "usage: $0 STATE" >&2; exit 2; }
load_state "$1"
mem_cg="/sys/fs/cgroup/memory/$TM_NODE_CGROUP"
[ -d "$mem_cg" ] || mem_cg="/sys/fs/cgroup/$TM_NODE_CGROUP"    # cgroup v2
hz=$(getconf CLK_TCK)
total_rss=0; total_cpu=0
printf '%-8s %-26s %10s %9s\n' PID COMMAND RSS-KiB CPU-s
while read -r pid; do
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || continue
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null) || rss=0
  rss=${rss:-0}
  # utime + stime, fields 14 and 15 of /proc/PID/stat (after the parenthesised command name).
  ticks=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}') || ticks=0
  total_rss=$((total_rss + rss)); total_cpu=$((total_cpu + ticks))
  printf '%-8s %-26s %10d %9.2f\n' "$pid" "$comm" "$rss" "$(awk -v t="$ticks" -v h="$hz" 'BEGIN { print t / h }')"
done < <(find "$mem_cg" -name cgroup.procs -exec cat {} + | sort -n)
printf '%-8s %-26s %10d %9.2f\n' "" TOTAL "$total_rss" "$(awk -v t="$total_cpu" -v h="$hz" 'BEGIN { print t / h }')"
if [ -f "$mem_cg/memory.usage_in_bytes" ]; then
  echo "cgroup memory.usage_in_bytes (incl. page cache): $(( $(cat "$mem_cg/memory.usage_in_bytes") / 1048576 )) MiB"
fi
