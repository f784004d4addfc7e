{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "fedmedclip-site.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name; suffixes such as "-inference" are added to it, hence 52. */}}
{{- define "fedmedclip-site.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "fedmedclip-site.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels following the Helm and Kubernetes conventions.
Call with (dict "ctx" $ "component" "inference").
*/}}
{{- define "fedmedclip-site.labels" -}}
helm.sh/chart: {{ include "fedmedclip-site.chart" .ctx }}
{{ include "fedmedclip-site.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: fedmedclip
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end -}}

{{- define "fedmedclip-site.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fedmedclip-site.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{- define "fedmedclip-site.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "fedmedclip-site.workerImage" -}}
{{- $suffix := ternary .Values.worker.gpu.imageTagSuffix "" .Values.worker.gpu.enabled -}}
{{- printf "%s:%s%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) $suffix -}}
{{- end -}}

{{- define "fedmedclip-site.secretName" -}}
{{- include "fedmedclip-site.fullname" . -}}
{{- end -}}

{{/* The Secret with node-token, admin-token and clinician-tokens. */}}
{{- define "fedmedclip-site.authSecret" -}}
{{- default (include "fedmedclip-site.secretName" .) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "fedmedclip-site.redisName" -}}
{{- printf "%s-redis" (include "fedmedclip-site.fullname" .) -}}
{{- end -}}

{{- define "fedmedclip-site.dataClaim" -}}
{{- default (printf "%s-data" (include "fedmedclip-site.fullname" .)) .Values.persistence.data.existingClaim -}}
{{- end -}}

{{- define "fedmedclip-site.modelStoreClaim" -}}
{{- default (printf "%s-model-store" (include "fedmedclip-site.fullname" .)) .Values.persistence.modelStore.existingClaim -}}
{{- end -}}

{{/* Comma-separated FEDMEDCLIP_NODE_DATA_ROOTS. */}}
{{- define "fedmedclip-site.dataRoots" -}}
{{- $roots := list -}}
{{- if .Values.datasets.includeDataVolume -}}
{{- $roots = append $roots "/var/lib/fedmedclip/node/datasets" -}}
{{- end -}}
{{- range .Values.datasets.volumes -}}
{{- $roots = append $roots (printf "/datasets/%s" .name) -}}
{{- end -}}
{{- join "," $roots -}}
{{- end -}}

{{- define "fedmedclip-site.podSpecCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
automountServiceAccountToken: false
{{- end -}}

{{/*
Environment of the node API and the workers: one configuration, two processes.
Call with (dict "ctx" $ "device" "cpu").
*/}}
{{- define "fedmedclip-site.nodeEnv" -}}
{{- $v := .ctx.Values -}}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "fedmedclip-site.secretName" .ctx }}
      key: redis-password
{{- with $v.hub.url }}
- name: FEDMEDCLIP_NODE_AGGREGATOR_URL
  value: {{ . | quote }}
{{- end }}
- name: FEDMEDCLIP_NODE_NODE_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "fedmedclip-site.authSecret" .ctx }}
      key: node-token
- name: FEDMEDCLIP_NODE_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "fedmedclip-site.authSecret" .ctx }}
      key: admin-token
- name: FEDMEDCLIP_NODE_BROKER_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s:%d/0" (include "fedmedclip-site.redisName" .ctx) (int $v.redis.port) | quote }}
- name: FEDMEDCLIP_NODE_DATA_ROOTS
  value: {{ include "fedmedclip-site.dataRoots" .ctx | quote }}
- name: FEDMEDCLIP_NODE_DATA_DIR
  value: /var/lib/fedmedclip/node
- name: FEDMEDCLIP_NODE_MODEL_STORE_DIR
  value: /var/lib/fedmedclip/model-store
- name: FEDMEDCLIP_NODE_DEVICE
  value: {{ .device | quote }}
- name: FEDMEDCLIP_NODE_BACKBONE_WEIGHTS
  value: {{ $v.backbone.weights | quote }}
- name: FEDMEDCLIP_NODE_AUTO_JOIN
  value: {{ $v.node.autoJoin | quote }}
- name: FEDMEDCLIP_NODE_POLL_SECONDS
  value: {{ $v.node.pollSeconds | quote }}
- name: FEDMEDCLIP_NODE_LOG_JSON
  value: {{ $v.node.logJson | quote }}
{{- end -}}

{{/* Volumes of the node API and worker pods. */}}
{{- define "fedmedclip-site.nodeVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 4Gi
- name: data
  persistentVolumeClaim:
    claimName: {{ include "fedmedclip-site.dataClaim" . }}
- name: model-store
  persistentVolumeClaim:
    claimName: {{ include "fedmedclip-site.modelStoreClaim" . }}
{{- with .Values.backbone.existingClaim }}
- name: backbone-weights
  persistentVolumeClaim:
    claimName: {{ . }}
    readOnly: true
{{- end }}
{{- range .Values.datasets.volumes }}
- name: {{ printf "dataset-%s" .name }}
  persistentVolumeClaim:
    claimName: {{ .existingClaim }}
    readOnly: true
{{- end }}
{{- end -}}

{{- define "fedmedclip-site.nodeVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/fedmedclip/node
- name: model-store
  mountPath: /var/lib/fedmedclip/model-store
{{- if .Values.backbone.existingClaim }}
- name: backbone-weights
  mountPath: {{ .Values.backbone.mountPath }}
  readOnly: true
{{- end }}
{{- range .Values.datasets.volumes }}
- name: {{ printf "dataset-%s" .name }}
  mountPath: {{ printf "/datasets/%s" .name }}
  readOnly: true
  {{- with .subPath }}
  subPath: {{ . }}
  {{- end }}
{{- end }}
{{- end -}}

{{/* Egress shared by the node API, the workers and the inference API: DNS and the hub. */}}
{{- define "fedmedclip-site.egressDnsAndHub" -}}
{{- $np := .Values.networkPolicy -}}
- to:
    - namespaceSelector:
        {{- toYaml $np.dns.namespaceSelector | nindent 8 }}
      {{- with $np.dns.podSelector }}
      podSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- if or $np.hub.ipBlocks $np.hub.namespaceSelector $np.hub.podSelector }}
- to:
    {{- range $np.hub.ipBlocks }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
    {{- if or $np.hub.namespaceSelector $np.hub.podSelector }}
    - {{- with $np.hub.namespaceSelector }}
      namespaceSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $np.hub.podSelector }}
      podSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
  ports:
    {{- range $np.hub.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}
{{- with $np.extraEgress }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Worker probes: a Celery worker serves no HTTP, so it is checked by a PING to its broker
with the worker's own broker URL and credentials.
*/}}
{{- define "fedmedclip-site.brokerPingCommand" -}}
- python
- -c
- "import os, redis; redis.Redis.from_url(os.environ['FEDMEDCLIP_NODE_BROKER_URL'], socket_timeout=5, socket_connect_timeout=5).ping()"
{{- end -}}
