#!/usr/bin/env bash
# Makes the standalone release tarball the way Teleport's plugins ship theirs:
#   packaging/tarball.sh VERSION BINARY OUT_DIR
# writes OUT_DIR/teleport-access-mattermost-vVERSION-linux-amd64-bin.tar.gz holding
# teleport-mattermost/{teleport-mattermost, install, teleport-mattermost.service, README.md}.
set -euo pipefail
version=${1:?version}; binary=${2:?binary}; out=${3:?out dir}
here=$(cd "$(dirname "$0")" && pwd)
name="teleport-access-mattermost-v${version}-linux-amd64-bin"
stage=$(mktemp -d); trap 'rm -rf "$stage"' EXIT
dir="$stage/teleport-mattermost"
mkdir -p "$dir" "$out"
install -m 0755 "$binary" "$dir/teleport-mattermost"
install -m 0755 "$here/install" "$dir/install"
install -m 0644 "$here/teleport-mattermost.service" "$dir/teleport-mattermost.service"
install -m 0644 "$here/../README.md" "$dir/README.md"
tar -C "$stage" --owner=0 --group=0 --sort=name -czf "$out/$name.tar.gz" teleport-mattermost
echo "$out/$name.tar.gz"
