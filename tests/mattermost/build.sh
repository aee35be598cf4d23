#!/usr/bin/env bash
# Builds the real Mattermost server (Team Edition; and mmctl where the module has it) of tier 4 from a pinned Go module
# and caches them outside the repo, keyed by version, with the runtime folders the server reads
# (i18n/, templates/, fonts/, config/, a stub client/). Prints the directory holding bin/mattermost.
#
#   tests/mattermost/build.sh               # build what is missing, print the dir
#   TM_PEERS_CACHE=/somewhere tests/mattermost/build.sh
#
# Nothing here is committed but this script: the peer gets a throwaway wrapper module.
set -euo pipefail

# Default: Mattermost 6.7.2, the newest release whose Go module (github.com/mattermost/
# mattermost-server/v6, tag v6.7.2) builds here as one consistent tree. Newer releases live in
# github.com/mattermost/mattermost/server/v8, which has no tags of its own (pseudo-versions
# only) and builds against server/public of the same commit; the Go module proxy reachable
# here serves only a few exact pseudo-versions of either (no bare hashes, no listings), and no
# matching pair: v8.0.0-20260113162330-9e1d4c2072c0 fails to compile against server/public
# v0.1.20, v0.1.22-0.20260113165922-8e4cadbc88ee and v0.1.22 alike. That route stays available:
#   MM_MODULE=github.com/mattermost/mattermost/server/v8 \
#   MM_VERSION=v8.0.0-20260113162330-9e1d4c2072c0 MM_PUBLIC_VERSION=v0.1.22 tests/mattermost/build.sh
# (it adds back the one dropped type, model.SubscribeNewsletterRequest, in a copy of
# server/public beside the wrapper; it then still stops at the changed Translation.IsValid).
MM_MODULE="${MM_MODULE:-github.com/mattermost/mattermost-server/v6}"
MM_VERSION="${MM_VERSION:-v6.7.2}"
# Empty for modules that predate the server/public split (github.com/mattermost/mattermost-server/v6).
MM_PUBLIC_VERSION="${MM_PUBLIC_VERSION-}"

CACHE="${TM_PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/teleport-mattermost/peers}"
OUT="$CACHE/mattermost-$MM_VERSION"
log() { echo "[mattermost] $*" >&2; }

# Go builds are CPU-heavy on a 2-core machine; keep them polite.
export GOFLAGS="${GOFLAGS:-} -mod=mod"
export CGO_ENABLED=0
# The checksum database does not answer here for the server/v8 pseudo-versions nor for the
# squirrel fork that 6.7.2 replaces Masterminds/squirrel with; the module proxy serves them.
# Everything else is still verified against it.
export GONOSUMDB="${GONOSUMDB:+$GONOSUMDB,}github.com/mattermost/mattermost,github.com/lieut-data/squirrel"
build_nice() { nice -n 10 "$@"; }

if [ -x "$OUT/bin/mattermost" ] && [ -d "$OUT/i18n" ]; then
  ln -sfn "mattermost-$MM_VERSION" "$CACHE/mattermost"
  echo "$OUT"
  exit 0
fi

log "building mattermost $MM_VERSION (several minutes the first time)"
w="$CACHE/work/mattermost"
rm -rf "$w"; mkdir -p "$w"
printf 'module tm-peers/mattermost\n\ngo 1.24.11\n\nrequire %s %s\n' "$MM_MODULE" "$MM_VERSION" > "$w/go.mod"
[ -z "$MM_PUBLIC_VERSION" ] || printf 'require github.com/mattermost/mattermost/server/public %s\n' "$MM_PUBLIC_VERSION" >> "$w/go.mod"
src=$(cd "$w" && go mod download -json "$MM_MODULE@$MM_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[ -d "$src" ] || { log "module download failed"; exit 1; }
# go refuses a dependency's replace/exclude directives: copy them into the wrapper.
{
  echo
  grep -E '^replace ' "$src/go.mod" || true
  awk '/^exclude \(/{f=1;next} f&&/^\)/{f=0} f{print "exclude " $1 " " $2}' "$src/go.mod"
  grep -E '^exclude [^(]' "$src/go.mod" || true
} >> "$w/go.mod"
(cd "$w" && go get "$MM_MODULE@$MM_VERSION" ${MM_PUBLIC_VERSION:+"github.com/mattermost/mattermost/server/public@$MM_PUBLIC_VERSION"} >&2)

[ -z "$MM_PUBLIC_VERSION" ] || pub=$(cd "$w" && go mod download -json "github.com/mattermost/mattermost/server/public@$MM_PUBLIC_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
if [ -n "$MM_PUBLIC_VERSION" ] && ! grep -rqs 'type SubscribeNewsletterRequest ' "$pub/model"; then
  # A writable copy of server/public beside the wrapper, with the type added back.
  rm -rf "$w/public"; cp -r "$pub" "$w/public"; chmod -R u+w "$w/public"
  cat > "$w/public/model/zz_tm_compat.go" <<'GO'
package model

// SubscribeNewsletterRequest is what server/v8 of this commit still names and server/public
// v0.1.22 dropped (same JSON shape).
type SubscribeNewsletterRequest struct {
	Email             string `json:"email"`
	ServerID          string `json:"server_id"`
	SubscribedContent string `json:"subscribed_content"`
}
GO
  printf '\nreplace github.com/mattermost/mattermost/server/public => ./public\n' >> "$w/go.mod"
fi

rm -rf "$OUT.tmp"; mkdir -p "$OUT.tmp/bin"
model_pkg=github.com/mattermost/mattermost/server/public/model
[ -n "$MM_PUBLIC_VERSION" ] || model_pkg="$MM_MODULE/model"
ld="-X $model_pkg.BuildNumber=tm-$MM_VERSION"
ld="$ld -X $model_pkg.BuildDate=1970-01-01"
ld="$ld -X $model_pkg.BuildHash=${MM_VERSION##*-}"
ld="$ld -X $model_pkg.BuildEnterpriseReady=false"
# Old golang.org/x/net (in 6.x) links to syscall internals that Go >= 1.23 refuses by default.
ld="$ld -checklinkname=0"
(cd "$w" && build_nice go build -trimpath -ldflags "$ld" -o "$OUT.tmp/bin/mattermost" "$MM_MODULE/cmd/mattermost" >&2) || exit 1
if [ -d "$src/cmd/mmctl" ]; then
  (cd "$w" && build_nice go build -trimpath -o "$OUT.tmp/bin/mmctl" "$MM_MODULE/cmd/mmctl" >&2) || exit 1
fi
[ -x "$OUT.tmp/bin/mattermost" ] || { log "build produced no server binary"; exit 1; }
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
