{{/*
Names, labels, the paths in the pod, agent.yaml, and the checks that make
the chart refuse values that would leave the app without its credentials
or hand them to the wrong place.
*/}}

{{/* Chart name, or nameOverride. */}}
{{- define "stint-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: RELEASE-stint-agent, or RELEASE when it already contains the name. */}}
{{- define "stint-agent.fullname" -}}
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

{{/* chart label value. */}}
{{- define "stint-agent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the app's pods; never change them on upgrade. */}}
{{- define "stint-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stint-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "stint-agent.labels" -}}
helm.sh/chart: {{ include "stint-agent.chart" . }}
{{ include "stint-agent.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with include "stint-agent.extraLabels" .Values.commonLabels }}
{{ . }}
{{- end }}
{{- end }}

{{/* Extra labels from values, without the keys the chart sets itself. */}}
{{- define "stint-agent.extraLabels" -}}
{{- with omit (. | default dict) "helm.sh/chart" "app.kubernetes.io/name" "app.kubernetes.io/instance" "app.kubernetes.io/managed-by" }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/* ServiceAccount name. */}}
{{- define "stint-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "stint-agent.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference from {repository, tag, digest}: the digest wins. */}}
{{- define "stint-agent.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .default .image.tag) }}
{{- end }}
{{- end }}

{{/*
Where things are in the pod. agent.yaml names them with absolute paths,
so the init container, the sidecar and the app agree on every one.
*/}}
{{- define "stint-agent.configDir" -}}/etc/stint-agent{{- end }}
{{- define "stint-agent.configPath" -}}/etc/stint-agent/agent.yaml{{- end }}
{{- define "stint-agent.caPath" -}}/etc/stint-agent/ca.crt{{- end }}
{{- define "stint-agent.tokenDir" -}}/var/run/secrets/stint{{- end }}
{{- define "stint-agent.tokenPath" -}}/var/run/secrets/stint/token{{- end }}
{{- define "stint-agent.credentialsDir" -}}{{ trimSuffix "/" .Values.credentials.mountPath }}{{- end }}
{{- define "stint-agent.awsTokenPath" -}}{{ include "stint-agent.credentialsDir" . }}/aws-token{{- end }}
{{- define "stint-agent.awsUri" -}}http://127.0.0.1:{{ int .Values.awsEndpoint.port }}/creds{{- end }}

{{/* The user the agent runs as (it owns every credential file, 0600). */}}
{{- define "stint-agent.agentUser" -}}
{{- $sc := .Values.agent.securityContext | default dict }}
{{- $psc := .Values.podSecurityContext | default dict }}
{{- if hasKey $sc "runAsUser" }}{{ $sc.runAsUser | int }}{{ else if hasKey $psc "runAsUser" }}{{ $psc.runAsUser | int }}{{ end }}
{{- end }}

{{/* The user the app runs as, when the chart can tell. */}}
{{- define "stint-agent.appUser" -}}
{{- $sc := .Values.app.securityContext | default dict }}
{{- $psc := .Values.podSecurityContext | default dict }}
{{- if hasKey $sc "runAsUser" }}{{ $sc.runAsUser | int }}{{ else if hasKey $psc "runAsUser" }}{{ $psc.runAsUser | int }}{{ end }}
{{- end }}

{{/* Whether the cluster's version is below $.min ("1.29"). */}}
{{- define "stint-agent.kubeBelow" -}}
{{- if semverCompare (printf "<%s.0-0" .min) .ctx.Capabilities.KubeVersion.Version }}true{{ end }}
{{- end }}

{{/*
Checks that span several values; renders nothing. Every template that
depends on them includes it, so `helm template` and `helm install` stop
with one of these messages.
*/}}
{{- define "stint-agent.validate" -}}
{{- $v := .Values }}
{{- $url := $v.broker.url | default "" }}
{{- if not $url }}
{{- fail "stint-agent: broker.url is empty: set the broker's base URL, e.g. https://stint.example (agent.yaml broker)." }}
{{- end }}
{{- if not (or (regexMatch "^https://[^/?#@\\s]+(/\\S*)?$" $url) (regexMatch "^http://(localhost|127(\\.[0-9]{1,3}){3}|\\[::1\\])(:[0-9]+)?(/\\S*)?$" $url)) }}
{{- fail (printf "stint-agent: broker.url %q must be an https URL (plain http only to a loopback host): the pod's OIDC token travels with every request." $url) }}
{{- end }}
{{- if and $v.broker.ca.configMap $v.broker.ca.secret }}
{{- fail "stint-agent: set broker.ca.configMap or broker.ca.secret, not both." }}
{{- end }}
{{- if and (or $v.broker.ca.configMap $v.broker.ca.secret) (not $v.broker.ca.key) }}
{{- fail "stint-agent: broker.ca.key must name the key that holds the PEM certificate." }}
{{- end }}
{{- $grants := $v.grants | default dict }}
{{- if empty $grants }}
{{- fail "stint-agent: grants is empty: name at least one grant the agent keeps for the app (agent.yaml grants)." }}
{{- end }}
{{- $aws := $v.awsEndpoint }}
{{- if $aws.enabled }}
{{- if not $aws.grant }}
{{- fail "stint-agent: awsEndpoint.enabled needs awsEndpoint.grant: the `aws` grant it serves." }}
{{- end }}
{{- if not (hasKey $grants $aws.grant) }}
{{- fail (printf "stint-agent: awsEndpoint.grant %q is not one of grants: add it there (with files: false if the app takes it from the endpoint only)." $aws.grant) }}
{{- end }}
{{- if eq (int $aws.port) (int $v.agent.healthPort) }}
{{- fail "stint-agent: awsEndpoint.port and agent.healthPort must differ." }}
{{- end }}
{{- end }}
{{- range $name, $g := $grants }}
{{- if not (regexMatch "^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$" $name) }}
{{- fail (printf "stint-agent: grants.%s: a grant's name is 1-64 of A-Z a-z 0-9 - _ . not starting with a dot, as the broker names grants (it is also a folder under credentials.mountPath)." $name) }}
{{- end }}
{{- if eq $name "aws-token" }}
{{- fail "stint-agent: a grant cannot be named aws-token here: credentials.mountPath/aws-token is the AWS endpoint's authorization token file." }}
{{- end }}
{{- $files := true }}
{{- if and (kindIs "map" $g) (hasKey $g "files") }}{{ $files = $g.files }}{{ end }}
{{- if and (not $files) (not (and $aws.enabled (eq $aws.grant $name))) }}
{{- fail (printf "stint-agent: grants.%s goes nowhere: it has files: false and is not awsEndpoint.grant. Write it as files, serve it on the AWS endpoint, or remove it." $name) }}
{{- end }}
{{- end }}
{{- if not $v.app.image.repository }}
{{- fail "stint-agent: app.image.repository is empty: the chart deploys your app, set its image." }}
{{- end }}
{{- if and (not $v.app.image.tag) (not $v.app.image.digest) }}
{{- fail "stint-agent: set app.image.tag or app.image.digest." }}
{{- end }}
{{- /* stint in the app: its image, its executable, or a stint command in any argument (sh -c "stint exec ..."). Paths like /var/run/stint are fine. */}}
{{- $repo := $v.app.image.repository }}
{{- if or (eq $repo $v.agent.image.repository) (regexMatch "(^|/)stint$" $repo) }}
{{- fail (printf "stint-agent: app.image.repository %q is the stint image: the app container runs your app, and the agent beside it runs stint. For stint in the app's image, see examples/kubernetes/deployment.yaml instead." $repo) }}
{{- end }}
{{- $run := concat ($v.app.command | default list) ($v.app.args | default list) }}
{{- if and $run (regexMatch "(^|/)stint$" (toString (first $run))) }}
{{- fail (printf "stint-agent: the app container must not run stint (%q): the agent beside it does, and the app never sees the OIDC token. For stint in the app's image, see examples/kubernetes/deployment.yaml instead." (toString (first $run))) }}
{{- end }}
{{- range $run }}
{{- if regexMatch "(^|[\\s/])stint\\s+(exec|agent|token|credential-process|serve|dev)(\\s|$)" (toString .) }}
{{- fail (printf "stint-agent: the app container must not run stint (%q): the agent beside it does, and the app never sees the OIDC token. For stint in the app's image, see examples/kubernetes/deployment.yaml instead." (toString .)) }}
{{- end }}
{{- end }}
{{- range $v.app.ports | default list }}
{{- if or (eq (int .containerPort) (int $v.agent.healthPort)) (and $aws.enabled (eq (int .containerPort) (int $aws.port))) }}
{{- fail (printf "stint-agent: app.ports has %d, which the agent listens on (agent.healthPort or awsEndpoint.port): the containers of a pod share its ports." (int .containerPort)) }}
{{- end }}
{{- end }}
{{- $agentUser := include "stint-agent.agentUser" . }}
{{- $appUser := include "stint-agent.appUser" . }}
{{- if not $agentUser }}
{{- fail "stint-agent: the agent's user is not set: set agent.securityContext.runAsUser (65532 in the stint image)." }}
{{- end }}
{{- if not $appUser }}
{{- fail (printf "stint-agent: the app's user would be its image's, which the chart cannot see: set podSecurityContext.runAsUser or app.securityContext.runAsUser to the agent's user %s (the agent writes the credential files 0600)." $agentUser) }}
{{- end }}
{{- if ne $agentUser $appUser }}
{{- fail (printf "stint-agent: the app runs as user %s but the agent as %s: the agent writes the credential files 0600, so the app could not read them. Run both as one user." $appUser $agentUser) }}
{{- end }}
{{- if $aws.enabled }}
{{- range $v.app.env | default list }}
{{- if has .name (list "AWS_CONTAINER_CREDENTIALS_FULL_URI" "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE" "AWS_CONTAINER_AUTHORIZATION_TOKEN" "AWS_ACCESS_KEY_ID" "AWS_SECRET_ACCESS_KEY" "AWS_SESSION_TOKEN") }}
{{- fail (printf "stint-agent: app.env sets %s, but with awsEndpoint.enabled the chart points the AWS SDKs at the agent (and static keys would win over it): remove it." .name) }}
{{- end }}
{{- end }}
{{- end }}
{{- $ours := list "stint-token" "stint-state" "stint-credentials" "stint-agent-config" "stint-agent-tmp" "app-tmp" }}
{{- range $v.app.volumeMounts | default list }}
{{- if has .name $ours }}
{{- fail (printf "stint-agent: app.volumeMounts mounts %s, a volume the chart manages: the app gets the credentials read-only at credentials.mountPath, and never the token or the agent's state." .name) }}
{{- end }}
{{- end }}
{{- range $v.extraVolumes | default list }}
{{- if has .name $ours }}
{{- fail (printf "stint-agent: extraVolumes has %s, a name the chart uses." .name) }}
{{- end }}
{{- end }}
{{- $dirs := dict "credentials.mountPath" (include "stint-agent.credentialsDir" .) "agent.stateDir" (trimSuffix "/" $v.agent.stateDir) "/tmp" "/tmp" "the config" (include "stint-agent.configDir" .) "the token" (include "stint-agent.tokenDir" .) }}
{{- range $a := list "credentials.mountPath" "agent.stateDir" }}
{{- range $b, $other := $dirs }}
{{- $mine := index $dirs $a }}
{{- if and (ne $a $b) (or (eq $mine $other) (hasPrefix (printf "%s/" $mine) $other) (hasPrefix (printf "%s/" $other) $mine)) }}
{{- fail (printf "stint-agent: %s (%s) overlaps %s (%s): each needs its own folder." $a $mine $b $other) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $v.agent.nativeSidecar (include "stint-agent.kubeBelow" (dict "ctx" . "min" "1.29")) }}
{{- fail (printf "stint-agent: agent.nativeSidecar needs Kubernetes 1.29 or later (an init container with restartPolicy: Always), and the cluster is %s. Set agent.nativeSidecar: false: an init container then makes the first fetch with --once and a sidecar renews." .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- $sleep := int $v.agent.preStopSleepSeconds }}
{{- if and (gt $sleep 0) (not $v.agent.nativeSidecar) }}
{{- if include "stint-agent.kubeBelow" (dict "ctx" . "min" "1.30") }}
{{- fail (printf "stint-agent: agent.preStopSleepSeconds needs Kubernetes 1.30 or later (the preStop sleep action), and the cluster is %s. Set it to 0, or use agent.nativeSidecar." .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- if ge $sleep (int $v.terminationGracePeriodSeconds) }}
{{- fail "stint-agent: agent.preStopSleepSeconds must be less than terminationGracePeriodSeconds, or the agent is killed before it removes its files." }}
{{- end }}
{{- end }}
{{- end }}

{{/*
agent.yaml (docs/agent.md): the keys of src/agent/config.rs and state_dir,
every path absolute and inside a volume the chart mounts.
*/}}
{{- define "stint-agent.config" -}}
broker: {{ .Values.broker.url | quote }}
token_file: {{ include "stint-agent.tokenPath" . | quote }}
{{- if or .Values.broker.ca.configMap .Values.broker.ca.secret }}
ca_file: {{ include "stint-agent.caPath" . | quote }}
{{- end }}
health_listen: {{ printf "%s:%d" .Values.agent.listenAddress (int .Values.agent.healthPort) | quote }}
state_dir: {{ trimSuffix "/" .Values.agent.stateDir | quote }}
{{- if .Values.awsEndpoint.enabled }}
aws_endpoint:
  listen: {{ printf "127.0.0.1:%d" (int .Values.awsEndpoint.port) | quote }}
  grant: {{ .Values.awsEndpoint.grant | quote }}
  authorization_token_file: {{ include "stint-agent.awsTokenPath" . | quote }}
{{- end }}
grants:
{{- range $name, $g := .Values.grants }}
{{- $g = $g | default dict }}
  {{ $name | quote }}:
    {{- $files := true }}
    {{- if hasKey $g "files" }}{{ $files = $g.files }}{{ end }}
    {{- if $files }}
    files: {{ printf "%s/%s" (include "stint-agent.credentialsDir" $) $name | quote }}
    {{- end }}
    {{- with $g.ttl }}
    ttl: {{ . | quote }}
    {{- end }}
    {{- if hasKey $g "renewAt" }}
    renew_at: {{ $g.renewAt }}
    {{- end }}
    {{- if and (not $files) (not $g.ttl) (not (hasKey $g "renewAt")) }} {}{{ end }}
{{- end }}
{{- end }}

{{/* Volume mounts of the agent containers (init and sidecar alike). */}}
{{- define "stint-agent.agentMounts" -}}
- name: stint-agent-config
  mountPath: {{ include "stint-agent.configDir" . }}
  readOnly: true
- name: stint-token
  mountPath: {{ include "stint-agent.tokenDir" . }}
  readOnly: true
- name: stint-credentials
  mountPath: {{ include "stint-agent.credentialsDir" . }}
- name: stint-state
  mountPath: {{ trimSuffix "/" .Values.agent.stateDir }}
- name: stint-agent-tmp
  mountPath: /tmp
{{- end }}

{{/* What the init container and the sidecar share: image, env, resources, security. */}}
{{- define "stint-agent.agentCommon" -}}
image: {{ include "stint-agent.imageRef" (dict "image" .Values.agent.image "default" .Chart.AppVersion) | quote }}
imagePullPolicy: {{ .Values.agent.image.pullPolicy }}
command:
  {{- toYaml .Values.agent.command | nindent 2 }}
env:
  - name: STINT_LOG_FORMAT
    value: {{ .Values.agent.logFormat | quote }}
  {{- with .Values.agent.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
resources:
  {{- toYaml .Values.agent.resources | nindent 2 }}
securityContext:
  {{- toYaml .Values.agent.securityContext | nindent 2 }}
volumeMounts:
  {{- include "stint-agent.agentMounts" . | nindent 2 }}
{{- end }}

{{/* The renewing agent's ports and probes (a sidecar, or a native one). */}}
{{- define "stint-agent.agentProbes" -}}
ports:
  - name: agent-health
    containerPort: {{ int .Values.agent.healthPort }}
    protocol: TCP
{{- if .Values.agent.nativeSidecar }}
# The app's containers start once this passes: every grant fetched.
startupProbe:
  httpGet:
    path: /readyz
    port: agent-health
  periodSeconds: {{ int .Values.agent.startupProbe.periodSeconds }}
  timeoutSeconds: {{ int .Values.agent.startupProbe.timeoutSeconds }}
  failureThreshold: {{ int .Values.agent.startupProbe.failureThreshold }}
{{- end }}
livenessProbe:
  httpGet:
    path: /healthz
    port: agent-health
  periodSeconds: {{ int .Values.agent.livenessProbe.periodSeconds }}
  timeoutSeconds: {{ int .Values.agent.livenessProbe.timeoutSeconds }}
  failureThreshold: {{ int .Values.agent.livenessProbe.failureThreshold }}
readinessProbe:
  httpGet:
    path: /readyz
    port: agent-health
  periodSeconds: {{ int .Values.agent.readinessProbe.periodSeconds }}
  timeoutSeconds: {{ int .Values.agent.readinessProbe.timeoutSeconds }}
  failureThreshold: {{ int .Values.agent.readinessProbe.failureThreshold }}
{{- end }}
