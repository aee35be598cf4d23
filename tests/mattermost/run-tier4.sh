#!/usr/bin/env bash
# Tier 4 against a real Mattermost: builds the test binary (cargo needs the network, so outside
# the namespace), then runs it inside a private network namespace that has only loopback,
# beside a fresh PostgreSQL and Mattermost started and provisioned by run.sh, and tears them
# down. Anything in there that tries to reach beyond this machine fails locally.
#
#   tests/mattermost/run-tier4.sh [TEST-FILTER...]   # extra args go to the test binary
#   TM_BUILD_PEERS=1 tests/mattermost/run-tier4.sh   # build Mattermost first if missing
#
# Without the Mattermost binary it prints one line and exits 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE="${TM_PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/teleport-mattermost/peers}"

if [ ! -x "$CACHE/mattermost/bin/mattermost" ]; then
  if [ "${TM_BUILD_PEERS:-0}" = 1 ]; then
    tests/mattermost/build.sh >/dev/null
  else
    echo "skipped: real Mattermost not built; run tests/mattermost/build.sh"
    exit 0
  fi
fi

bin=$(cargo test --test real_mattermost --no-run --message-format=json \
  | jq -r 'select(.reason == "compiler-artifact" and .target.name == "real_mattermost" and .executable != null) | .executable' \
  | tail -n 1)
[ -x "$bin" ] || { echo "could not find the real_mattermost test binary" >&2; exit 1; }

threads="${TM_TIER4_THREADS:-4}"
if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null; then
  echo "[tier4] running in a private network namespace (loopback only)" >&2
  exec unshare --net -- bash -c 'ip link set lo up && exec "$@"' tier4 \
    tests/mattermost/run.sh "$bin" --test-threads "$threads" "$@"
else
  echo "[tier4] not root: running WITHOUT a private network namespace (servers still bind 127.0.0.1 only)" >&2
  exec tests/mattermost/run.sh "$bin" --test-threads "$threads" "$@"
fi
