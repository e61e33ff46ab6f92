{{/* The chart's name, or nameOverride. */}}
{{- define "django-migration-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the prefix of every object, cluster-scoped ones included. */}}
{{- define "django-migration-operator.fullname" -}}
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

{{- define "django-migration-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "django-migration-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "django-migration-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "django-migration-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: django-migration-operator
{{- end }}

{{- define "django-migration-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "django-migration-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "django-migration-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
What the operator does in a namespace where it runs DjangoMigrations, call by call
(operator/django_migration_operator/kube.py and the kopf handlers of handlers.py); nothing more.
tests/packaging/test_chart.py derives the same list from those files and fails when the two differ.
*/}}
{{- define "django-migration-operator.runRules" -}}
# The runs: kopf watches them and keeps its finalizer and annotations on them (patch); the driver reads them
# and writes their status.
- apiGroups: [djangoops.dev]
  resources: [djangomigrations]
  verbs: [get, list, watch, patch]
- apiGroups: [djangoops.dev]
  resources: [djangomigrations/status]
  verbs: [patch]
# The Jobs are created with an owner reference that blocks the run's deletion (blockOwnerDeletion); clusters
# with the OwnerReferencesPermissionEnforcement admission plugin (OpenShift) require this to set it.
- apiGroups: [djangoops.dev]
  resources: [djangomigrations/finalizers]
  verbs: [update]
# The app: read and watched while scaling; scaled through the scale subresource, and patched only when a run
# with app.image starts it on the release image (replicas and the app containers' images, nothing else).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, patch]
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [patch]
# The app's and the Jobs' pods: watched while scaling, the Jobs' logs read for the plan and the migrate output.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
# The plan, backup, migrate and restore Jobs; they go with the run through their owner reference. Deleted only
# when a step's pod did not start in time (jobTemplate.startTimeoutSeconds), so that it never starts late.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]
# The backup claim (spec.backup.volumeClaim), read by name before anything stops: it must exist.
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get]
# The database URL (spec.database.urlSecret), read by name only: no list, no watch of the namespace's Secrets.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# Events on the runs (the driver's and kopf's warnings).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/*
One run per database: the coordination Leases, all in the operator's own namespace (--lease-namespace), so that
runs in different namespaces that share a database wait for each other too.
*/}}
{{- define "django-migration-operator.leaseRules" -}}
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, list, create, update, delete]
{{- end }}
