#!/usr/bin/env bash
# The test node's acceptance test: what the operator's pod tier will rely on, checked against
# a running node. Run it in the node's network namespace, with its environment:
#
#   tests/node/run.sh tests/node/smoke.sh            # fresh node, torn down afterwards
#   tests/node/exec.sh "$STATE" tests/node/smoke.sh   # against a node from up.sh
#
# Checks, in a namespace that enforces the "restricted" Pod Security Standard:
#   1. our own images (mkimage.py, no Docker) import and run with imagePullPolicy: Never, as
#      UID 65532 with a read-only root filesystem: a static one, and one built from `ldd` with
#      ENTRYPOINT + CMD (the operator's recipe);
#   2. httpGet readiness/liveness probes pass; the pod turns Ready;
#   3. the ClusterIP Service's EndpointSlice lists the pod as ready, and the ClusterIP answers
#      through kube-proxy's iptables rules, from the node and from a pod (also to itself);
#   4. the ServiceAccount token is mounted (projected volume) and the apiserver accepts it
#      through the kubernetes Service (a SelfSubjectReview from inside the pod);
#   5. `kubectl logs` works (apiserver -> kubelet, verified serving certificate);
#   6. a deleted pod is recreated by its ReplicaSet and turns Ready again;
#   7. `helm install --wait` of a small chart succeeds.
# Prints timings, and each process's memory and CPU time (stats.sh) at the end.
set -euo pipefail
# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname "$0")/lib.sh"

: "${TM_NODE_STATE:?run me through tests/node/exec.sh or tests/node/run.sh}"
NS=tm-smoke
now() { date +%s.%N; }
secs() { awk -v a="$2" -v b="$1" 'BEGIN { printf "%.2f", a - b }'; }
ok() { echo "ok   $*"; }
k() { kubectl "$@"; }

# Images: build (cached) and import.
t=$(now)
mapfile -t tars < <("$HERE/build-images.sh" testapp testapp-dyn)
"$HERE/import-image.sh" "$TM_NODE_STATE" "${tars[@]}"
ok "images built and imported in $(secs "$t" "$(now)")s: ${tars[*]##*/}"

k create namespace "$NS" >/dev/null
k label namespace "$NS" pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/enforce-version=latest >/dev/null
until k -n "$NS" get serviceaccount default >/dev/null 2>&1; do sleep 0.2; done

# deployment NAME IMAGE: a restricted-compliant Deployment + ClusterIP Service on 8080.
deployment() {
  cat <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: $1, namespace: $NS}
spec:
  replicas: 1
  selector: {matchLabels: {app: $1}}
  template:
    metadata: {labels: {app: $1}}
    spec:
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
      - name: app
        image: $2
        imagePullPolicy: Never
        ports: [{name: http, containerPort: 8080}]
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 1
        livenessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 5
        resources:
          requests: {cpu: 10m, memory: 16Mi}
          limits: {memory: 64Mi}
---
apiVersion: v1
kind: Service
metadata: {name: $1, namespace: $NS}
spec:
  selector: {app: $1}
  ports: [{name: http, port: 8080, targetPort: http}]
EOF
}

# wait_ready NAME: until the Deployment's one pod is Ready; prints the pod's name.
wait_ready() {
  local pod=""
  for _ in $(seq 1 600); do
    # Pods being deleted do not count.
    # shellcheck disable=SC2016  # a Go template, not shell
    pod=$(k -n "$NS" get pods -l "app=$1" -o go-template='{{range .items}}{{if not .metadata.deletionTimestamp}}{{$n := .metadata.name}}{{range .status.conditions}}{{if and (eq .type "Ready") (eq .status "True")}}{{$n}}{{"\n"}}{{end}}{{end}}{{end}}{{end}}' \
      | head -n1)
    [ -n "$pod" ] && { echo "$pod"; return 0; }
    sleep 0.1
  done
  k -n "$NS" describe pods -l "app=$1" >&2
  return 1
}

