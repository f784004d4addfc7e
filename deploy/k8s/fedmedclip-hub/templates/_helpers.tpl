{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "fedmedclip-hub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-qualified name; suffixes such as "-postgresql" are added to it, hence 52. */}}
{{- define "fedmedclip-hub.fullname" -}}
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

{{- define "fedmedclip-hub.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels following the Helm and Kubernetes conventions.
Call with (dict "ctx" $ "component" "aggregator").
*/}}
{{- define "fedmedclip-hub.labels" -}}
helm.sh/chart: {{ include "fedmedclip-hub.chart" .ctx }}
{{ include "fedmedclip-hub.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: fedmedclip
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end -}}

{{- define "fedmedclip-hub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fedmedclip-hub.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end -}}

{{/* repository:tag, or repository:tag@digest when a digest pins it. */}}
{{- define "fedmedclip-hub.imageRef" -}}
{{- printf "%s:%s" .repository .tag -}}
{{- with .digest }}@{{ . }}{{ end -}}
{{- end -}}

{{- define "fedmedclip-hub.image" -}}
{{- include "fedmedclip-hub.imageRef" (dict "repository" .Values.image.repository "tag" (default .Chart.AppVersion .Values.image.tag) "digest" .Values.image.digest) -}}
{{- end -}}

{{/*
One secret value that must never change by accident: the value given, else the one in the
live Secret (so `helm upgrade` keeps what `helm install` generated), else a new random one
if generateSecrets allows, else a render failure naming the value.
Call with (dict "ctx" $ "live" $liveData "key" "admin-token" "value" .Values.auth.adminToken
"name" "auth.adminToken" "length" 48).
*/}}
{{- define "fedmedclip-hub.keptSecret" -}}
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

{{/* The pods' topology spread constraints, with this component's pods as labelSelector. */}}
{{- define "fedmedclip-hub.topologySpread" -}}
{{- $constraints := list -}}
{{- range .constraints -}}
{{- $c := deepCopy . -}}
{{- if not (hasKey $c "labelSelector") -}}
{{- $_ := set $c "labelSelector" (dict "matchLabels" (fromYaml (include "fedmedclip-hub.selectorLabels" (dict "ctx" $.ctx "component" $.component)))) -}}
{{- end -}}
{{- $constraints = append $constraints $c -}}
{{- end -}}
{{- with $constraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{- define "fedmedclip-hub.secretName" -}}
{{- include "fedmedclip-hub.fullname" . -}}
{{- end -}}

{{- define "fedmedclip-hub.adminTokenSecret" -}}
{{- default (include "fedmedclip-hub.secretName" .) .Values.auth.existingSecret -}}
{{- end -}}

{{- define "fedmedclip-hub.postgresqlName" -}}
{{- printf "%s-postgresql" (include "fedmedclip-hub.fullname" .) -}}
{{- end -}}

{{- define "fedmedclip-hub.postgresqlPasswordSecret" -}}
{{- default (include "fedmedclip-hub.secretName" .) .Values.postgresql.auth.existingSecret -}}
{{- end -}}

{{- define "fedmedclip-hub.postgresqlPasswordKey" -}}
{{- if .Values.postgresql.auth.existingSecret -}}
{{- .Values.postgresql.auth.existingSecretKey -}}
{{- else -}}
postgres-password
{{- end -}}
{{- end -}}

{{- define "fedmedclip-hub.databaseUrlSecret" -}}
{{- default (include "fedmedclip-hub.secretName" .) .Values.externalDatabase.existingSecret -}}
{{- end -}}

{{- define "fedmedclip-hub.databaseUrlKey" -}}
{{- if .Values.externalDatabase.existingSecret -}}
{{- .Values.externalDatabase.existingSecretKey -}}
{{- else -}}
database-url
{{- end -}}
{{- end -}}

{{/* Whether the chart's own Secret has anything to hold. */}}
{{- define "fedmedclip-hub.createSecret" -}}
{{- if or (not .Values.auth.existingSecret) (and .Values.postgresql.enabled (not .Values.postgresql.auth.existingSecret)) (and (not .Values.postgresql.enabled) (not .Values.externalDatabase.existingSecret)) -}}
true
{{- end -}}
{{- end -}}

{{/*
Environment of every container that runs the aggregator code (server, migrations Job,
migrate init container). With the bundled database the URL is assembled by Kubernetes from
the password in the Secret ($(VAR) expansion), so the password is never in a ConfigMap.
*/}}
{{- define "fedmedclip-hub.aggregatorEnv" -}}
{{- if .Values.postgresql.enabled -}}
- name: DATABASE_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "fedmedclip-hub.postgresqlPasswordSecret" . }}
      key: {{ include "fedmedclip-hub.postgresqlPasswordKey" . }}
- name: FEDMEDCLIP_AGG_DATABASE_URL
  value: {{ printf "postgresql+psycopg://%s:$(DATABASE_PASSWORD)@%s:%d/%s" .Values.postgresql.auth.username (include "fedmedclip-hub.postgresqlName" .) (int .Values.postgresql.service.port) .Values.postgresql.auth.database | quote }}
{{- else -}}
- name: FEDMEDCLIP_AGG_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "fedmedclip-hub.databaseUrlSecret" . }}
      key: {{ include "fedmedclip-hub.databaseUrlKey" . }}
{{- end }}
- name: FEDMEDCLIP_AGG_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "fedmedclip-hub.adminTokenSecret" . }}
      key: admin-token
