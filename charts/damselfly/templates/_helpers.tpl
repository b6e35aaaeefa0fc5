{{- define "damselfly.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "damselfly.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "damselfly.image" -}}
{{ .Values.image.registry }}/{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* Every supernode pod by its stable DNS name, for the dfdaemons' rendezvous hashing. */}}
{{- define "damselfly.supernodeUrls" -}}
{{- $full := include "damselfly.fullname" . -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.supernode.replicas) -}}
{{- $urls = append $urls (printf "%s://%s-supernode-%d.%s-supernode-headless.%s.svc:%d" (include "damselfly.scheme" $) $full $i $full $.Release.Namespace (int $.Values.supernode.port)) -}}
{{- end -}}
{{- join "," $urls -}}
{{- end -}}

{{/* "https" when the chart turns TLS on, else "http": every URL a daemon advertises or dials follows it. */}}
{{- define "damselfly.scheme" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end -}}
{{- end -}}

{{/*
Where both workloads find the cluster secret and the TLS files. Fixed paths, not values: the config files name
them, and an integration test starting real daemons from the rendered configs relies on them.
*/}}
{{- define "damselfly.clusterSecretDir" -}}/etc/damselfly/secret{{- end -}}
{{- define "damselfly.clusterSecretFile" -}}/etc/damselfly/secret/cluster-secret{{- end -}}
{{- define "damselfly.tlsDir" -}}/etc/damselfly/tls{{- end -}}

{{/* The Secret holding the cluster secret: the operator's own, or the one this chart creates. */}}
{{- define "damselfly.clusterSecretName" -}}
{{- .Values.clusterSecret.existingSecret | default (printf "%s-cluster-secret" (include "damselfly.fullname" .)) -}}
{{- end -}}

{{/*
The secret the chart creates: the value already in the cluster when there is one (so an upgrade does not split
running pods from new ones), else 48 random characters. Computed once per render and kept on .Values, because the
Secret and the pods' checksum annotation are separate templates and randAlphaNum gives a new value on each call.
*/}}
{{- define "damselfly.clusterSecretValue" -}}
{{- if not (hasKey .Values.clusterSecret "__rendered") -}}
{{- $value := "" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "damselfly.clusterSecretName" .) -}}
{{- if and $existing $existing.data (hasKey $existing.data .Values.clusterSecret.key) -}}
{{- $value = index $existing.data .Values.clusterSecret.key | b64dec -}}
{{- end -}}
{{- if lt (len $value) 16 -}}
{{- $value = randAlphaNum 48 -}}
{{- end -}}
{{- $_ := set .Values.clusterSecret "__rendered" $value -}}
{{- end -}}
{{- index .Values.clusterSecret "__rendered" -}}
{{- end -}}

{{/*
Pod annotation that changes with the cluster secret, so pods restart with the new one (the daemons read the file
at start-up). Empty for an operator's Secret that lookup cannot see (helm template, --dry-run, GitOps renderers):
then rolling the pods after rotating it is up to the operator.
*/}}
{{- define "damselfly.clusterSecretChecksum" -}}
{{- if .Values.clusterSecret.existingSecret -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace .Values.clusterSecret.existingSecret -}}
{{- if and $existing $existing.data (hasKey $existing.data .Values.clusterSecret.key) -}}
{{- index $existing.data .Values.clusterSecret.key | sha256sum | trunc 16 -}}
{{- end -}}
{{- else -}}
{{- include "damselfly.clusterSecretValue" . | sha256sum | trunc 16 -}}
{{- end -}}
{{- end -}}

{{/* tls.secretName, failing the render when TLS is on without it. */}}
{{- define "damselfly.tlsSecretName" -}}
{{- required "tls.enabled needs tls.secretName: a Secret with tls.crt, tls.key and ca.crt (e.g. from cert-manager)" .Values.tls.secretName -}}
{{- end -}}

{{/*
Config-file lines shared by the supernode and the dfdaemon: the cluster secret file and, with TLS, the certificate,
key and CA (the CA verifies the other side; with clientAuth every connection must present a certificate it signed).
*/}}
{{- define "damselfly.trustConfig" -}}
clusterSecretFile: {{ include "damselfly.clusterSecretFile" . }}
{{- if .Values.originTls.caFiles }}
originCaFiles:
{{- range $host, $key := .Values.originTls.caFiles }}
  {{ $host | quote }}: {{ printf "/etc/damselfly/origin-ca/%s" $key | quote }}
{{- end }}
{{- end }}
{{- with .Values.originTls.insecureHosts }}
originInsecureHosts: {{ . | toJson }}
{{- end }}
{{- if .Values.tls.enabled }}
tlsCert: {{ include "damselfly.tlsDir" . }}/tls.crt
tlsKey: {{ include "damselfly.tlsDir" . }}/tls.key
tlsCa: {{ include "damselfly.tlsDir" . }}/ca.crt
tlsClientAuth: {{ .Values.tls.clientAuth }}
{{- end }}
{{- end -}}

{{/* Volume mounts for the cluster secret and the TLS files; same in both workloads. */}}
{{- define "damselfly.trustVolumeMounts" -}}
- name: cluster-secret
  mountPath: {{ include "damselfly.clusterSecretDir" . }}
  readOnly: true
{{- if .Values.originTls.caConfigMap }}
- name: origin-ca
  mountPath: /etc/damselfly/origin-ca
  readOnly: true
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: {{ include "damselfly.tlsDir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{/*
The volumes behind them. Listing the keys (items) makes a Secret that lacks one fail the pod at mount time with the
key's name, instead of a daemon failing later on a missing file.
*/}}
{{- define "damselfly.trustVolumes" -}}
- name: cluster-secret
  secret:
    secretName: {{ include "damselfly.clusterSecretName" . }}
    defaultMode: 288  # 0440: the owner and the pod's fsGroup (set one to run as another user) read-only
    items:
      - key: {{ .Values.clusterSecret.key }}
        path: cluster-secret
{{- if .Values.originTls.caConfigMap }}
- name: origin-ca
  configMap:
    name: {{ .Values.originTls.caConfigMap }}
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "damselfly.tlsSecretName" . }}
    defaultMode: 288  # 0440: the owner and the pod's fsGroup (set one to run as another user) read-only
    items:
      - { key: tls.crt, path: tls.crt }
      - { key: tls.key, path: tls.key }
      - { key: ca.crt, path: ca.crt }
{{- end }}
{{- end -}}
