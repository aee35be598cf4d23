# shellcheck shell=bash
# Sourced by the scripts that build the real Mattermost or run a test binary beside it
# (tiers 4 and 5, the pacing bench).

# mm_peers_cache : where the peers are cached (TM_PEERS_CACHE, else under XDG_CACHE_HOME).
mm_peers_cache() {
  printf '%s\n' "${TM_PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/teleport-mattermost/peers}"
}

# mm_link LINE : the cache symlink of a Mattermost line: "default" is 6.7.2 in
# peers/mattermost, "current" the newest server that builds here, in peers/mattermost-current
# (tests/mattermost/build.sh says which). The scripts take the line from TM_MM_LINE.
mm_link() {
  local line="${1:-default}"
  case "$line" in
    default) echo mattermost ;;
    current) echo mattermost-current ;;
    *) echo "unknown Mattermost line '$line' (TM_MM_LINE): use default or current" >&2; return 1 ;;
  esac
}

# mm_home : the directory of the selected line's server (TM_MATTERMOST_HOME overrides).
mm_home() {
  local link
  link=$(mm_link "${TM_MM_LINE:-default}") || return 1
  printf '%s\n' "${TM_MATTERMOST_HOME:-$(mm_peers_cache)/$link}"
}

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
