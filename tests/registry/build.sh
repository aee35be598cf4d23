#!/usr/bin/env bash
# Builds cosign (the release's signing tool) from its pinned Go module and caches the binary
# outside the repo, keyed by version, like tests/control-plane/build.sh does for the cluster's
# peers. Prints the bin directory.
#
#   tests/registry/build.sh
#   TM_PEERS_CACHE=/somewhere tests/registry/build.sh
#
# Nothing here is committed but this script: cosign gets a throwaway wrapper module.
set -euo pipefail

# v2: the release workflow installs cosign v2 (sigstore/cosign-installer pins a v2 release), and
# its `--tlog-upload=false` / `--insecure-ignore-tlog` flags are what the offline test uses.
COSIGN_VERSION="${COSIGN_VERSION:-2.6.5}"

CACHE="${TM_PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/teleport-mattermost/peers}"
BIN="$CACHE/bin"
mkdir -p "$BIN"
log() { echo "[registry] $*" >&2; }

export GOFLAGS="${GOFLAGS:-} -mod=mod"
export CGO_ENABLED=0

out="$BIN/cosign-v$COSIGN_VERSION"
if [ ! -x "$out" ]; then
  log "building cosign v$COSIGN_VERSION (a few minutes the first time)"
  w="$CACHE/work/cosign"
  rm -rf "$w"; mkdir -p "$w"
  printf 'module tm-peers/cosign\n\ngo 1.25\n' > "$w/go.mod"
  # cosign's `version` reads these stamps (its own Makefile sets them the same way).
  ld="-X sigs.k8s.io/release-utils/version.gitVersion=v$COSIGN_VERSION -X sigs.k8s.io/release-utils/version.gitTreeState=clean"
  # Go builds are CPU-heavy on a 2-core machine; keep them polite.
  (cd "$w" && go get "github.com/sigstore/cosign/v2@v$COSIGN_VERSION" >&2 \
    && nice -n 10 go build -trimpath -ldflags "$ld" -o "$out.tmp" github.com/sigstore/cosign/v2/cmd/cosign >&2)
  mv "$out.tmp" "$out"
fi
ln -sf "cosign-v$COSIGN_VERSION" "$BIN/cosign"
echo "$BIN"
