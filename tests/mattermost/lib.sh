# shellcheck shell=bash
# Sourced by the scripts that run a test binary beside the real Mattermost (tiers 4 and 5,
# the pacing bench).

# cargo_artifact NAME CARGO-ARGS... : builds with `cargo CARGO-ARGS --message-format=json` and
# prints the path of the executable of target NAME, e.g.
#   bin=$(cargo_artifact real_mattermost test --test real_mattermost --no-run)
cargo_artifact() {
  local name="$1" exe; shift
  exe=$(cargo "$@" --message-format=json \
    | jq -r --arg name "$name" 'select(.reason == "compiler-artifact" and .target.name == $name and .executable != null) | .executable' \
    | tail -n 1)
  [ -x "$exe" ] || { echo "could not find the $name executable" >&2; return 1; }
  printf '%s\n' "$exe"
}

# with_real_mattermost LABEL CMD... : runs CMD beside a fresh PostgreSQL and Mattermost
# (tests/mattermost/run.sh), inside a private network namespace that has only loopback when
# this is root, so that nothing in there can reach beyond this machine.
with_real_mattermost() {
  local label="$1"; shift
  if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null; then
    echo "[$label] running in a private network namespace (loopback only)" >&2
    unshare --net -- bash -c 'ip link set lo up && exec "$@"' "$label" tests/mattermost/run.sh "$@"
  else
    echo "[$label] not root: running WITHOUT a private network namespace (servers still bind 127.0.0.1 only)" >&2
    tests/mattermost/run.sh "$@"
  fi
}
