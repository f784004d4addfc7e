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

{{/* repository:tag, or repository:tag@digest when a digest pins it. */}}
{{- define "fedmedclip-site.imageRef" -}}
{{- printf "%s:%s" .repository .tag -}}
{{- with .digest }}@{{ . }}{{ end -}}
{{- end -}}

{{- define "fedmedclip-site.image" -}}
{{- include "fedmedclip-site.imageRef" (dict "repository" .Values.image.repository "tag" (default .Chart.AppVersion .Values.image.tag) "digest" .Values.image.digest) -}}
{{- end -}}

{{- define "fedmedclip-site.workerImage" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.worker.gpu.enabled -}}
{{- include "fedmedclip-site.imageRef" (dict "repository" .Values.image.repository "tag" (printf "%s%s" $tag .Values.worker.gpu.imageTagSuffix) "digest" .Values.worker.gpu.imageDigest) -}}
{{- else -}}
{{- include "fedmedclip-site.image" . -}}
{{- end -}}
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

{{/* Secret and key of the Redis password. */}}
{{- define "fedmedclip-site.redisSecret" -}}
{{- default (include "fedmedclip-site.secretName" .) .Values.redis.auth.existingSecret -}}
{{- end -}}

{{- define "fedmedclip-site.redisSecretKey" -}}
{{- ternary .Values.redis.auth.existingSecretKey "redis-password" (not (empty .Values.redis.auth.existingSecret)) -}}
{{- end -}}

{{/* Whether the node database is PostgreSQL (or any URL) rather than SQLite on the data volume. */}}
{{- define "fedmedclip-site.externalDatabase" -}}
{{- if or .Values.database.url .Values.database.existingSecret -}}
true
{{- end -}}
{{- end -}}

{{- define "fedmedclip-site.databaseSecret" -}}
{{- default (include "fedmedclip-site.secretName" .) .Values.database.existingSecret -}}
{{- end -}}

{{- define "fedmedclip-site.databaseSecretKey" -}}
{{- ternary .Values.database.existingSecretKey "database-url" (not (empty .Values.database.existingSecret)) -}}
{{- end -}}

{{- define "fedmedclip-site.isRWX" -}}
{{- if has "ReadWriteMany" .accessModes -}}
true
{{- end -}}
{{- end -}}

{{/*
SQLite on a ReadWriteMany volume (NFS, CephFS, a CSI file driver) corrupts or deadlocks:
its locks do not work across a network filesystem. Refuse to render it.
*/}}
{{- define "fedmedclip-site.checkDatabaseStorage" -}}
{{- if and (not (include "fedmedclip-site.externalDatabase" .)) (include "fedmedclip-site.isRWX" .Values.persistence.data) -}}
{{- fail "persistence.data is ReadWriteMany (a shared network volume) but the node database is SQLite on it, which SQLite does not support on network filesystems: set database.url or database.existingSecret to a PostgreSQL database, or use a ReadWriteOnce data volume" -}}
{{- end -}}
{{- end -}}

{{/*
Affinity of a pod that shares the node API's volumes: the user's affinity, plus a required
podAffinity to the node API's Kubernetes node when a shared volume is not ReadWriteMany
(a ReadWriteOnce volume attaches to one node only).
Call with (dict "ctx" $ "affinity" .Values.worker.affinity "colocate" "true"/"").
*/}}
{{- define "fedmedclip-site.affinity" -}}
{{- $affinity := deepCopy (default (dict) .affinity) -}}
{{- if .colocate -}}
{{- $podAffinity := default (dict) (get $affinity "podAffinity") -}}
{{- $required := default (list) (get $podAffinity "requiredDuringSchedulingIgnoredDuringExecution") -}}
{{- $selector := fromYaml (include "fedmedclip-site.selectorLabels" (dict "ctx" .ctx "component" "node-api")) -}}
{{- $term := dict "labelSelector" (dict "matchLabels" $selector) "topologyKey" "kubernetes.io/hostname" -}}
{{- $_ := set $podAffinity "requiredDuringSchedulingIgnoredDuringExecution" (append $required $term) -}}
{{- $_ := set $affinity "podAffinity" $podAffinity -}}
{{- end -}}
{{- with $affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{/* Whether the workers must run next to the node API (data or model store not RWX). */}}
{{- define "fedmedclip-site.workerColocated" -}}
{{- $p := .Values.persistence -}}
{{- if not (and (include "fedmedclip-site.isRWX" $p.data) (include "fedmedclip-site.isRWX" $p.modelStore)) -}}
true
{{- end -}}
{{- end -}}

{{/* Whether the inference pods must run next to the node API (model store or audit claim not RWX). */}}
{{- define "fedmedclip-site.inferenceColocated" -}}
{{- $audit := .Values.inference.audit.persistence -}}
{{- if or (not (include "fedmedclip-site.isRWX" .Values.persistence.modelStore)) (and $audit.enabled (not (include "fedmedclip-site.isRWX" $audit))) -}}
true
{{- end -}}
{{- end -}}

{{/*
One secret value that must never change by accident: the value given, else the one in the
live Secret (so `helm upgrade` keeps what `helm install` generated), else a new random one
if generateSecrets allows, else a render failure naming the value.
Call with (dict "ctx" $ "live" $liveData "key" "admin-token" "value" .Values.auth.adminToken
"name" "auth.adminToken" "length" 48).
*/}}
{{- define "fedmedclip-site.keptSecret" -}}
{{- $live := get .live .key | b64dec -}}
{{- if .value -}}
{{- .value -}}
{{- else if $live -}}
{{- $live -}}
{{- else if .ctx.Values.generateSecrets -}}
{{- randAlphaNum (int .length) -}}
{{- else -}}
{{- fail (printf "%s is empty and generateSecrets is false (no cluster to keep a generated value in): set it, or use an existing Secret" .name) -}}
{{- end -}}
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
      name: {{ include "fedmedclip-site.redisSecret" .ctx }}
      key: {{ include "fedmedclip-site.redisSecretKey" .ctx }}
{{- if include "fedmedclip-site.externalDatabase" .ctx }}
- name: FEDMEDCLIP_NODE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "fedmedclip-site.databaseSecret" .ctx }}
      key: {{ include "fedmedclip-site.databaseSecretKey" .ctx }}
{{- end }}
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
{{- include "fedmedclip-site.hubClientEnv" (dict "ctx" .ctx "prefix" "FEDMEDCLIP_NODE_") }}
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
{{- include "fedmedclip-site.hubClientVolumes" . }}
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
{{- include "fedmedclip-site.hubClientVolumeMounts" . }}
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

