#!/usr/bin/env python3
"""Builds a single-layer OCI image archive from a root filesystem directory, without Docker.

    tests/node/mkimage.py --rootfs DIR --name REF --out IMAGE.tar \
        [--entrypoint '["/app"]'] [--cmd '["serve"]'] [--user 65532:65532] \
        [--env KEY=VALUE]... [--label KEY=VALUE]... [--workdir /] [--expose 8080/tcp]...

The archive is an OCI image layout (oci-layout, index.json, blobs/sha256/...) packed in a tar,
which `ctr -n k8s.io images import IMAGE.tar` loads under REF (normalised the way containerd
does: "tm-pause:1" becomes docker.io/library/tm-pause:1, "localhost/x:1" stays as it is).

Everything is reproducible: entries are sorted, owned by root, stamped with SOURCE_DATE_EPOCH
(default 0), and gzip carries no timestamp, so the same rootfs always gives the same digests.
Files keep their permission bits; symlinks stay symlinks; devices, FIFOs and sockets are
refused (a test image has no business carrying them).

Standard library only, so it runs wherever python3 does.
"""

import argparse
import datetime
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import sys
import tarfile
import tempfile

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def normalise_ref(ref):
    """Returns (full name, tag) for a reference, as containerd's reference parser would."""
    if "@" in ref:
        sys.exit(f"mkimage: digests are not supported in --name: {ref}")
    name, tag = ref, "latest"
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > slash:
        name, tag = ref[:colon], ref[colon + 1:]
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        # No registry host in front: Docker Hub, and "library/" for one-component names.
        name = "docker.io/" + (name if rest else "library/" + name)
    if name != name.lower():
        sys.exit(f"mkimage: repository names must be lowercase: {ref}")
    return f"{name}:{tag}", tag


def layer_entries(rootfs, mtime):
    """Yields (TarInfo, path or None) for every entry under rootfs, parents before children."""
    for dirpath, dirnames, filenames in os.walk(rootfs):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, rootfs)
        names = sorted(dirnames + filenames)
        for name in names:
            path = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            st = os.lstat(path)
            info = tarfile.TarInfo(rel)
            info.mode = stat.S_IMODE(st.st_mode)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = mtime
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                yield info, None
            elif stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
                yield info, None
            elif stat.S_ISREG(st.st_mode):
                info.type = tarfile.REGTYPE
                info.size = st.st_size
                yield info, path
            else:
                sys.exit(f"mkimage: {path}: only directories, regular files and symlinks are supported")
            # os.walk does not descend into symlinked directories, which is what we want.


def write_layer(rootfs, mtime, tmpdir):
    """Writes the gzipped layer; returns (path, diff_id, digest, size)."""
    raw_path = os.path.join(tmpdir, "layer.tar")
    with open(raw_path, "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for info, path in layer_entries(rootfs, mtime):
                if path is None:
                    tar.addfile(info)
                else:
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
    diff_id = sha256_file(raw_path)
    gz_path = os.path.join(tmpdir, "layer.tar.gz")
    with open(raw_path, "rb") as src, open(gz_path, "wb") as dst:
        # mtime=0 and no file name: identical input gives identical bytes.
        with gzip.GzipFile(filename="", mode="wb", fileobj=dst, mtime=0, compresslevel=6) as gz:
            shutil.copyfileobj(src, gz, 1 << 20)
    os.unlink(raw_path)
    return gz_path, diff_id, sha256_file(gz_path), os.path.getsize(gz_path)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest(), len(data)


def add_bytes(tar, name, data, mtime):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = mtime
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data))


def add_dir(tar, name, mtime):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = mtime
    info.uname = info.gname = "root"
    tar.addfile(info)


def json_list(text, flag):
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        sys.exit(f"mkimage: {flag} must be a JSON array of strings: {e}")
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        sys.exit(f"mkimage: {flag} must be a JSON array of strings")
    return value


