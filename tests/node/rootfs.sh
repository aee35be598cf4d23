#!/usr/bin/env bash
# Assembles a minimal root filesystem for a container image from host binaries: each binary,
# the shared libraries `ldd` says it loads (and the ELF interpreter), CA certificates, and
# /etc/passwd + /etc/group with root and the distroless "nonroot" user (65532), so
# `USER 65532` has a name. Feed the result to mkimage.py.
#
#   tests/node/rootfs.sh DIR BINARY[:DEST]...
#
# e.g. the operator image:
#   tests/node/rootfs.sh /tmp/rootfs target/release/teleport-mattermost:/teleport-mattermost
#   tests/node/mkimage.py --rootfs /tmp/rootfs --name localhost/teleport-mattermost:dev \
#     --out op.tar --entrypoint '["/teleport-mattermost"]' --cmd '["operator"]' --user 65532:65532
#
# Libraries keep their absolute paths (/lib/x86_64-linux-gnu/libc.so.6, ...), copied with
# symlinks resolved. glibc >= 2.34 carries the files and dns NSS modules inside libc.so.6,
# so nothing is dlopen'ed behind ldd's back for name lookups. Static binaries get no
# libraries. DIR must not exist or be empty.
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: $0 DIR BINARY[:DEST]..." >&2; exit 2; }
root="$1"; shift
if [ -e "$root" ] && [ -n "$(ls -A "$root")" ]; then
  echo "rootfs: $root is not empty" >&2; exit 1
fi
mkdir -p "$root"

# Copies host file $1 to $root$2, following symlinks, creating parents.
put() {
  install -D -m "$(stat -L -c %a "$1")" "$1" "$root$2"
}

for spec in "$@"; do
  src="${spec%%:*}"
  dest="/$(basename "$src")"
  [[ "$spec" == *:* ]] && dest="${spec#*:}"
  [ -f "$src" ] || { echo "rootfs: $src: no such file" >&2; exit 1; }
  put "$src" "$dest"
  # `ldd` prints "libfoo.so.1 => /path (0x...)" for libraries and "/lib64/ld-linux... (0x...)"
  # for the interpreter; a static binary makes it say "not a dynamic executable" and exit 1.
  if libs=$(ldd "$src" 2>/dev/null); then
    if grep -q 'not found' <<<"$libs"; then
      echo "rootfs: $src has unresolved libraries:" >&2; grep 'not found' <<<"$libs" >&2; exit 1
    fi
    while read -r lib; do
      if [ -n "$lib" ] && [ ! -e "$root$lib" ]; then put "$lib" "$lib"; fi
    done < <(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$libs")
  fi
done

# TLS roots (the operator talks HTTPS to Mattermost and Teleport). The Debian bundle, at the
# path rustls-native-certs, OpenSSL and Go all look at.
ca=/etc/ssl/certs/ca-certificates.crt
if [ -f "$ca" ]; then
  put "$ca" "$ca"
else
  echo "rootfs: warning: $ca missing (apt-get install ca-certificates); image has no CA bundle" >&2
fi

mkdir -p "$root/etc" "$root/tmp"
chmod 1777 "$root/tmp"
cat > "$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat > "$root/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
echo 'hosts: files dns' > "$root/etc/nsswitch.conf"
chmod 644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