for app in tm-testapp:localhost/tm-testapp:1 tm-testapp-dyn:localhost/tm-testapp-dyn:1; do
  name="${app%%:*}"; image="${app#*:}"
  t=$(now)
  deployment "$name" "$image" | k apply -f - >/dev/null
  pod=$(wait_ready "$name")
  ok "$name: pod $pod Running and Ready $(secs "$t" "$(now)")s after kubectl apply"

  uid=$(k -n "$NS" get pod "$pod" -o jsonpath='{.spec.securityContext.runAsUser}')
  [ "$uid" = 65532 ] || { echo "FAIL runAsUser is $uid" >&2; exit 1; }

  # 3. EndpointSlice and ClusterIP.
  ip=$(k -n "$NS" get pod "$pod" -o jsonpath='{.status.podIP}')
  for _ in $(seq 1 100); do
    eps=$(k -n "$NS" get endpointslices -l "kubernetes.io/service-name=$name" \
      -o jsonpath='{range .items[*].endpoints[*]}{.addresses[0]}={.conditions.ready}{"\n"}{end}')
    grep -qx "$ip=true" <<<"$eps" && break
    sleep 0.1
  done
  grep -qx "$ip=true" <<<"$eps" || { echo "FAIL EndpointSlice of $name: $eps (pod $ip)" >&2; exit 1; }
  ok "$name: EndpointSlice lists $ip ready"
  cip=$(k -n "$NS" get service "$name" -o jsonpath='{.spec.clusterIP}')
  body=""
  for _ in $(seq 1 50); do
    body=$(curl -sf --max-time 2 "http://$cip:8080/") && break
    sleep 0.2
  done
  [ -n "$body" ] || { echo "FAIL no answer from ClusterIP $cip:8080" >&2; exit 1; }
  ok "$name: http://$cip:8080/ answered through kube-proxy:"
  while IFS= read -r line; do echo "       $line"; done <<<"$body"
  grep -q '^uid=65532 gid=65532' <<<"$body" || { echo "FAIL not running as 65532" >&2; exit 1; }
  grep -q '^rootfs.writable=false' <<<"$body" || { echo "FAIL root filesystem is writable" >&2; exit 1; }
  grep -q '^sa.token=present' <<<"$body" || { echo "FAIL no ServiceAccount token" >&2; exit 1; }

  # 4. The token, used from inside the pod against the apiserver via the kubernetes Service.
  who=$(curl -sf --max-time 10 "http://$cip:8080/whoami")
  if ! grep -q '^status=201' <<<"$who" \
    || ! grep -q "\"username\":\"system:serviceaccount:$NS:default\"" <<<"$who"; then
    echo "FAIL SelfSubjectReview from the pod: $who" >&2; exit 1
  fi
  ok "$name: the pod's token authenticates to the apiserver as system:serviceaccount:$NS:default"
done

# Pod -> Service -> pod: from the static app's pod to the other app's ClusterIP, and to its own
# (hairpin: back through the bridge to the same pod, which needs bridge-nf-call-iptables and
# the bridge's hairpin mode).
a_ip=$(k -n "$NS" get service tm-testapp -o jsonpath='{.spec.clusterIP}')
b_ip=$(k -n "$NS" get service tm-testapp-dyn -o jsonpath='{.spec.clusterIP}')
for target in "$b_ip" "$a_ip"; do
  out=$(curl -sf --max-time 10 "http://$a_ip:8080/fetch?url=http://$target:8080/healthz") || out="(no answer)"
  grep -q '^status=200' <<<"$out" || { echo "FAIL pod -> http://$target:8080: $out" >&2; exit 1; }
done
ok "pod -> ClusterIP -> pod works, to another pod ($b_ip) and back to itself ($a_ip, hairpin)"

vol=$(k -n "$NS" get pod "$pod" -o jsonpath='{range .spec.volumes[*]}{.name}{" "}{.projected.sources[0].serviceAccountToken.path}{"\n"}{end}')
ok "projected token volume: $vol"

# 5. Logs through the apiserver -> kubelet path.
k -n "$NS" logs "$pod" | grep -q 'tm-testapp listening' || { echo "FAIL kubectl logs" >&2; exit 1; }
ok "kubectl logs $pod works"

# 6. Delete the pod; its ReplicaSet makes another.
t=$(now)
k -n "$NS" delete pod "$pod" --wait=false >/dev/null
for _ in $(seq 1 600); do
  new=$(wait_ready tm-testapp-dyn)
  [ "$new" != "$pod" ] && break
  sleep 0.1
done
[ "$new" != "$pod" ] || { echo "FAIL pod not recreated" >&2; exit 1; }
ok "deleted $pod; replacement $new Ready $(secs "$t" "$(now)")s later"

# DNS: what the pod got, and what the kubelet said about it.
events=$(k -n "$NS" get events --field-selector reason=MissingClusterDNS -o jsonpath='{.items[0].message}' 2>/dev/null || true)
ok "MissingClusterDNS event: ${events:-none}"

# 7. helm install --wait of a chart made on the spot (a Deployment + Service of the test app).
chart="$(mktemp -d)"
trap 'rm -rf "$chart"' EXIT
mkdir -p "$chart/smoke/templates"
cat > "$chart/smoke/Chart.yaml" <<'EOF'
apiVersion: v2
name: smoke
version: 0.1.0
EOF
deployment '{{ .Release.Name }}' localhost/tm-testapp:1 | sed "s/namespace: $NS/namespace: {{ .Release.Namespace }}/" \
  > "$chart/smoke/templates/app.yaml"
export HELM_CACHE_HOME="$chart/h/cache" HELM_CONFIG_HOME="$chart/h/config" HELM_DATA_HOME="$chart/h/data"
t=$(now)
helm install --wait --timeout 2m -n "$NS" smoke-release "$chart/smoke" >/dev/null
ok "helm install --wait done in $(secs "$t" "$(now)")s"
helm uninstall -n "$NS" smoke-release --wait >/dev/null
ok "helm uninstall --wait done"

# Memory and CPU of the node's processes.
"$HERE/stats.sh" "$TM_NODE_STATE"
