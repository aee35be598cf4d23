#!/usr/bin/env bash
# Builds the real Mattermost server (Team Edition) of tier 4 from a pinned Go module and caches
# it outside the repo, keyed by version, with the runtime folders the server reads (i18n/,
# templates/, fonts/, config/, a stub client/). Prints the directory holding bin/mattermost.
#
# Two lines, each with a stable symlink in the cache that the tier scripts use:
#   tests/mattermost/build.sh                    # "default": 6.7.2          -> peers/mattermost
#   tests/mattermost/build.sh current            # "current": 11.4.0         -> peers/mattermost-current
#   TM_MM_LINE=current tests/mattermost/build.sh # the same
#   TM_PEERS_CACHE=/somewhere tests/mattermost/build.sh
#
# Nothing here is committed but this script: the peer gets a throwaway wrapper module.
#
# default: Mattermost 6.7.2, the newest release whose Go module (github.com/mattermost/
# mattermost-server/v6, tag v6.7.2) builds here as one consistent tree.
#
# current: Mattermost 11.4.0 (what its model.CurrentVersion says), the commit of the tag
# server/public/v0.1.22 (3321db82c3e7, 2026-01-30): github.com/mattermost/mattermost/server/v8
# v8.0.0-20260130160320-3321db82c3e7 with server/public v0.1.22, the same commit of the same
# tree. Newer releases live in server/v8, which has no tags of its own (pseudo-versions only)
# and builds against server/public of the same commit. The Go module proxy reachable here
# serves only some exact versions of either (no listings, no bare hashes), and no newer
# server/v8 was found. Two dependency pins differ from that commit's go.mod, because the proxy
# does not serve what it names (the server's own code is unchanged):
#   - its `replace github.com/vmihailenco/msgpack/v5 => github.com/mattermost/msgpack/v5
#     v5.0.0-20260120151306-2f9c67d7e57f` is not copied: the fork is not served (403), so the
#     upstream v5.4.1 that server/v8 requires is used; same API, without the fork's caps on
#     decoding allocations (hardening against hostile msgpack input, not a behaviour the
#     tests see);
#   - github.com/richardlehane/msoleps v1.0.5 (indirect, via docconv) is not served (the
#     proxy lists v1.0.1 v1.0.3 v1.0.4 v1.0.6): the wrapper requires v1.0.6.
# What was tried (2026-12, Go 1.26.8), server/v8 pseudo-version + server/public -> result:
#   v8.0.0-20260130160320-3321db82c3e7 + v0.1.22 (same commit)   -> builds with the two pins
#       above (first errors without them: "github.com/mattermost/msgpack/v5@v5.0.0-20260120151306-
#       2f9c67d7e57f: reading .../v5.0.0-20260120151306-2f9c67d7e57f.zip: 403 Forbidden" and
#       "github.com/richardlehane/msoleps@v1.0.5: reading .../v1.0.5.zip: 403 Forbidden")
#   v8.0.0-20260113162330-9e1d4c2072c0 + v0.1.22-0.20260113165922-8e4cadbc88ee -> compiles
#       and links unchanged (public 36 min after the server commit; also 11.4.0; an earlier
#       record here had it failing); not the pick: not the same commit, and 17 days older
#   v8.0.0-20260113162330-9e1d4c2072c0 + v0.1.20 / v0.1.22 -> does not compile (earlier record:
#       v0.1.22 dropped model.SubscribeNewsletterRequest, then the changed Translation.IsValid)
#   v8.0.0-20260623200446-ba033eae4704, -20260505170436-2b753c49f229, -20251229192601-
#       96f159c25115, -20240522125221-f0110e361ece (pinned by published go.mod files), and
#       the commits of the server/public tags v0.3.0, v0.4.3, v0.4.4 (-20260401152012-
#       9b01e406f4a6, -20260626143749-f31c2869bad3, -20260821135919-83113218589e) and of
#       v0.1.22-0.20260113165922-8e4cadbc88ee -> not served (403 on .info)
#   v8.0.0-20240520151130-4bdd8bb18e47 -> served (May 2024), older than the pick, not built
#   served server/public tags: v0.1.20 v0.1.21 v0.1.22 v0.3.0 v0.4.0 v0.4.3 v0.4.4 (v0.1.21 and
#       v0.4.0 name no commit, so their server/v8 could not be asked for)
# Another pair: TM_MM_LINE=current MM_VERSION=... MM_PUBLIC_VERSION=... (the two pins above
# still apply to the current line; MM_MODULE too can be set).
set -euo pipefail
# shellcheck source=tests/mattermost/lib.sh
. "$(dirname "$0")/lib.sh"

