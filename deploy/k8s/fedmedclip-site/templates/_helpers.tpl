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

{{- define "fedmedclip-site.auditClaim" -}}
{{- default (printf "%s-audit" (include "fedmedclip-site.fullname" .)) .Values.inference.audit.persistence.existingClaim -}}
{{- end -}}

{{/* Whether the inference API follows the hub: it needs the hub's URL and a node token. */}}
{{- define "fedmedclip-site.followHub" -}}
{{- if and .Values.inference.followHub .Values.hub.url (or .Values.auth.nodeToken .Values.auth.existingSecret) -}}
true
{{- end -}}
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
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
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
- name: FEDMEDCLIP_NODE_DP_CLIP_NORM
  value: {{ $v.privacy.clipNorm | quote }}
- name: FEDMEDCLIP_NODE_DP_NOISE_MULTIPLIER
  value: {{ $v.privacy.noiseMultiplier | quote }}
- name: FEDMEDCLIP_NODE_DP_DELTA
  value: {{ $v.privacy.delta | quote }}
- name: FEDMEDCLIP_NODE_DP_MAX_EPSILON
  value: {{ $v.privacy.maxEpsilon | quote }}
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
{{- $dnsPeer := dict "namespaceSelector" $np.dns.namespaceSelector -}}
{{- with $np.dns.podSelector }}{{ $_ := set $dnsPeer "podSelector" . }}{{ end -}}
{{- $dnsPorts := list (dict "port" 53 "protocol" "UDP") (dict "port" 53 "protocol" "TCP") -}}
{{- $rules := list (dict "to" (list $dnsPeer) "ports" $dnsPorts) -}}
{{- $hubPeers := list -}}
{{- range $np.hub.ipBlocks }}{{ $hubPeers = append $hubPeers (dict "ipBlock" (dict "cidr" .)) }}{{ end -}}
{{- $selector := dict -}}
{{- with $np.hub.namespaceSelector }}{{ $_ := set $selector "namespaceSelector" . }}{{ end -}}
{{- with $np.hub.podSelector }}{{ $_ := set $selector "podSelector" . }}{{ end -}}
{{- if $selector }}{{ $hubPeers = append $hubPeers $selector }}{{ end -}}
{{- if $hubPeers -}}
{{- $hubPorts := list -}}
{{- range $np.hub.ports }}{{ $hubPorts = append $hubPorts (dict "port" (int .) "protocol" "TCP") }}{{ end -}}
{{- $rules = append $rules (dict "to" $hubPeers "ports" $hubPorts) -}}
{{- end -}}
{{- $rules = concat $rules $np.extraEgress -}}
{{- toYaml $rules -}}
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
