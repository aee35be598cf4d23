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

{{/*
The Deployment's update strategy. Every pod elects a leader with a Lease, one replica
included, so a new pod can run beside the old one: only the Lease holder watches Teleport and
posts, and every pod serves button presses. So RollingUpdate, one new pod Ready before an old
one stops (maxUnavailable 0, maxSurge 1), and the callback Service always has a Ready endpoint.

One exception: a Deployment installed by an older chart whose single pod did not elect (its
LEADER_ELECTION is not "true", looked up; nothing is found on install or `helm template`). Its
pod watches and posts without a Lease, so an electing pod beside it would post the requests
created meanwhile twice: that one upgrade is Recreate (the old pod stops first; the new one
resyncs what was created meanwhile), and every later one rolls.
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
{{- if $liveElects }}RollingUpdate{{ else }}Recreate{{ end }}
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