LINE="${1:-${TM_MM_LINE:-default}}"
LINK=$(mm_link "$LINE")
# Replace directives of the server's go.mod not copied into the wrapper (module paths), and
# module@version pins the wrapper adds on top: both for modules the proxy does not serve.
DROP_REPLACES=""
EXTRA_PINS=""
case "$LINK" in
  mattermost)
    MM_MODULE="${MM_MODULE:-github.com/mattermost/mattermost-server/v6}"
    MM_VERSION="${MM_VERSION:-v6.7.2}"
    # Empty for modules that predate the server/public split.
    MM_PUBLIC_VERSION="${MM_PUBLIC_VERSION-}"
    ;;
  mattermost-current)
    MM_MODULE="${MM_MODULE:-github.com/mattermost/mattermost/server/v8}"
    MM_VERSION="${MM_VERSION:-v8.0.0-20260130160320-3321db82c3e7}"
    MM_PUBLIC_VERSION="${MM_PUBLIC_VERSION-v0.1.22}"
    DROP_REPLACES="github.com/vmihailenco/msgpack/v5"
    EXTRA_PINS="github.com/richardlehane/msoleps@v1.0.6"
    ;;
esac

CACHE="$(mm_peers_cache)"
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
  ln -sfn "mattermost-$MM_VERSION" "$CACHE/$LINK"
  echo "$OUT"
  exit 0
fi

log "building mattermost $MM_VERSION, line $LINE (several minutes the first time)"
# One work dir per version, so that the two lines can build side by side.
w="$CACHE/work/mattermost-$MM_VERSION"
rm -rf "$w"; mkdir -p "$w"
printf 'module tm-peers/mattermost\n\ngo 1.24.11\n\nrequire %s %s\n' "$MM_MODULE" "$MM_VERSION" > "$w/go.mod"
[ -z "$MM_PUBLIC_VERSION" ] || printf 'require github.com/mattermost/mattermost/server/public %s\n' "$MM_PUBLIC_VERSION" >> "$w/go.mod"
src=$(cd "$w" && go mod download -json "$MM_MODULE@$MM_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[ -d "$src" ] || { log "module download failed"; exit 1; }
# go refuses a dependency's replace/exclude directives: copy them into the wrapper.
{
  echo
  grep -E '^replace ' "$src/go.mod" | while read -r _ path _; do
    for d in $DROP_REPLACES; do
      if [ "$path" = "$d" ]; then log "not copying the replace of $path (its target is not served)"; continue 2; fi
    done
    grep -E "^replace $path " "$src/go.mod"
  done
  awk '/^exclude \(/{f=1;next} f&&/^\)/{f=0} f{print "exclude " $1 " " $2}' "$src/go.mod"
  grep -E '^exclude [^(]' "$src/go.mod" || true
} >> "$w/go.mod"
# shellcheck disable=SC2086 # EXTRA_PINS is a list of module@version words
(cd "$w" && go get "$MM_MODULE@$MM_VERSION" ${MM_PUBLIC_VERSION:+"github.com/mattermost/mattermost/server/public@$MM_PUBLIC_VERSION"} $EXTRA_PINS >&2)

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
[ -x "$OUT.tmp/bin/mattermost" ] || { log "build produced no server binary"; exit 1; }
for d in i18n templates fonts config; do
  cp -r "$src/$d" "$OUT.tmp/$d"
done
chmod -R u+w "$OUT.tmp"
# The web app is not built: a stub root.html keeps the server's static handler quiet (newer
# servers rewrite its Content-Security-Policy meta tag at startup, and log an error without one).
mkdir -p "$OUT.tmp/client"
cat > "$OUT.tmp/client/root.html" <<'HTML'
<!doctype html><meta http-equiv="Content-Security-Policy" content="script-src 'self'"><title>Mattermost (no web app in this build)</title>
HTML
rm -rf "$OUT"; mv "$OUT.tmp" "$OUT"
ln -sfn "mattermost-$MM_VERSION" "$CACHE/$LINK"
log "built into $OUT"
echo "$OUT"
