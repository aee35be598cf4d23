#!/usr/bin/env bash
# The pacing benchmark against the real Mattermost: for each server rate limit (10/s and
# 50/s, burst 100, or the rates given), starts a fresh server inside a private network
# namespace with only loopback and runs benches/pacing.rs (release build) against it.
#
#   tests/mattermost/run-bench.sh            # 10/s and 50/s
#   BENCH_PACING_N=300 tests/mattermost/run-bench.sh 20
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${TM_PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/teleport-mattermost/peers}"
[ -x "$CACHE/mattermost/bin/mattermost" ] || { echo "real Mattermost not built; run tests/mattermost/build.sh" >&2; exit 3; }

# shellcheck source=tests/mattermost/lib.sh
. tests/mattermost/lib.sh
bin=$(cargo_artifact pacing bench --bench pacing --no-run)

rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(10 50)
for rate in "${rates[@]}"; do
  export TM_MM_RATE_PERSEC="$rate" TM_MM_RATE_BURST="${TM_MM_RATE_BURST:-100}"
  with_real_mattermost bench "$bin"
done
