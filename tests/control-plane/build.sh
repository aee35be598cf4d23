#!/usr/bin/env bash
# Builds the real test peers of tier 3 (kube-apiserver, etcd, helm) from pinned Go modules and
# caches the binaries outside the repo, keyed by version. Prints the cache directory.
#
#   tests/control-plane/build.sh            # build what is missing, print the bin dir
#   TM_PEERS_CACHE=/somewhere tests/control-plane/build.sh
#
# Nothing here is committed but this script: each peer gets a throwaway wrapper module.
set -euo pipefail

KUBE_VERSION="${KUBE_VERSION:-1.37.2}"     # matches the k8s-openapi feature v1_37
ETCD_VERSION="${ETCD_VERSION:-3.6.16}"
HELM_VERSION="${HELM_VERSION:-3.21.4}"
ACTIONLINT_VERSION="${ACTIONLINT_VERSION:-1.7.12}"

CACHE="${TM_PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/teleport-mattermost/peers}"
BIN="$CACHE/bin"
mkdir -p "$BIN"
log() { echo "[control-plane] $*" >&2; }

# Go builds are CPU-heavy on a 2-core machine; keep them polite.
export GOFLAGS="${GOFLAGS:-} -mod=mod"
export CGO_ENABLED=0
build_nice() { nice -n 10 "$@"; }

wrapper() { # dir module-path
  rm -rf "$1"; mkdir -p "$1"
  printf 'module %s\n\ngo 1.24\n' "$2" > "$1/go.mod"
}

build_etcd() {
  local out="$BIN/etcd-v$ETCD_VERSION"
  [ -x "$out" ] && return 0
  log "building etcd v$ETCD_VERSION"
  local w="$CACHE/work/etcd"
  wrapper "$w" tm-peers/etcd
  (cd "$w" && go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2 \
    && build_nice go build -trimpath -o "$out.tmp" go.etcd.io/etcd/server/v3 >&2)
  mv "$out.tmp" "$out"
}

