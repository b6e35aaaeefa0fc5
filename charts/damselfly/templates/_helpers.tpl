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
{{- $urls = append $urls (printf "http://%s-supernode-%d.%s-supernode-headless.%s.svc:%d" $full $i $full $.Release.Namespace (int $.Values.supernode.port)) -}}
{{- end -}}
{{- join "," $urls -}}
{{- end -}}