{{/* Checksum of every value that ends up in a Secret the pods read: they restart on a change. */}}
{{- define "fedmedclip-site.secretsChecksum" -}}
{{- toJson (list .Values.auth .Values.redis.auth .Values.database) | sha256sum -}}
{{- end -}}

{{/* The pods' topology spread constraints, with this component's pods as labelSelector. */}}
{{- define "fedmedclip-site.topologySpread" -}}
{{- $constraints := list -}}
{{- range .constraints -}}
{{- $c := deepCopy . -}}
{{- if not (hasKey $c "labelSelector") -}}
{{- $_ := set $c "labelSelector" (dict "matchLabels" (fromYaml (include "fedmedclip-site.selectorLabels" (dict "ctx" $.ctx "component" $.component)))) -}}
{{- end -}}
{{- $constraints = append $constraints $c -}}
{{- end -}}
{{- with $constraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{/*
Ingress rules every API pod (node API, inference API) gets besides its own clients: the
monitoring namespace to /metrics (served on the API's port), and this release's test pod.
Call with (dict "ctx" $ "service" "node") or "inference".
*/}}
{{- define "fedmedclip-site.apiIngressExtras" -}}
{{- $port := include "fedmedclip-site.portName" . -}}
{{- $metrics := .ctx.Values.networkPolicy.metrics -}}
{{- if $metrics.enabled }}
- from:
    - namespaceSelector:
        {{- toYaml (default (dict "matchLabels" (dict "kubernetes.io/metadata.name" $metrics.namespace)) $metrics.namespaceSelector) | nindent 8 }}
      {{- with $metrics.podSelector }}
      podSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  ports:
    - port: {{ $port }}
      protocol: TCP
{{- end }}
- from:
    - podSelector:
        matchLabels:
          {{- include "fedmedclip-site.selectorLabels" (dict "ctx" .ctx "component" "test") | nindent 10 }}
  ports:
    - port: {{ $port }}
      protocol: TCP
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

{{/*
Whether a site API serves HTTPS itself ("true" or empty).
Call with (dict "ctx" $ "service" "node") or "inference".
*/}}
{{- define "fedmedclip-site.tls" -}}
{{- $tls := (index .ctx.Values .service).tls -}}
{{- if or $tls.existingSecret $tls.certManager -}}
true
{{- end -}}
{{- end -}}

{{/* The kubernetes.io/tls Secret of a site API (cert-manager writes it when enabled). */}}
{{- define "fedmedclip-site.tlsSecret" -}}
{{- $tls := (index .ctx.Values .service).tls -}}
{{- default (printf "%s-%s-tls" (include "fedmedclip-site.fullname" .ctx) .service) $tls.existingSecret -}}
{{- end -}}

{{/* Name of a site API's container and Service port: it says what it speaks. */}}
{{- define "fedmedclip-site.portName" -}}
{{- ternary "https" "http" (eq (include "fedmedclip-site.tls" .) "true") -}}
{{- end -}}

{{- define "fedmedclip-site.scheme" -}}
{{- ternary "HTTPS" "HTTP" (eq (include "fedmedclip-site.tls" .) "true") -}}
{{- end -}}

{{/* Whether a CA bundle for the hub is given ("true" or empty); it is given once. */}}
{{- define "fedmedclip-site.hubCa" -}}
{{- $ca := .Values.tls.caBundle -}}
{{- if gt (len (compact (list $ca.pem $ca.existingConfigMap $ca.existingSecret))) 1 -}}
{{- fail "give the hub's CA once: tls.caBundle.pem, tls.caBundle.existingConfigMap or tls.caBundle.existingSecret" -}}
{{- end -}}
{{- if or $ca.pem $ca.existingConfigMap $ca.existingSecret -}}
true
{{- end -}}
{{- end -}}

{{- define "fedmedclip-site.caConfigMap" -}}
{{- printf "%s-hub-ca" (include "fedmedclip-site.fullname" .) -}}
{{- end -}}

{{/*
How a process that calls the hub checks it and, under mutual TLS, identifies itself:
FEDMEDCLIP_<service>_CA_BUNDLE and _CLIENT_CERTFILE/_CLIENT_KEYFILE.
Call with (dict "ctx" $ "prefix" "FEDMEDCLIP_NODE_").
*/}}
{{- define "fedmedclip-site.hubClientEnv" -}}
{{- if include "fedmedclip-site.hubCa" .ctx }}
- name: {{ .prefix }}CA_BUNDLE
  value: /etc/fedmedclip/hub-ca/ca.crt
{{- end }}
{{- if .ctx.Values.tls.clientCertificate.existingSecret }}
- name: {{ .prefix }}CLIENT_CERTFILE
  value: /etc/fedmedclip/client-tls/tls.crt
- name: {{ .prefix }}CLIENT_KEYFILE
  value: /etc/fedmedclip/client-tls/tls.key
{{- end }}
{{- end -}}

{{- define "fedmedclip-site.hubClientVolumeMounts" -}}
{{- if include "fedmedclip-site.hubCa" . }}
- name: hub-ca
  mountPath: /etc/fedmedclip/hub-ca
  readOnly: true
{{- end }}
{{- if .Values.tls.clientCertificate.existingSecret }}
- name: client-tls
  mountPath: /etc/fedmedclip/client-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "fedmedclip-site.hubClientVolumes" -}}
{{- if include "fedmedclip-site.hubCa" . }}
{{- $ca := .Values.tls.caBundle }}
{{- $items := list (dict "key" (ternary "ca.crt" $ca.key (not (empty $ca.pem))) "path" "ca.crt") }}
- name: hub-ca
  {{- if $ca.existingSecret }}
  secret:
    secretName: {{ $ca.existingSecret }}
    items:
      {{- toYaml $items | nindent 6 }}
  {{- else }}
  configMap:
    name: {{ default (include "fedmedclip-site.caConfigMap" .) $ca.existingConfigMap }}
    items:
      {{- toYaml $items | nindent 6 }}
  {{- end }}
{{- end }}
{{- with .Values.tls.clientCertificate.existingSecret }}
- name: client-tls
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- end -}}

