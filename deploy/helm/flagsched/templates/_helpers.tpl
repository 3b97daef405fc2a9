{{/*
Names, labels and the pieces every flagsched pod shares. One home for each: the
settings every part reads (flagsched.env), the locked-down security context, the probe
of a /metrics endpoint that may listen on loopback only.
*/}}

{{- define "flagsched.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of one part: (dict "root" $ "part" "worker") */}}
{{- define "flagsched.labels" -}}
{{ include "flagsched.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "flagsched.selectorLabels" -}}
app.kubernetes.io/name: flagsched
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .part }}
{{- end -}}

{{- define "flagsched.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* The Secret of one part: (dict "root" $ "part" "worker") */}}
{{- define "flagsched.secretName" -}}
{{- $name := get .root.Values.secrets.names .part -}}
{{- $name | default (printf "%s-%s" (include "flagsched.fullname" .root) .part) -}}
{{- end -}}

{{/*
A retry tier's topic suffix, as flagsched.schemas.retry.tiers.tier_suffix writes it:
the largest of h, m, s that divides whole seconds, else whole milliseconds.
*/}}
{{- define "flagsched.tierSuffix" -}}
{{- $s := float64 . -}}
{{- if eq $s (floor $s) -}}
{{- $w := int64 $s -}}
{{- if eq (mod $w 3600) 0 -}}{{ div $w 3600 }}h
{{- else if eq (mod $w 60) 0 -}}{{ div $w 60 }}m
{{- else -}}{{ $w }}s{{- end -}}
{{- else -}}
{{- $ms := mulf $s 1000 -}}
{{- if ne $ms (floor $ms) -}}{{ fail "topics.retryTiersS: use whole milliseconds" }}{{- end -}}
{{ int64 $ms }}ms
{{- end -}}
{{- end -}}

{{/*
The environment of one flagsched container: (dict "root" $ "part" "worker" "user" "flagsched_worker").
"user" empty: the part does not use the database.
*/}}
{{- define "flagsched.env" -}}
{{- $v := .root.Values -}}
{{- $secret := include "flagsched.secretName" . -}}
- name: FLAGSCHED_KAFKA_BOOTSTRAP_SERVERS
  value: {{ $v.kafka.bootstrapServers | quote }}
- name: FLAGSCHED_KAFKA_SECURITY_PROTOCOL
  value: {{ $v.kafka.securityProtocol | quote }}
{{- if $v.kafka.sasl.mechanism }}
- name: FLAGSCHED_KAFKA_SASL_MECHANISM
  value: {{ $v.kafka.sasl.mechanism | quote }}
- name: FLAGSCHED_KAFKA_SASL_USERNAME
  value: {{ required "kafka.sasl.username is needed with a SASL mechanism" $v.kafka.sasl.username | quote }}
- name: FLAGSCHED_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: kafka-sasl-password
{{- end }}
{{- if $v.kafka.tls.secretName }}
- name: FLAGSCHED_KAFKA_SSL_CAFILE
  value: /etc/flagsched/kafka-tls/ca.crt
{{- if $v.kafka.tls.clientCertificate }}
- name: FLAGSCHED_KAFKA_SSL_CERTFILE
  value: /etc/flagsched/kafka-tls/tls.crt
- name: FLAGSCHED_KAFKA_SSL_KEYFILE
  value: /etc/flagsched/kafka-tls/tls.key
{{- end }}
{{- end }}
{{- if .user }}
{{- $query := printf "sslmode=%s" $v.database.sslmode -}}
{{- if $v.database.caSecretName }}{{ $query = printf "%s&sslrootcert=/etc/flagsched/db-tls/ca.crt" $query }}{{ end }}
# The password is not in the URL: libpq reads PGPASSWORD, from this part's Secret.
- name: FLAGSCHED_DATABASE_URL
  value: {{ printf "postgresql://%s@%s:%v/%s?%s" .user $v.database.host $v.database.port $v.database.name $query | quote }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: database-password
{{- end }}
- name: FLAGSCHED_TOPIC_PREFIX
  value: {{ $v.topics.prefix | quote }}
- name: FLAGSCHED_GROUP_ID
  value: {{ $v.topics.groupId | quote }}
- name: FLAGSCHED_DUE_PARTITIONS
  value: {{ $v.topics.duePartitions | quote }}
- name: FLAGSCHED_PRIORITY_PARTITIONS
  value: {{ $v.topics.priorityPartitions | quote }}
- name: FLAGSCHED_TIER_PARTITIONS
  value: {{ $v.topics.tierPartitions | quote }}
- name: FLAGSCHED_RETRY_TIERS_S
  value: {{ $v.topics.retryTiersS | toJson | quote }}
- name: FLAGSCHED_REPLICATION_FACTOR
  value: {{ $v.topics.replicationFactor | quote }}
- name: FLAGSCHED_TRACING
  value: {{ $v.tracing.mode | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "flagsched-%s" .part | quote }}
{{- if $v.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $v.tracing.otlpEndpoint | quote }}
{{- end }}
{{- if $v.tracing.resourceAttributes }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ $v.tracing.resourceAttributes | quote }}
{{- end }}
{{- $partEnv := dict -}}
{{- if hasKey $v .part }}{{ $partEnv = (get $v .part).env | default dict }}{{ end -}}
{{- range $name, $value := merge (deepCopy $partEnv) $v.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* The /metrics settings of a worker or dispatcher: (dict "root" $ "port" 9400) */}}
{{- define "flagsched.metricsEnv" -}}
- name: FLAGSCHED_METRICS_PORT
  value: {{ .port | quote }}
# Loopback unless metrics.expose: then the pod IP, which the NetworkPolicy opens to
# the monitoring namespace only.
- name: FLAGSCHED_METRICS_ADDR
  value: {{ ternary "0.0.0.0" "127.0.0.1" .root.Values.metrics.expose | quote }}
{{- end -}}

{{/*
Readiness and liveness of a worker or dispatcher: a GET of /metrics. On the pod IP when
metrics are exposed; otherwise from inside the container, because the kubelet's
httpGet cannot reach 127.0.0.1 of the pod. (dict "root" $ "port" 9400 "timeout" 5)
*/}}
{{- define "flagsched.metricsProbes" -}}
{{- $probe := "" -}}
{{- if .root.Values.metrics.expose -}}
{{- $probe = "httpGet:\n  path: /metrics\n  port: metrics" -}}
{{- else -}}
{{- $probe = printf "exec:\n  command: [\"python\", \"-c\", \"import urllib.request as u; u.urlopen('http://127.0.0.1:%v/metrics', timeout=%v).close()\"]" .port (sub .timeout 1) -}}
{{- end -}}
readinessProbe:
  {{- $probe | nindent 2 }}
  periodSeconds: 10
  timeoutSeconds: {{ .timeout }}
  failureThreshold: 3
livenessProbe:
  {{- $probe | nindent 2 }}
  initialDelaySeconds: 10
  periodSeconds: 20
  timeoutSeconds: {{ .timeout }}
  failureThreshold: 3
{{- end -}}

{{- define "flagsched.containerSecurityContext" -}}
securityContext:
  runAsNonRoot: true
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: ["ALL"]
{{- end -}}

{{/* Pod-level fields every flagsched pod shares. */}}
{{- define "flagsched.podCommon" -}}
automountServiceAccountToken: false
# No *_SERVICE_HOST / *_PORT variables: a Service named flagsched-... would put
# FLAGSCHED_* names into the settings' namespace.
enableServiceLinks: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "flagsched.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.tls.secretName }}
- name: kafka-tls
  mountPath: /etc/flagsched/kafka-tls
  readOnly: true
{{- end }}
{{- if .Values.database.caSecretName }}
- name: db-tls
  mountPath: /etc/flagsched/db-tls
  readOnly: true
{{- end }}
{{- end -}}

{{- define "flagsched.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.kafka.tls.secretName }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{- if .Values.database.caSecretName }}
- name: db-tls
  secret:
    secretName: {{ .Values.database.caSecretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/*
The setup Job's last step: run grants.sql with the image's psycopg (the image has no
psql). One string, so that the test can run exactly this against a real PostgreSQL.
*/}}
{{- define "flagsched.grantsScript" -}}
import os, psycopg; c = psycopg.connect(os.environ['FLAGSCHED_DATABASE_URL'], autocommit=True); c.execute(open('/etc/flagsched/sql/grants.sql').read()); c.close()
{{- end -}}

{{/* " + tier_1s + tier_5s ..." for the ScaledObject's formula; the argument is a list of tiers. */}}
{{- define "flagsched.tierTerms" -}}
{{- range . }} + tier_{{ include "flagsched.tierSuffix" . }}{{ end -}}
{{- end -}}

{{/* The metadata of one KEDA Kafka trigger: (dict "root" $ "group" G "topic" T) */}}
{{- define "flagsched.kedaKafka" -}}
{{- $a := .root.Values.worker.autoscaling -}}
bootstrapServers: {{ .root.Values.kafka.bootstrapServers | quote }}
consumerGroup: {{ .group | quote }}
topic: {{ .topic | quote }}
lagThreshold: {{ $a.lagPerWorker | quote }}
activationLagThreshold: "0"
offsetResetPolicy: earliest
allowIdleConsumers: "false"
{{- end -}}
