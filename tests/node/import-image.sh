#!/usr/bin/env bash
# Loads OCI image archives (mkimage.py's output) into a test node's containerd, in the k8s.io
# namespace the kubelet uses, unpacked for its overlayfs snapshotter. Pods then run them with
# imagePullPolicy: Never (or IfNotPresent): this node cannot pull anything.
#
#   tests/node/import-image.sh STATE IMAGE.tar...
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "$0")/lib.sh"

[ $# -ge 2 ] || { echo "usage: $0 STATE IMAGE.tar..." >&2; exit 2; }
STATE="$1"; shift
load_state "$STATE"
for tar in "$@"; do
  # The socket is a file under STATE: reachable from the host's namespaces too.
  ctr --address "$TM_NODE_CONTAINERD_SOCK" -n k8s.io images import "$tar" >&2
done