- name: FEDMEDCLIP_AGG_DATA_DIR
  value: /var/lib/fedmedclip/aggregator
- name: FEDMEDCLIP_AGG_AUTO_MIGRATE
  value: "false"
- name: FEDMEDCLIP_AGG_MAX_UPLOAD_BYTES
  value: {{ .Values.aggregator.maxUploadBytes | int64 | quote }}
- name: FEDMEDCLIP_AGG_DEFAULT_DEADLINE_SECONDS
  value: {{ .Values.aggregator.defaultDeadlineSeconds | int64 | quote }}
- name: FEDMEDCLIP_AGG_KEEP_UPDATE_VERSIONS
  value: {{ .Values.aggregator.keepUpdateVersions | int64 | quote }}
- name: FEDMEDCLIP_AGG_LOG_JSON
  value: {{ .Values.aggregator.logJson | quote }}
{{- with .Values.aggregator.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The claim the backup CronJob writes its archives to. */}}
{{- define "fedmedclip-hub.backupClaim" -}}
{{- .Values.backup.persistence.existingClaim | default (printf "%s-backups" (include "fedmedclip-hub.fullname" .)) -}}
{{- end -}}

{{/* Writable scratch space (the root filesystem is read-only), and the extra mounts. */}}
{{- define "fedmedclip-hub.scratchVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/fedmedclip/aggregator
{{- with .Values.aggregator.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "fedmedclip-hub.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
- name: data
  emptyDir:
    sizeLimit: 1Gi
{{- with .Values.aggregator.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Whether the aggregator serves HTTPS itself ("true" or empty). */}}
{{- define "fedmedclip-hub.tls" -}}
{{- if or .Values.tls.existingSecret .Values.tls.certManager.enabled -}}
true
{{- end -}}
{{- end -}}

{{/* The kubernetes.io/tls Secret of the aggregator (cert-manager writes it when enabled). */}}
{{- define "fedmedclip-hub.tlsSecret" -}}
{{- default (printf "%s-tls" (include "fedmedclip-hub.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}

{{/* Name of the aggregator's container and Service port: it says what it speaks. */}}
{{- define "fedmedclip-hub.portName" -}}
{{- ternary "https" "http" (eq (include "fedmedclip-hub.tls" .) "true") -}}
{{- end -}}

{{- define "fedmedclip-hub.scheme" -}}
{{- ternary "HTTPS" "HTTP" (eq (include "fedmedclip-hub.tls" .) "true") -}}
{{- end -}}

{{/* Whether node requests need client certificates (a client CA is given). */}}
{{- define "fedmedclip-hub.mutualTls" -}}
{{- $ca := .Values.tls.caBundle -}}
{{- if or $ca.pem $ca.existingConfigMap $ca.existingSecret -}}
{{- if not (include "fedmedclip-hub.tls" .) -}}
{{- fail "tls.caBundle (mutual TLS for nodes) needs the aggregator to serve HTTPS: set tls.existingSecret or tls.certManager.enabled" -}}
{{- end -}}
{{- if gt (len (compact (list $ca.pem $ca.existingConfigMap $ca.existingSecret))) 1 -}}
{{- fail "give the client CA once: tls.caBundle.pem, tls.caBundle.existingConfigMap or tls.caBundle.existingSecret" -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{- define "fedmedclip-hub.caConfigMap" -}}
{{- printf "%s-ca" (include "fedmedclip-hub.fullname" .) -}}
{{- end -}}

{{/*
Environment of the serving aggregator only (the migrations serve nothing): HTTPS, the client
CA of mutual TLS, and single sign-on.
*/}}
{{- define "fedmedclip-hub.serveEnv" -}}
{{- if include "fedmedclip-hub.tls" . }}
- name: FEDMEDCLIP_AGG_SSL_CERTFILE
  value: /etc/fedmedclip/tls/tls.crt
- name: FEDMEDCLIP_AGG_SSL_KEYFILE
  value: /etc/fedmedclip/tls/tls.key
{{- end }}
{{- if include "fedmedclip-hub.mutualTls" . }}
- name: FEDMEDCLIP_AGG_CLIENT_CA
  value: /etc/fedmedclip/ca/ca.crt
{{- end }}
{{- include "fedmedclip-hub.oidcEnv" (dict "prefix" "FEDMEDCLIP_AGG_" "oidc" .Values.oidc "name" "oidc") }}
{{- end -}}

{{/*
FEDMEDCLIP_<service>_OIDC_* from an oidc value block; nothing while issuer is empty.
Call with (dict "prefix" "FEDMEDCLIP_AGG_" "oidc" .Values.oidc "name" "oidc").
*/}}
{{- define "fedmedclip-hub.oidcEnv" -}}
{{- $o := .oidc -}}
{{- if $o.issuer }}
- name: {{ .prefix }}OIDC_ISSUER
  value: {{ $o.issuer | quote }}
- name: {{ .prefix }}OIDC_AUDIENCE
  value: {{ required (printf "%s.audience is required with %s.issuer" .name .name) $o.audience | quote }}
- name: {{ .prefix }}OIDC_JWKS_URL
  value: {{ required (printf "%s.jwksUrl is required with %s.issuer" .name .name) $o.jwksUrl | quote }}
- name: {{ .prefix }}OIDC_ROLE_CLAIM
  value: {{ $o.roleClaim | quote }}
{{- $pairs := list }}
{{- range $group, $role := $o.roleMap }}
{{- $pairs = append $pairs (printf "%s=%s" $group $role) }}
{{- end }}
- name: {{ .prefix }}OIDC_ROLE_MAP
  value: {{ join "," $pairs | quote }}
- name: {{ .prefix }}OIDC_NAME_CLAIM
  value: {{ $o.nameClaim | quote }}
{{- end }}
{{- end -}}

{{- define "fedmedclip-hub.tlsVolumeMounts" -}}
{{- if include "fedmedclip-hub.tls" . }}
- name: tls
  mountPath: /etc/fedmedclip/tls
  readOnly: true
{{- end }}
{{- if include "fedmedclip-hub.mutualTls" . }}
- name: client-ca
  mountPath: /etc/fedmedclip/ca
  readOnly: true
{{- end }}
{{- end -}}

{{- define "fedmedclip-hub.tlsVolumes" -}}
{{- if include "fedmedclip-hub.tls" . }}
- name: tls
  secret:
    secretName: {{ include "fedmedclip-hub.tlsSecret" . }}
    defaultMode: 0440
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- if include "fedmedclip-hub.mutualTls" . }}
{{- $ca := .Values.tls.caBundle }}
{{- $items := list (dict "key" (ternary "ca.crt" $ca.key (not (empty $ca.pem))) "path" "ca.crt") }}
- name: client-ca
  {{- if $ca.existingSecret }}
  secret:
    secretName: {{ $ca.existingSecret }}
    items:
      {{- toYaml $items | nindent 6 }}
  {{- else }}
  configMap:
    name: {{ default (include "fedmedclip-hub.caConfigMap" .) $ca.existingConfigMap }}
    items:
      {{- toYaml $items | nindent 6 }}
  {{- end }}
{{- end }}
{{- end -}}

{{- define "fedmedclip-hub.podSpecCommon" -}}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}
