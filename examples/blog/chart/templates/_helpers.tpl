{{- define "blog.labels" -}}
app.kubernetes.io/name: blog
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
{{- end -}}

{{- define "blog.selector" -}}
app.kubernetes.io/name: blog
app.kubernetes.io/instance: {{ .top.Release.Name | quote }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "blog.image" -}}
{{ printf "%s:%s" .Values.image.repository (toString .Values.image.tag) }}
{{- end -}}

{{/* The app's environment: the pod IP to bind to (pods share the host network on devcluster), the database. */}}
{{- define "blog.env" -}}
- name: POD_IP
  valueFrom:
    fieldRef: {fieldPath: status.podIP}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ .Values.database.secret }}, key: {{ .Values.database.key }}}
{{- with .Values.drills }}
- name: BLOG_DRILLS
  value: {{ . | quote }}
{{- end }}
{{- end -}}