def key_values(pairs, flag):
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            sys.exit(f"mkimage: {flag} wants KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rootfs", required=True, help="directory that becomes the image's /")
    p.add_argument("--name", required=True, help="image reference, e.g. localhost/tm-pause:1")
    p.add_argument("--out", required=True, help="the OCI archive to write")
    p.add_argument("--entrypoint", help='JSON array, e.g. \'["/teleport-mattermost"]\'')
    p.add_argument("--cmd", help='JSON array, e.g. \'["operator"]\'')
    p.add_argument("--user", help="USER, e.g. 65532 or 65532:65532")
    p.add_argument("--workdir", default="/")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE (PATH is set unless given)")
    p.add_argument("--label", action="append", default=[], help="KEY=VALUE")
    p.add_argument("--expose", action="append", default=[], help="PORT/PROTO, e.g. 8080/tcp")
    p.add_argument("--arch", default="amd64")
    args = p.parse_args()

    if not os.path.isdir(args.rootfs):
        sys.exit(f"mkimage: {args.rootfs} is not a directory")
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    created = datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    full_name, tag = normalise_ref(args.name)

    env = key_values(args.env, "--env")
    env_list = [f"{k}={v}" for k, v in env.items()]
    if "PATH" not in env:
        env_list.insert(0, DEFAULT_PATH)

    with tempfile.TemporaryDirectory(prefix="mkimage-") as tmp:
        layer_path, diff_id, layer_digest, layer_size = write_layer(args.rootfs, mtime, tmp)

        config = {"Env": env_list, "WorkingDir": args.workdir}
        if args.entrypoint is not None:
            config["Entrypoint"] = json_list(args.entrypoint, "--entrypoint")
        if args.cmd is not None:
            config["Cmd"] = json_list(args.cmd, "--cmd")
        if args.user:
            config["User"] = args.user
        labels = key_values(args.label, "--label")
        if labels:
            config["Labels"] = labels
        if args.expose:
            config["ExposedPorts"] = {port if "/" in port else port + "/tcp": {} for port in args.expose}
        image_config = {
            "architecture": args.arch,
            "os": "linux",
            "created": created,
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "created_by": "tests/node/mkimage.py"}],
        }
        config_bytes = canonical(image_config)
        config_digest, config_size = blob(config_bytes)

        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": MEDIA_LAYER_GZIP, "digest": layer_digest, "size": layer_size}],
        }
        manifest_bytes = canonical(manifest)
        manifest_digest, manifest_size = blob(manifest_bytes)

        index = {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [{
                "mediaType": MEDIA_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": args.arch, "os": "linux"},
                "annotations": {
                    # containerd names the imported image after this one...
                    "io.containerd.image.name": full_name,
                    # ...and other OCI tools after this one (the tag).
                    "org.opencontainers.image.ref.name": tag,
                },
            }],
        }

        out_tmp = args.out + ".tmp"
        with open(out_tmp, "wb") as out:
            with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
                add_bytes(tar, "oci-layout", canonical({"imageLayoutVersion": "1.0.0"}), mtime)
                add_bytes(tar, "index.json", canonical(index), mtime)
                add_dir(tar, "blobs", mtime)
                add_dir(tar, "blobs/sha256", mtime)
                add_bytes(tar, "blobs/sha256/" + config_digest[7:], config_bytes, mtime)
                add_bytes(tar, "blobs/sha256/" + manifest_digest[7:], manifest_bytes, mtime)
                info = tarfile.TarInfo("blobs/sha256/" + layer_digest[7:])
                info.size = layer_size
                info.mode = 0o644
                info.mtime = mtime
                info.uname = info.gname = "root"
                with open(layer_path, "rb") as f:
                    tar.addfile(info, f)
        os.replace(out_tmp, args.out)

    print(json.dumps({"name": full_name, "manifest": manifest_digest, "config": config_digest,
                      "layer": layer_digest, "layer_bytes": layer_size}))


if __name__ == "__main__":
    main()
