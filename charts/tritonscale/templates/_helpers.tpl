{{/* The release's full name, within the 63 characters a name may have. */}}
{{- define "tritonscale.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; the operator's own carry its selector labels too. */}}
{{- define "tritonscale.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tritonscale
{{- end -}}

{{- define "tritonscale.labels" -}}
{{ include "tritonscale.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "tritonscale.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "tritonscale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tritonscale.fullname" .) .Values.serviceAccount.name -}}
{{- else if .Values.serviceAccount.name -}}
{{- .Values.serviceAccount.name -}}
{{- else if .Values.rbac.create -}}
{{- fail "serviceAccount.create=false with rbac.create needs serviceAccount.name: the operator's roles would be bound to the namespace's default ServiceAccount, and so to every pod in it" -}}
{{- else -}}
default
{{- end -}}
{{- end -}}