# The wrapper module for every k8s.io/kubernetes command, shared by build_kube and build_node so
# they share the Go build cache.
kube_wrapper() {
  local w="$CACHE/work/kube"
  wrapper "$w" tm-peers/kube
  # k8s.io/kubernetes points its staging modules at ./staging; go refuses that outside its own
  # tree, so replace every one of them with its published v0.x twin.
  local gomod
  gomod=$(cd "$w" && go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  local minor="${KUBE_VERSION#1.}"
  {
    echo
    echo "require k8s.io/kubernetes v$KUBE_VERSION"
    echo
    grep -E '^\s*k8s.io/[a-z0-9-]+ => ./staging/' "$gomod" | awk -v v="v0.$minor" '{print "replace " $1 " => " $1 " " v}'
  } >> "$w/go.mod"
}

# The version stamps every Kubernetes binary reports (`--version`, the discovery /version).
kube_ldflags() {
  local minor="${KUBE_VERSION#1.}"
  local ver="-X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor%%.*} -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z -X k8s.io/component-base/version.gitTreeState=clean"
  ver="$ver -X k8s.io/client-go/pkg/version.gitVersion=v$KUBE_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=${minor%%.*}"
  echo "$ver"
}

build_kube() {
  local out="$BIN/kube-apiserver-v$KUBE_VERSION"
  [ -x "$out" ] && [ -x "$BIN/kubectl-v$KUBE_VERSION" ] && return 0
  log "building kube-apiserver and kubectl v$KUBE_VERSION (takes a while the first time)"
  local w="$CACHE/work/kube"
  kube_wrapper
  # The main module's own replace directives (other than staging) must be copied too.
  local ver
  ver=$(kube_ldflags)
  (cd "$w" && build_nice go build -trimpath -ldflags "$ver" -o "$out.tmp" k8s.io/kubernetes/cmd/kube-apiserver >&2)
  mv "$out.tmp" "$out"
  (cd "$w" && build_nice go build -trimpath -ldflags "$ver" -o "$BIN/kubectl-v$KUBE_VERSION.tmp" k8s.io/kubernetes/cmd/kubectl >&2)
  mv "$BIN/kubectl-v$KUBE_VERSION.tmp" "$BIN/kubectl-v$KUBE_VERSION"
}

# The node peers of the single-node tier (tests/node/): not built by default, only by
# `tests/control-plane/build.sh node`. Same wrapper module and ldflags as build_kube, so the
# build is incremental once kube-apiserver is built.
NODE_CMDS="kubelet kube-controller-manager kube-scheduler kube-proxy"
build_node() {
  local cmd missing=""
  for cmd in $NODE_CMDS; do
    [ -x "$BIN/$cmd-v$KUBE_VERSION" ] || missing="$missing $cmd"
  done
  [ -n "$missing" ] || return 0
  log "building$missing v$KUBE_VERSION"
  local w="$CACHE/work/kube"
  kube_wrapper
  local ver
  ver=$(kube_ldflags)
  for cmd in $missing; do
    (cd "$w" && build_nice go build -trimpath -ldflags "$ver" -o "$BIN/$cmd-v$KUBE_VERSION.tmp" "k8s.io/kubernetes/cmd/$cmd" >&2)
    mv "$BIN/$cmd-v$KUBE_VERSION.tmp" "$BIN/$cmd-v$KUBE_VERSION"
  done
}

build_helm() {
  # Keyed by the Kubernetes version too: helm's release Makefile stamps the Kubernetes version
  # it was built against, which `helm template` and `helm lint` use as the default
  # `.Capabilities.KubeVersion` (without it they assume v1.20 and the chart's kubeVersion fails).
  local out="$BIN/helm-v$HELM_VERSION-k$KUBE_VERSION"
  [ -x "$out" ] && return 0
  log "building helm v$HELM_VERSION"
  local w="$CACHE/work/helm"
  wrapper "$w" tm-peers/helm
  local minor="${KUBE_VERSION#1.}"; minor="${minor%%.*}"
  local ld="-X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
  local pkg
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ld="$ld -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  (cd "$w" && go get "helm.sh/helm/v3@v$HELM_VERSION" >&2 \
    && build_nice go build -trimpath -ldflags "$ld" -o "$out.tmp" helm.sh/helm/v3/cmd/helm >&2)
  mv "$out.tmp" "$out"
}

# actionlint checks .github/workflows offline (it is a lint tool, not a cluster peer, but is
# built and cached the same way).
build_actionlint() {
  local out="$BIN/actionlint-v$ACTIONLINT_VERSION"
  [ -x "$out" ] && return 0
  log "building actionlint v$ACTIONLINT_VERSION"
  local w="$CACHE/work/actionlint"
  wrapper "$w" tm-peers/actionlint
  (cd "$w" && go get "github.com/rhysd/actionlint@v$ACTIONLINT_VERSION" >&2 \
    && build_nice go build -trimpath -ldflags "-X github.com/rhysd/actionlint.version=v$ACTIONLINT_VERSION" -o "$out.tmp" github.com/rhysd/actionlint/cmd/actionlint >&2)
  mv "$out.tmp" "$out"
}

want="${*:-etcd kube helm actionlint}"
for peer in $want; do
  "build_$peer"
done
# Stable names for the tests.
ln -sf "etcd-v$ETCD_VERSION" "$BIN/etcd"
ln -sf "kube-apiserver-v$KUBE_VERSION" "$BIN/kube-apiserver"
ln -sf "kubectl-v$KUBE_VERSION" "$BIN/kubectl"
ln -sf "helm-v$HELM_VERSION-k$KUBE_VERSION" "$BIN/helm"
[ ! -x "$BIN/actionlint-v$ACTIONLINT_VERSION" ] || ln -sf "actionlint-v$ACTIONLINT_VERSION" "$BIN/actionlint"
for cmd in $NODE_CMDS; do
  # Only when built: the default run does not build the node peers.
  if [ -x "$BIN/$cmd-v$KUBE_VERSION" ]; then ln -sf "$cmd-v$KUBE_VERSION" "$BIN/$cmd"; fi
done
echo "$BIN"
