#!/usr/bin/env bash
# Builds the real Teleport peers of tier 5 from the pinned Teleport Go module and caches them
# outside the repo, keyed by version:
#   teleport, tctl, tbot           Teleport's own tools (tool/teleport, tool/tctl, tool/tbot)
#   tm-teleport                    our launcher: `teleport` whose Proxy runs without a web UI
#                                  (a module build has no web assets; see cmd/tm-teleport)
#   tm-teleport-mattermost-plugin  Teleport's own Go Mattermost plugin, through our small main
#                                  (v13 ships it as a library only; see cmd/tm-teleport-mattermost-plugin)
# Prints the bin directory; `$CACHE/teleport` is a stable symlink to the versioned directory.
#
#   tests/teleport/build.sh                 # build what is missing, print the bin dir
#   TM_PEERS_CACHE=/somewhere tests/teleport/build.sh
#
# Nothing here is committed but this script and cmd/: the peers get a throwaway wrapper module.
# One `go build` for all five (they share almost every package): on 2 cores, with an empty Go
# build cache, about 10 minutes (577 s) plus about 1.5 minutes of module downloads; peak RSS
# about 3 GB (the link of teleport). Only a changed cmd/ source rebuilds our mains (~35 s).
set -euo pipefail

TELEPORT_VERSION="${TELEPORT_VERSION:-13.3.8}"
# The Go module proxy reachable here serves v13.3.8 (commit c95e235e8855) only as this
# pseudo-version, for the root module and for api/ alike; newer pins are refused (403).
# Tried 2026-12-06: `go list -m github.com/gravitational/teleport@latest` resolves to
# v1.3.3-0.20240109093301-f31c91231698 (version.go: 15.0.0-dev, master of 2024-01-09), and that
# root module is served. It cannot be built: its go.mod replaces teleport/api with ./api, which
# a module zip never holds, and teleport/api at that commit (v0.0.0-20240109093301-f31c91231698)
# is refused (403), as are api v14.3.0 to v19.0.0, @master and the root's @master; api@latest
# is a 2022 pseudo-version, far older than the root.
TELEPORT_MODULE_VERSION="${TELEPORT_MODULE_VERSION:-v0.0.0-20230905183941-c95e235e8855}"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${TM_PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/teleport-mattermost/peers}"
OUT="$CACHE/teleport-v$TELEPORT_VERSION"
BIN="$OUT/bin"
mkdir -p "$BIN"
log() { echo "[teleport] $*" >&2; }

# Go builds are CPU-heavy on a 2-core machine; keep them polite.
export GOFLAGS="${GOFLAGS:-} -mod=mod"
export GOTOOLCHAIN=local
# sqlite (the test clusters' storage) is cgo.
export CGO_ENABLED=1
# The checksum database does not answer for Teleport's pseudo-versions, its forks
# (github.com/gravitational/*) nor the pgx/v5 pseudo-version it pins; the module proxy serves
# them. Everything else is still verified against it.
export GONOSUMDB="${GONOSUMDB:+$GONOSUMDB,}github.com/gravitational,github.com/jackc/pgx/v5"
build_nice() { nice -n 10 "$@"; }

TP=github.com/gravitational/teleport
declare -A PKG=(
  [teleport]="$TP/tool/teleport"
  [tctl]="$TP/tool/tctl"
  [tbot]="$TP/tool/tbot"
  [tm-teleport]="./cmd/tm-teleport"
  [tm-teleport-mattermost-plugin]="./cmd/tm-teleport-mattermost-plugin"
)

# Our own mains are rebuilt when their sources change (cheap: the build cache has the rest).
ours_sum=$(cd "$HERE/cmd" && find . -name '*.go' -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)
missing=()
for b in teleport tctl tbot tm-teleport tm-teleport-mattermost-plugin; do
  if [ ! -x "$BIN/$b" ]; then
    missing+=("$b")
  elif [[ $b == tm-* ]] && [ "$(cat "$BIN/.$b.src" 2>/dev/null)" != "$ours_sum" ]; then
    missing+=("$b")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  log "building ${missing[*]} from Teleport v$TELEPORT_VERSION (about 10 minutes with a cold Go build cache)"
  w="$CACHE/work/teleport"
  rm -rf "$w"; mkdir -p "$w"
  cat > "$w/go.mod" <<EOF
module tm-peers/teleport

go 1.21

require (
	$TP $TELEPORT_MODULE_VERSION
	$TP/api $TELEPORT_MODULE_VERSION
)
EOF
  src=$(cd "$w" && go mod download -json "$TP@$TELEPORT_MODULE_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$src" ] || { log "module download failed"; exit 1; }
  # go ignores a dependency's replace directives: copy upstream's block, with its ./api (the
  # api/ module of the same commit) pointed at the published module.
  {
    echo
    awk '/^replace \(/{f=1} f{print} f&&/^\)/{f=0}' "$src/go.mod" \
      | sed "s#^\(\s*$TP/api\) => \./api\s*\$#\1 => $TP/api $TELEPORT_MODULE_VERSION#"
  } >> "$w/go.mod"
  grep -q "$TP/api => $TP/api $TELEPORT_MODULE_VERSION" "$w/go.mod" || { log "replace of ./api not rewritten"; exit 1; }
  cp -r "$HERE/cmd" "$w/cmd"

  pkgs=()
  for b in "${missing[@]}"; do pkgs+=("${PKG[$b]}"); done
  # -checklinkname=0: v13's dependencies (e.g. an old quic-go/x/net) link to runtime internals
  # (runtime.aeskeysched) that Go >= 1.23 refuses by default.
  # kustomize_disable_go_plugin_support: as upstream's release builds (no Go plugin loading).
  ld="-s -w -checklinkname=0 -X $TP.Gitref=v$TELEPORT_VERSION"
  rm -rf "$BIN.tmp"; mkdir -p "$BIN.tmp"
  start=$(date +%s)
  (cd "$w" && build_nice go build -trimpath -tags kustomize_disable_go_plugin_support \
    -ldflags "$ld" -o "$BIN.tmp/" "${pkgs[@]}" >&2)
  log "go build took $(( $(date +%s) - start )) s"
  for b in "${missing[@]}"; do
    [ -x "$BIN.tmp/$b" ] || { log "build produced no $b"; exit 1; }
    mv -f "$BIN.tmp/$b" "$BIN/$b"
    [[ $b != tm-* ]] || echo "$ours_sum" > "$BIN/.$b.src"
  done
  rmdir "$BIN.tmp"
  log "built into $BIN"
fi

ln -sfn "teleport-v$TELEPORT_VERSION" "$CACHE/teleport"
echo "$BIN"
