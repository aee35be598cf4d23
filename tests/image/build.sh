#!/usr/bin/env bash
# Builds the operator's OCI image without a Docker engine, the way the Dockerfile's final stage
# makes it, and prints the archive's path on stdout (progress goes to stderr):
#
#   tests/image/build.sh                  # -> target/node-image/teleport-mattermost-<tag>.tar
#   tests/node/import-image.sh STATE "$(tests/image/build.sh)"
#
# 1. The binary comes from the Dockerfile's own build stage, replayed in an empty directory by
#    tests/dockerfile.rs (the same COPY set, the same `cargo build --release --locked`), whose
#    release build lives in target/dockerfile-replay (kept between runs, like Docker's layer
#    cache). The final stage's `COPY --from=build /out/teleport-mattermost ...` is that file.
# 2. The root filesystem is what distroless cc-debian12:nonroot gives it, taken from this host
#    by tests/node/rootfs.sh: the binary at the COPY's destination, the shared libraries `ldd`
#    lists (glibc, libgcc_s, the ELF interpreter), the CA bundle, passwd/group with the
#    nonroot user 65532, nsswitch.conf and /tmp. Nothing else: no shell, no package manager.
# 3. The configuration (ENTRYPOINT, CMD, USER, EXPOSE, LABEL) is read from the Dockerfile's
#    final stage by dockerfile-config.py and written by tests/node/mkimage.py;
#    tests/node_tier.rs checks the archive's config against testkit's Dockerfile parser.
#
# The image is named localhost/teleport-mattermost:<tag>, the tag being the binary's version and
# the first 12 hex digits of its SHA-256, so a new build never hides behind an old tag on a
# node (imagePullPolicy: Never). Environment: TM_IMAGE_OUT (output directory),
# TM_IMAGE_SKIP_REPLAY=1 (reuse the replay's last binary, e.g. right after `cargo test --test
# dockerfile`).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo="$(pwd)"
log() { echo "[image] $*" >&2; }

out_dir="${TM_IMAGE_OUT:-$repo/target/node-image}"
binary="$repo/target/dockerfile-replay/release/teleport-mattermost"

# The final stage takes exactly one file from the build stage: the binary.
copies="$(python3 tests/image/dockerfile-config.py --copies Dockerfile)"
read -r copy_src copy_dest <<<"$copies"
if [ "$(wc -l <<<"$copies")" -ne 1 ] || [ "$copy_src" != /out/teleport-mattermost ]; then
  echo "[image] error: the final stage copies '$copies'; this script knows only /out/teleport-mattermost" >&2
  exit 1
fi

if [ "${TM_IMAGE_SKIP_REPLAY:-0}" != 1 ]; then
  log "replaying the Dockerfile's build stage (cargo build --release --locked in an empty directory)"
  t0=$SECONDS
  # The test builds the binary into target/dockerfile-replay and checks that it runs.
  cargo test --quiet --test dockerfile the_build_stage_replayed_in_an_empty_directory_produces_the_binary \
    -- --exact >&2
  log "build stage replayed in $((SECONDS - t0)) s"
fi
[ -x "$binary" ] || { echo "[image] error: $binary missing; run without TM_IMAGE_SKIP_REPLAY" >&2; exit 1; }

version="$("$binary" version | awk '{print $2}')"   # "teleport-mattermost v0.1.0 git:..."
tag="${version#v}-$(sha256sum "$binary" | cut -c1-12)"
name="localhost/teleport-mattermost:$tag"
tar="$out_dir/teleport-mattermost-$tag.tar"
mkdir -p "$out_dir"

if [ ! -f "$tar" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  tests/node/rootfs.sh "$work/rootfs" "$binary:$copy_dest"
  mapfile -t config < <(python3 tests/image/dockerfile-config.py Dockerfile)
  python3 tests/node/mkimage.py --rootfs "$work/rootfs" --name "$name" --out "$tar" "${config[@]}" >&2
  log "built $name: $(du -h "$tar" | cut -f1) ($(find "$work/rootfs" -type f | wc -l) files)"
else
  log "$name already built"
fi
# Only the latest build is kept (each is ~12 MB); plus a fixed-path link to it.
find "$out_dir" -maxdepth 1 -name 'teleport-mattermost-*.tar' ! -name "$(basename "$tar")" -delete
ln -sfn "$(basename "$tar")" "$out_dir/latest.tar"
echo "$tar"
