#!/usr/bin/env bash
# The pacing benchmark against the real Mattermost: for each server rate limit (10/s and
# 50/s, burst 100, or the rates given), starts a fresh server inside a private network
# namespace with only loopback and runs benches/pacing.rs (release build) against it.
#
#   tests/mattermost/run-bench.sh            # 10/s and 50/s
#   BENCH_PACING_N=300 tests/mattermost/run-bench.sh 20
#   TM_MM_LINE=current tests/mattermost/run-bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/mattermost/lib.sh
. tests/mattermost/lib.sh
# TM_MM_LINE=current runs it against the current server.
[ -x "$(mm_home)/bin/mattermost" ] || { echo "real Mattermost not built; run tests/mattermost/build.sh ${TM_MM_LINE:-}" >&2; exit 3; }
bin=$(cargo_artifact pacing bench --bench pacing --no-run)

rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(10 50)
for rate in "${rates[@]}"; do
  export TM_MM_RATE_PERSEC="$rate" TM_MM_RATE_BURST="${TM_MM_RATE_BURST:-100}"
  with_real_mattermost bench "$bin"
done
