{{/*
Names, labels and the pieces shared by the Deployment (deployment mode) and the container snippet
(container mode): the sidecar's container and the volumes it needs.
*/}}

{{- define "tasker-sidecar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tasker-sidecar.fullname" -}}
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

{{/* The labels that tell this installation's objects apart; the ServiceMonitor selects on them. */}}
{{- define "tasker-sidecar.instanceLabels" -}}
app.kubernetes.io/name: {{ include "tasker-sidecar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tasker-sidecar.labels" -}}
{{ include "tasker-sidecar.instanceLabels" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- if .Values.helmLabels }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
{{- end }}

{{/* The labels of the pods the sidecar runs in: its own (deployment mode) or Tasker's (container mode). */}}
{{- define "tasker-sidecar.selectorLabels" -}}
{{- if .Values.selectorLabels }}
{{- toYaml .Values.selectorLabels }}
{{- else if eq .Values.mode "container" }}
{{- fail "mode container: set selectorLabels to the labels of Tasker's pods, so that the Service finds the sidecar" }}
{{- else }}
{{- include "tasker-sidecar.instanceLabels" . }}
{{- end }}
{{- end }}

{{/* repository@digest when a digest is set (it wins over the tag), else repository:tag. */}}
{{- define "tasker-sidecar.image" -}}
{{- with .Values.image }}
{{- if .digest }}
{{- if not (regexMatch "^sha256:[0-9a-f]{64}$" .digest) }}
{{- fail (printf "image.digest %q: want sha256: and 64 hexadecimal digits" .digest) }}
{{- end }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository (.tag | default $.Chart.AppVersion | toString) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tasker-sidecar.stateDir" -}}
{{- dig "stream" "checkpoint" "state_dir" "/var/lib/tasker-sidecar" .Values.config }}
{{- end }}

{{/* The configuration file: config values, with server.listen set from containerPort. */}}
{{- define "tasker-sidecar.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $server := dict }}
{{- if hasKey $cfg "server" }}{{ $server = get $cfg "server" }}{{ end }}
{{- $_ := set $server "listen" (printf ":%d" (int .Values.containerPort)) }}
{{- $_ := set $cfg "server" $server }}
{{- toYaml $cfg }}
{{- end }}

{{- define "tasker-sidecar.checkValues" -}}
{{- if not (has .Values.mode (list "deployment" "container")) }}
{{- fail (printf "mode %q: want deployment or container" .Values.mode) }}
{{- end }}
{{- if not (and .Values.secret.name .Values.secret.databaseUrlKey) }}
{{- fail "secret.name and secret.databaseUrlKey: the sidecar needs the database URL from an existing Secret" }}
{{- end }}
{{- end }}

{{/* The sidecar's container, as one item of a pod's containers list. */}}
{{- define "tasker-sidecar.container" -}}
- name: tasker-sidecar
  image: {{ include "tasker-sidecar.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["run", "--config", "/etc/tasker-sidecar/config.yaml"]
  ports:
    - name: metrics
      containerPort: {{ .Values.containerPort }}
  env:
    # Secrets come from the Secret, never from the ConfigMap.
    - name: SIDECAR_DATABASE_URL
      valueFrom:
        secretKeyRef:
          name: {{ .Values.secret.name }}
          key: {{ .Values.secret.databaseUrlKey }}
    {{- if .Values.secret.cacheUrlKey }}
    - name: SIDECAR_CACHE_URL
      valueFrom:
        secretKeyRef:
          name: {{ .Values.secret.name }}
          key: {{ .Values.secret.cacheUrlKey }}
    {{- end }}
    {{- if .Values.secret.pgmqDatabaseUrlKey }}
    - name: SIDECAR_PGMQ_DATABASE_URL
      valueFrom:
        secretKeyRef:
          name: {{ .Values.secret.name }}
          key: {{ .Values.secret.pgmqDatabaseUrlKey }}
    {{- end }}
    {{- if .Values.secret.bearerTokenKey }}
    - name: SIDECAR_SERVER_AUTH_BEARER_TOKEN
      valueFrom:
        secretKeyRef:
          name: {{ .Values.secret.name }}
          key: {{ .Values.secret.bearerTokenKey }}
    {{- end }}
    # The Go runtime's soft memory limit, about 85% of limits.memory (goMemLimit in values.yaml;
    # deploy/kubernetes_test.go checks the ratio).
    - name: GOMEMLIMIT
      value: {{ .Values.goMemLimit | quote }}
    {{- with .Values.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.startupProbe }}
  startupProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.livenessProbe }}
  livenessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.readinessProbe }}
  readinessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: tasker-sidecar-config
      mountPath: /etc/tasker-sidecar
      readOnly: true
    - name: tasker-sidecar-state
      mountPath: {{ include "tasker-sidecar.stateDir" . }}
{{- end }}

{{/* The volumes the sidecar's container mounts, as items of a pod's volumes list. */}}
{{- define "tasker-sidecar.volumes" -}}
- name: tasker-sidecar-config
  configMap:
    name: {{ include "tasker-sidecar.fullname" . }}
- name: tasker-sidecar-state
  {{- toYaml .Values.stateVolume | nindent 2 }}
{{- end }}
