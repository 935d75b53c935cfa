{{/*
Names, labels and the checks that make the chart refuse unsafe values.
*/}}

{{/* Chart name, or nameOverride. */}}
{{- define "stint.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: RELEASE-stint, or RELEASE when it already contains the name. */}}
{{- define "stint.fullname" -}}
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

{{/* Name of the admin Service (also the `job` label Prometheus gives its series). */}}
{{- define "stint.adminName" -}}
{{- printf "%s-admin" (include "stint.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{/* chart label value. */}}
{{- define "stint.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the broker pods; never change them on upgrade. */}}
{{- define "stint.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stint.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "stint.labels" -}}
helm.sh/chart: {{ include "stint.chart" . }}
{{ include "stint.selectorLabels" . }}
app.kubernetes.io/version: {{ (default .Chart.AppVersion .Values.image.tag) | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: stint
{{- with omit (.Values.commonLabels | default dict) "helm.sh/chart" "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/version" "app.kubernetes.io/managed-by" "app.kubernetes.io/part-of" "app.kubernetes.io/component" }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Extra labels from values, without the keys the chart sets itself. */}}
{{- define "stint.extraLabels" -}}
{{- with omit (. | default dict) "helm.sh/chart" "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/version" "app.kubernetes.io/managed-by" "app.kubernetes.io/part-of" "app.kubernetes.io/component" }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/* ServiceAccount name. */}}
{{- define "stint.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "stint.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: repository@digest, or repository:tag (tag defaults to appVersion). */}}
{{- define "stint.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where the chart mounts files in the pod. stint.yaml names them with absolute paths. */}}
{{- define "stint.configDir" -}}/etc/stint{{- end }}
{{- define "stint.configPath" -}}/etc/stint/stint.yaml{{- end }}
{{- define "stint.keysDir" -}}/var/run/secrets/stint/keys{{- end }}
{{- define "stint.tlsDir" -}}/var/run/secrets/stint/tls{{- end }}

{{/*
The audit store type: "sqlite" or "postgres". Fails on values that cannot
be told apart or that would put a password into the ConfigMap.
  - secrets.auditStoreUrl.name set: the URL is in a Secret the chart cannot
    read, so auditStore.type must say which store it is.
  - config.audit.store set: its scheme says (auditStore.type must agree).
  - neither: the SQLite file at auditStore.sqlite.path.
*/}}
{{- define "stint.auditStoreType" -}}
{{- $declared := .Values.auditStore.type | default "" }}
{{- $cfg := .Values.config | default dict }}
{{- $store := "" }}
{{- if kindIs "map" $cfg.audit }}
{{- $store = $cfg.audit.store | default "" | toString }}
{{- end }}
{{- $fromSecret := .Values.secrets.auditStoreUrl.name | default "" }}
{{- $type := "" }}
{{- if and $fromSecret $store }}
{{- fail "stint: set the audit store once: secrets.auditStoreUrl.name (STINT_AUDIT_STORE) would override config.audit.store. Remove config.audit.store." }}
{{- else if $fromSecret }}
{{- if not (has $declared (list "sqlite" "postgres")) }}
{{- fail (printf "stint: secrets.auditStoreUrl.name is set (Secret %q), so the chart cannot see which store the URL names: set auditStore.type to \"postgres\" (or \"sqlite\")." $fromSecret) }}
{{- end }}
{{- if not .Values.secrets.auditStoreUrl.key }}
{{- fail "stint: secrets.auditStoreUrl.key must name the key that holds the URL in the Secret." }}
{{- end }}
{{- $type = $declared }}
{{- else if $store }}
{{- if hasPrefix "sqlite://" $store }}
{{- $type = "sqlite" }}
{{- $dir := printf "sqlite://%s/" (trimSuffix "/" .Values.auditStore.sqlite.mountPath) }}
{{- if not (hasPrefix $dir $store) }}
{{- fail (printf "stint: config.audit.store %q is not in the data volume: the root file system is read-only, so put the SQLite file under auditStore.sqlite.mountPath (%s), or set auditStore.sqlite.path instead." $store .Values.auditStore.sqlite.mountPath) }}
{{- end }}
{{- else if or (hasPrefix "postgres://" $store) (hasPrefix "postgresql://" $store) }}
{{- $type = "postgres" }}
{{- if or (regexMatch "^postgres(ql)?://[^/@?]*:[^/@?]*@" $store) (regexMatch "[?&]password=" $store) }}
{{- fail "stint: config.audit.store carries a password, which would land in a ConfigMap: put the whole URL in a Secret and reference it with secrets.auditStoreUrl.name/key (with auditStore.type: postgres)." }}
{{- end }}
{{- else }}
{{- fail (printf "stint: config.audit.store %q: use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE." $store) }}
{{- end }}
{{- if and $declared (ne $declared $type) }}
{{- fail (printf "stint: auditStore.type is %q but config.audit.store is a %s URL; make them agree (or leave auditStore.type empty)." $declared $type) }}
{{- end }}
{{- else }}
{{- if eq $declared "postgres" }}
{{- fail "stint: auditStore.type is \"postgres\" but no PostgreSQL store is named: set secrets.auditStoreUrl.name/key to a Secret holding the postgres:// URL." }}
{{- end }}
{{- $type = "sqlite" }}
{{- end }}
{{- $type }}
{{- end }}

{{/* The most pods that can run at once: replicaCount, or autoscaling.maxReplicas. */}}
{{- define "stint.maxReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ int .Values.autoscaling.maxReplicas }}{{ else }}{{ int .Values.replicaCount }}{{ end }}
{{- end }}

{{/* Whether the SQLite data volume is a PersistentVolumeClaim. */}}
{{- define "stint.sqlitePersistent" -}}
{{- if and (eq (include "stint.auditStoreType" .) "sqlite") .Values.auditStore.sqlite.persistence.enabled }}true{{ end }}
{{- end }}

{{/*
Checks that span several values; renders nothing. Every template that
depends on them includes it, so `helm template` and `helm install` stop
with one of these messages.
*/}}
{{- define "stint.validate" -}}
{{- $type := include "stint.auditStoreType" . }}
{{- if and (gt (int (include "stint.maxReplicas" .)) 1) (ne $type "postgres") }}
{{- if .Values.autoscaling.enabled }}
{{- fail (printf "stint: autoscaling.maxReplicas is %d, but more than one replica requires a PostgreSQL audit store (the store is %s): every replica must append to one audit chain, and a SQLite file belongs to one pod. Put the postgres:// URL in a Secret and set secrets.auditStoreUrl.name/key with auditStore.type: postgres, or set autoscaling.maxReplicas: 1 (or autoscaling.enabled: false with replicaCount: 1)." (int .Values.autoscaling.maxReplicas) $type) }}
{{- else }}
{{- fail (printf "stint: replicaCount is %d, but more than one replica requires a PostgreSQL audit store (the store is %s): every replica must append to one audit chain, and a SQLite file belongs to one pod. Put the postgres:// URL in a Secret and set secrets.auditStoreUrl.name/key with auditStore.type: postgres, or set replicaCount: 1." (int .Values.replicaCount) $type) }}
{{- end }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "stint: autoscaling.minReplicas is more than autoscaling.maxReplicas." }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not .Values.autoscaling.targetCPUUtilizationPercentage) (not .Values.autoscaling.targetMemoryUtilizationPercentage) }}
{{- fail "stint: autoscaling needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage." }}
{{- end }}
{{- range $ref := list "auditKey" "signingKey" }}
{{- $s := index $.Values.secrets $ref }}
{{- if or (not $s.name) (not $s.key) }}
{{- fail (printf "stint: secrets.%s.name and secrets.%s.key must name an existing Secret and its key: without the file, stint would create a new key in every pod." $ref $ref) }}
{{- end }}
{{- end }}
{{- $cfg := .Values.config | default dict }}
{{- range $key := list "listen" "admin_listen" }}
{{- if hasKey $cfg $key }}
{{- fail (printf "stint: config.%s is set by the chart (listenAddress and containerPorts); remove it from config." $key) }}
{{- end }}
{{- end }}
{{- if and (kindIs "map" $cfg.audit) (hasKey $cfg.audit "key_file") }}
{{- fail "stint: config.audit.key_file is set by the chart (the secrets.auditKey Secret, mounted read-only); remove it from config." }}
{{- end }}
{{- if and (kindIs "map" $cfg.signing) (hasKey $cfg.signing "key_file") }}
{{- fail "stint: config.signing.key_file is set by the chart (the secrets.signingKey Secret, mounted read-only); remove it from config." }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- if not .Values.tls.secretName }}
{{- fail "stint: tls.enabled needs tls.secretName (a kubernetes.io/tls Secret)." }}
{{- end }}
{{- if hasKey $cfg "tls" }}
{{- fail "stint: config.tls is set by the chart when tls.enabled is true; remove it from config." }}
{{- end }}
{{- end }}
{{- $issuers := $cfg.issuers | default dict }}
{{- $grants := $cfg.grants | default dict }}
{{- if and (empty $issuers) (not (empty $grants)) }}
{{- fail "stint: config.grants is set but config.issuers is empty: every grant rule names an issuer." }}
{{- end }}
{{- if and (not (empty $issuers)) (empty $grants) }}
{{- fail "stint: config.issuers is set but config.grants is empty: stint needs at least one grant." }}
{{- end }}
{{- if eq (int .Values.containerPorts.api) (int .Values.containerPorts.admin) }}
{{- fail "stint: containerPorts.api and containerPorts.admin must differ." }}
{{- end }}
{{- end }}

{{/* Whether the placeholder issuer and grant are rendered (no issuers and no grants in values). */}}
{{- define "stint.placeholder" -}}
{{- $cfg := .Values.config | default dict }}
{{- if and (empty ($cfg.issuers | default dict)) (empty ($cfg.grants | default dict)) }}true{{ end }}
{{- end }}

{{/* signing.issuer in force: config.signing.issuer, else https://<first ingress host>. */}}
{{- define "stint.signingIssuer" -}}
{{- $cfg := .Values.config | default dict }}
{{- $issuer := "" }}
{{- if kindIs "map" $cfg.signing }}{{ $issuer = $cfg.signing.issuer | default "" }}{{ end }}
{{- if and (not $issuer) .Values.ingress.enabled .Values.ingress.hosts }}
{{- with (first .Values.ingress.hosts).host }}{{ $issuer = printf "https://%s" . }}{{ end }}
{{- end }}
{{- $issuer }}
{{- end }}

{{/*
stint.yaml: .Values.config plus what the chart owns: the listeners, the key
files (mounted Secrets), the SQLite default store, config.tls when
tls.enabled, and the placeholder issuer and grant while none are given.
*/}}
{{- define "stint.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $_ := set $cfg "listen" (printf "%s:%d" .Values.listenAddress (int .Values.containerPorts.api)) }}
{{- $_ := set $cfg "admin_listen" (printf "%s:%d" .Values.listenAddress (int .Values.containerPorts.admin)) }}
{{- $audit := dict }}
{{- if kindIs "map" $cfg.audit }}{{ $audit = $cfg.audit }}{{ end }}
{{- $_ := set $audit "key_file" (printf "%s/audit.key" (include "stint.keysDir" .)) }}
{{- if and (not .Values.secrets.auditStoreUrl.name) (not $audit.store) }}
{{- $_ := set $audit "store" (printf "sqlite://%s" .Values.auditStore.sqlite.path) }}
{{- end }}
{{- $_ := set $cfg "audit" $audit }}
{{- $signing := dict }}
{{- if kindIs "map" $cfg.signing }}{{ $signing = $cfg.signing }}{{ end }}
{{- $_ := set $signing "key_file" (printf "%s/signing.key" (include "stint.keysDir" .)) }}
{{- $issuer := include "stint.signingIssuer" . }}
{{- if $issuer }}
{{- $_ := set $signing "issuer" $issuer }}
{{- else }}
{{- $_ := unset $signing "issuer" }}
{{- end }}
{{- $_ := set $cfg "signing" $signing }}
{{- if .Values.tls.enabled }}
{{- $tls := dict "cert_file" (printf "%s/tls.crt" (include "stint.tlsDir" .)) "key_file" (printf "%s/tls.key" (include "stint.tlsDir" .)) }}
{{- if .Values.tls.clientCa.name }}
{{- $_ := set $tls "client_ca_file" (printf "%s/client-ca.crt" (include "stint.tlsDir" .)) }}
{{- end }}
{{- $_ := set $cfg "tls" $tls }}
{{- end }}
{{- if include "stint.placeholder" . }}
{{- $_ := set $cfg "issuers" (dict "placeholder" (dict "issuer" "https://placeholder.stint.invalid" "audience" "stint-placeholder" "algorithms" (list "ES256") "platform" "generic" "max_token_lifetime" "5m")) }}
{{- $rule := dict "issuer" "placeholder" "claims" (dict "sub" "nobody") }}
{{- $_ := set $cfg "grants" (dict "placeholder" (dict "kind" "token" "description" "Placeholder of the Helm chart: set config.issuers and config.grants" "ttl" "5m" "audience" "stint-placeholder" "allow" (list $rule))) }}
{{- end }}
{{- range $k, $v := $cfg }}
{{- if kindIs "invalid" $v }}{{ $_ := unset $cfg $k }}{{ end }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* Label matchers that pick this release's series in alert expressions. */}}
{{- define "stint.alertSelector" -}}
{{- if .Values.metrics.prometheusRule.selector }}
{{- .Values.metrics.prometheusRule.selector }}
{{- else }}
{{- printf "namespace=%q,job=%q" .Release.Namespace (include "stint.adminName" .) }}
{{- end }}
{{- end }}
