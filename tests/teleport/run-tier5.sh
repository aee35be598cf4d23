#!/usr/bin/env bash
# Tier 5 against a real Teleport (auth, proxy, tctl, tbot, and Teleport's own Go Mattermost
# plugin, from tests/teleport/build.sh) and the real Mattermost of tier 4: builds the test
# binary (cargo needs the network, so outside the namespace), then runs it inside a private
# network namespace with only loopback, beside a fresh PostgreSQL and Mattermost started and
# provisioned by tests/mattermost/run.sh. Each test starts its own Teleport cluster on
# 127.0.0.1 and stops it.
#
#   tests/teleport/run-tier5.sh [TEST-FILTER...]   # extra args go to the test binary
#   TM_BUILD_PEERS=1 tests/teleport/run-tier5.sh   # build Teleport and Mattermost first if missing
#
# Without the peers it prints one line and exits 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${TM_PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/teleport-mattermost/peers}"

if [ "${TM_BUILD_PEERS:-0}" = 1 ]; then
  tests/teleport/build.sh >/dev/null
  tests/mattermost/build.sh >/dev/null
  tests/control-plane/build.sh >/dev/null
fi
for peer in teleport/bin/tm-teleport teleport/bin/tctl teleport/bin/tbot mattermost/bin/mattermost; do
  if [ ! -x "$CACHE/$peer" ]; then
    echo "skipped: tier 5 needs $CACHE/$peer; run tests/teleport/build.sh and tests/mattermost/build.sh (or TM_BUILD_PEERS=1 $0)"
    exit 0
  fi
done

# shellcheck source=tests/mattermost/lib.sh
. tests/mattermost/lib.sh
bin=$(cargo_artifact real_teleport test --test real_teleport --no-run)
# The standalone binary the walkthrough runs, built by the same cargo invocation.
export TM_PLUGIN_BINARY="$PWD/target/debug/teleport-mattermost"

# The standalone plugin serves its callback over HTTPS with a self-signed certificate, as the
# seed's walkthrough has it; this Mattermost is told not to verify it.
export TM_MM_INSECURE_OUTGOING=1
threads="${TM_TIER5_THREADS:-4}"
with_real_mattermost tier5 "$bin" --test-threads "$threads" "$@"
