#!/usr/bin/env bash
# Tier 4 against a real Mattermost: builds the test binary (cargo needs the network, so outside
# the namespace), then runs it inside a private network namespace that has only loopback,
# beside a fresh PostgreSQL and Mattermost started and provisioned by run.sh, and tears them
# down. Anything in there that tries to reach beyond this machine fails locally.
#
#   tests/mattermost/run-tier4.sh [TEST-FILTER...]   # extra args go to the test binary
#   TM_MM_LINE=current tests/mattermost/run-tier4.sh # against the current server (build.sh current)
#   TM_BUILD_PEERS=1 tests/mattermost/run-tier4.sh   # build Mattermost first if missing
#
# Without the Mattermost binary it prints one line and exits 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/mattermost/lib.sh
. tests/mattermost/lib.sh
line="${TM_MM_LINE:-default}"
home=$(mm_home)

if [ ! -x "$home/bin/mattermost" ]; then
  if [ "${TM_BUILD_PEERS:-0}" = 1 ]; then
    tests/mattermost/build.sh "$line" >/dev/null
  else
    echo "skipped: real Mattermost ($line line) not built; run tests/mattermost/build.sh $line"
    exit 0
  fi
fi

bin=$(cargo_artifact real_mattermost test --test real_mattermost --no-run)

threads="${TM_TIER4_THREADS:-4}"
with_real_mattermost tier4 "$bin" --test-threads "$threads" "$@"
with_real_mattermost tier4-markdown "$(cargo_artifact real_mattermost_markdown test --test real_mattermost_markdown --no-run)" "$@"
