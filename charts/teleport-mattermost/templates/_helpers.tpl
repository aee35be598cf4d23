{{/* The chart name, for the app.kubernetes.io/name label. */}}
{{- define "tm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix: the release name, plus the chart name unless it is already in it. */}}
{{- define "tm.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels that select the operator pods; never change them, a Deployment's selector is immutable. */}}
{{- define "tm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "tm.labels" -}}
{{ include "tm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: teleport-mattermost
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tm.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "true" when a Lease elects the one active replica. */}}
{{- define "tm.leaderElection" -}}
{{- if or .Values.leaderElection.force (ge (int .Values.replicas) 2) }}true{{- else }}false{{- end }}
{{- end }}

{{/*
The Deployment's update strategy. A pod without leader election watches Teleport and posts on
its own, so it must never run beside another pod: a rolling update (new pod up before the old
one stops) would post the requests created meanwhile twice. That holds for the pods being
replaced too: turning leader election on (replicas 1 -> 2, leaderElection.force) must not
start electing pods beside the old, non-electing one, whose posts no Lease stops. So
RollingUpdate (a pod keeps serving button presses throughout) only when both the new pods and
the running Deployment's (looked up; none on install or `helm template`) elect a leader, and
Recreate (the old pods stop first; the new ones resync what was created meanwhile) otherwise.
*/}}
{{- define "tm.strategy" -}}
{{- $liveElects := true }}
{{- $live := lookup "apps/v1" "Deployment" .Release.Namespace (include "tm.fullname" .) }}
{{- if $live }}
{{- $liveElects = false }}
{{- range $live.spec.template.spec.containers }}
{{- range .env }}
{{- if and (eq .name "LEADER_ELECTION") (eq (toString .value) "true") }}
{{- $liveElects = true }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (eq (include "tm.leaderElection" .) "true") $liveElects }}RollingUpdate{{ else }}Recreate{{ end }}
{{- end }}

{{- define "tm.leaseName" -}}
{{- default (include "tm.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "tm.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The rules the operator needs wherever it watches MattermostAccessPlugins: read them and their
Secrets, write their status, and record Events about them. Nothing else.
*/}}
{{- define "tm.watchRules" -}}
- apiGroups: ["accessplugins.dev"]
  resources: ["mattermostaccessplugins"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["accessplugins.dev"]
  resources: ["mattermostaccessplugins/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
# Only for spec.mattermost.caBundleRef of kind ConfigMap (a CA bundle for Mattermost).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
