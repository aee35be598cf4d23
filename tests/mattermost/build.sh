#!/usr/bin/env bash
# Builds the real Mattermost server (Team Edition) and mmctl of tier 4 from a pinned Go module
# and caches them outside the repo, keyed by version, with the runtime folders the server reads
# (i18n/, templates/, fonts/, config/, a stub client/). Prints the directory holding bin/mattermost.
#
#   tests/mattermost/build.sh               # build what is missing, print the dir
#   TM_PEERS_CACHE=/somewhere tests/mattermost/build.sh
#
# Nothing here is committed but this script: the peer gets a throwaway wrapper module.
set -euo pipefail

# github.com/mattermost/mattermost/server/v8 carries no tags of its own (the repo's vX.Y.Z tags do
# not match the module path), so it is pinned by pseudo-version: a master commit of 2026-01-13,
# three days before the 11.3.0 release. In the monorepo server/v8 builds against server/public
# of the same tree, while its go.mod names the older tag v0.1.20, which no longer compiles with
# it: so server/public is pinned too, to the pseudo-version of a commit 36 minutes later (the
# pair Mattermost's own Playbooks plugin builds with). The Go module proxy reachable here
# serves these exact pseudo-versions; it refuses bare commit hashes and version listings.
MM_MODULE=github.com/mattermost/mattermost/server/v8
MM_VERSION="${MM_VERSION:-v8.0.0-20260113162330-9e1d4c2072c0}"
MM_PUBLIC_VERSION="${MM_PUBLIC_VERSION:-v0.1.22}"

CACHE="${TM_PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/teleport-mattermost/peers}"
OUT="$CACHE/mattermost-$MM_VERSION"
log() { echo "[mattermost] $*" >&2; }

# Go builds are CPU-heavy on a 2-core machine; keep them polite.
export GOFLAGS="${GOFLAGS:-} -mod=mod"
export CGO_ENABLED=0
# The checksum database does not answer for this pseudo-version here; the module proxy does.
# Everything else is still verified against it.
export GONOSUMDB="${GONOSUMDB:+$GONOSUMDB,}github.com/mattermost/mattermost"
build_nice() { nice -n 10 "$@"; }

if [ -x "$OUT/bin/mattermost" ] && [ -x "$OUT/bin/mmctl" ] && [ -d "$OUT/i18n" ]; then
  ln -sfn "mattermost-$MM_VERSION" "$CACHE/mattermost"
  echo "$OUT"
  exit 0
fi

log "building mattermost $MM_VERSION (several minutes the first time)"
w="$CACHE/work/mattermost"
rm -rf "$w"; mkdir -p "$w"
printf 'module tm-peers/mattermost\n\ngo 1.24.11\n\nrequire (\n\t%s %s\n\tgithub.com/mattermost/mattermost/server/public %s\n)\n' \
  "$MM_MODULE" "$MM_VERSION" "$MM_PUBLIC_VERSION" > "$w/go.mod"
src=$(cd "$w" && go mod download -json "$MM_MODULE@$MM_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[ -d "$src" ] || { log "module download failed"; exit 1; }
# go refuses a dependency's replace/exclude directives: copy them into the wrapper.
{
  echo
  grep -E '^replace ' "$src/go.mod" || true
  awk '/^exclude \(/{f=1;next} f&&/^\)/{f=0} f{print "exclude " $1 " " $2}' "$src/go.mod"
  grep -E '^exclude [^(]' "$src/go.mod" || true
} >> "$w/go.mod"
(cd "$w" && go get "$MM_MODULE@$MM_VERSION" "github.com/mattermost/mattermost/server/public@$MM_PUBLIC_VERSION" >&2)

rm -rf "$OUT.tmp"; mkdir -p "$OUT.tmp/bin"
ld="-X github.com/mattermost/mattermost/server/public/model.BuildNumber=tm-$MM_VERSION"
ld="$ld -X github.com/mattermost/mattermost/server/public/model.BuildDate=1970-01-01"
ld="$ld -X github.com/mattermost/mattermost/server/public/model.BuildHash=${MM_VERSION##*-}"
ld="$ld -X github.com/mattermost/mattermost/server/public/model.BuildEnterpriseReady=false"
(cd "$w" && build_nice go build -trimpath -ldflags "$ld" -o "$OUT.tmp/bin/mattermost" "$MM_MODULE/cmd/mattermost" >&2)
(cd "$w" && build_nice go build -trimpath -o "$OUT.tmp/bin/mmctl" "$MM_MODULE/cmd/mmctl" >&2)
for d in i18n templates fonts config; do
  cp -r "$src/$d" "$OUT.tmp/$d"
done
chmod -R u+w "$OUT.tmp"
# The web app is not built: a stub root.html keeps the server's static handler quiet.
mkdir -p "$OUT.tmp/client"
echo '<!doctype html><title>Mattermost (no web app in this build)</title>' > "$OUT.tmp/client/root.html"
rm -rf "$OUT"; mv "$OUT.tmp" "$OUT"
ln -sfn "mattermost-$MM_VERSION" "$CACHE/mattermost"
log "built into $OUT"
echo "$OUT"
