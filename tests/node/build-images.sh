#!/usr/bin/env bash
# Builds the node tier's own images as OCI archives, without Docker, and prints their paths:
#
#   tm-pause    localhost/tm-pause:1    pause.c, static (gcc -static): the pod sandbox image
#   tm-testapp  localhost/tm-testapp:1  testapp/ (Go, CGO_ENABLED=0): the smoke test's workload
#   tm-testapp-dyn localhost/tm-testapp-dyn:1  the same program linked against glibc, its
#               rootfs assembled by rootfs.sh from `ldd` (the recipe of the operator image)
#
#   tests/node/build-images.sh [pause|testapp|testapp-dyn]...   # default: pause
#
# Archives are cached in $CACHE/node-images, keyed by a hash of their sources, so a repeated
# run costs nothing. Import one with `ctr -n k8s.io images import FILE` (up.sh does that for
# the pause image; import-image.sh for the others).
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "$0")/lib.sh"

mkdir -p "$IMAGE_CACHE"

# A short content hash of the given files plus this script and the image builder.
src_hash() { cat "$@" "$HERE/build-images.sh" "$HERE/mkimage.py" "$HERE/rootfs.sh" | sha256sum | cut -c1-16; }

build_pause() {
  local out
  out="$IMAGE_CACHE/tm-pause-$(src_hash "$HERE/pause.c").tar"
  if [ ! -f "$out" ]; then
    log "building the pause image"
    local w; w="$(mktemp -d)"
    mkdir -p "$w/rootfs"
    gcc -static -Os -s -Wall -Wextra -Werror -o "$w/rootfs/pause" "$HERE/pause.c"
    # 65535 as the upstream pause image; the kubelet runs the sandbox as the pod's
    # runAsUser when one is set.
    python3 "$HERE/mkimage.py" --rootfs "$w/rootfs" --name "$PAUSE_IMAGE" --out "$out" \
      --entrypoint '["/pause"]' --user 65535:65535 >&2
    rm -rf "$w"
  fi
  echo "$out"
}

build_testapp_bin() { # out-file cgo(0|1)
  (cd "$HERE/testapp" && GOFLAGS=-mod=mod CGO_ENABLED="$2" go build -trimpath -ldflags '-s -w' -o "$1" .)
}

build_testapp() {
  local out
  out="$IMAGE_CACHE/tm-testapp-$(src_hash "$HERE"/testapp/*).tar"
  if [ ! -f "$out" ]; then
    log "building the static test app image"
    local w; w="$(mktemp -d)"
    mkdir -p "$w/rootfs"
    build_testapp_bin "$w/rootfs/testapp" 0
    python3 "$HERE/mkimage.py" --rootfs "$w/rootfs" --name localhost/tm-testapp:1 --out "$out" \
      --entrypoint '["/testapp"]' --user 65532:65532 --expose 8080/tcp >&2
    rm -rf "$w"
  fi
  echo "$out"
}

# The same app dynamically linked (cgo's resolver pulls in libc), packed by rootfs.sh the way
# the operator will be: the binary, its `ldd` closure, CA certificates, a passwd entry for
# 65532, ENTRYPOINT + CMD.
build_testapp-dyn() {
  local out
  out="$IMAGE_CACHE/tm-testapp-dyn-$(src_hash "$HERE"/testapp/*).tar"
  if [ ! -f "$out" ]; then
    log "building the dynamically linked test app image"
    local w; w="$(mktemp -d)"
    build_testapp_bin "$w/testapp" 1
    "$HERE/rootfs.sh" "$w/rootfs" "$w/testapp:/testapp"
    python3 "$HERE/mkimage.py" --rootfs "$w/rootfs" --name localhost/tm-testapp-dyn:1 --out "$out" \
      --entrypoint '["/testapp"]' --cmd '["serve"]' --user 65532:65532 --expose 8080/tcp >&2
    rm -rf "$w"
  fi
  echo "$out"
}

for image in "${@:-pause}"; do
  "build_$image"
done