{{/*
HTTPS and single sign-on of a site API (the worker serves nothing).
Call with (dict "ctx" $ "service" "node" "prefix" "FEDMEDCLIP_NODE_").
*/}}
{{- define "fedmedclip-site.serveEnv" -}}
{{- if include "fedmedclip-site.tls" . }}
- name: {{ .prefix }}SSL_CERTFILE
  value: /etc/fedmedclip/tls/tls.crt
- name: {{ .prefix }}SSL_KEYFILE
  value: /etc/fedmedclip/tls/tls.key
{{- end }}
{{- $o := .ctx.Values.oidc }}
{{- $svc := (index .ctx.Values .service).oidc }}
{{- if $o.issuer }}
- name: {{ .prefix }}OIDC_ISSUER
  value: {{ $o.issuer | quote }}
- name: {{ .prefix }}OIDC_AUDIENCE
  value: {{ required (printf "%s.oidc.audience is required with oidc.issuer" .service) $svc.audience | quote }}
- name: {{ .prefix }}OIDC_JWKS_URL
  value: {{ required "oidc.jwksUrl is required with oidc.issuer" $o.jwksUrl | quote }}
- name: {{ .prefix }}OIDC_ROLE_CLAIM
  value: {{ $o.roleClaim | quote }}
{{- $pairs := list }}
{{- range $group, $role := $svc.roleMap }}
{{- $pairs = append $pairs (printf "%s=%s" $group $role) }}
{{- end }}
- name: {{ .prefix }}OIDC_ROLE_MAP
  value: {{ join "," $pairs | quote }}
- name: {{ .prefix }}OIDC_NAME_CLAIM
  value: {{ $o.nameClaim | quote }}
{{- end }}
{{- end -}}

{{- define "fedmedclip-site.serverTlsVolumeMounts" -}}
{{- if include "fedmedclip-site.tls" . }}
- name: tls
  mountPath: /etc/fedmedclip/tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "fedmedclip-site.serverTlsVolumes" -}}
{{- if include "fedmedclip-site.tls" . }}
- name: tls
  secret:
    secretName: {{ include "fedmedclip-site.tlsSecret" . }}
    defaultMode: 0440
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- end -}}

{{/* Checksum of the TLS and sign-on values: the pods restart when a file or setting changes. */}}
{{- define "fedmedclip-site.tlsChecksum" -}}
{{- toJson (list .Values.tls .Values.oidc .Values.node.tls .Values.node.oidc .Values.inference.tls .Values.inference.oidc) | sha256sum -}}
{{- end -}}
