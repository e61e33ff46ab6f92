{{/*
django-migration-hook: run a DjangoMigration before the app's Deployment is upgraded, and wait for it.

Usage, in a template of the app chart (values under .Values.migration):

    {{ include "django-migration-hook.migration" . }}

or with the values somewhere else:

    {{ include "django-migration-hook.migration" (dict "context" $ "values" .Values.db.migration) }}

It renders these hooks, in this order (Helm creates hooks by weight and waits only for Jobs):

    weight W-1  ServiceAccount, Role, RoleBinding <prefix>-migration-wait   get/list/watch of this run only
    weight W    DjangoMigration <prefix>-<revision>                          the run; the operator drives it
    weight W+1  Job <prefix>-migration-wait                                  python -m django_migration_operator.wait

W is hookWeight (default -10). The events are pre-upgrade plus, on install, post-install (default), pre-install or
none (onInstall). The Job exits 0 when the run Succeeded, 1 when it Failed, 2 on a timeout: Helm then fails the
upgrade before touching the Deployment, and prints the Job's output. See docs/helm-hook.md.
*/}}

{{- define "django-migration-hook.defaults" -}}
enabled: true
onInstall: post-install
namePrefix: ""
hookWeight: -10
labels: {}
annotations: {}
spec: {}
waiter:
  image:
    repository: django-migration-operator
    # The operator's version (this chart's appVersion): the waiter ships in the operator image.
    tag: "0.1.0"
    pullPolicy: IfNotPresent
  imagePullSecrets: []
  timeoutSeconds: 3600
  logs: [hook-succeeded, hook-failed]
  resources:
    requests: {cpu: 10m, memory: 64Mi}
    limits: {memory: 128Mi}
  podSecurityContext:
    runAsNonRoot: true
    runAsUser: 10001
    runAsGroup: 10001
    seccompProfile: {type: RuntimeDefault}
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    runAsNonRoot: true
    capabilities: {drop: [ALL]}
  nodeSelector: {}
  tolerations: []
  podAnnotations: {}
{{- end -}}

{{/* The values over the defaults, key by key (top level, waiter, waiter.image): a key the user sets wins as a
whole, even when false, 0, [] or {} (sprig's merge would fill "empty" values from the defaults). */}}
{{- define "django-migration-hook.values" -}}
{{- $defaults := fromYaml (include "django-migration-hook.defaults" .) -}}
{{- $given := deepCopy (. | default dict) -}}
{{- $image := deepCopy (dig "waiter" "image" dict $given) -}}
{{- range $key, $value := $defaults.waiter.image -}}
{{- if not (hasKey $image $key) -}}{{- $_ := set $image $key $value -}}{{- end -}}
{{- end -}}
{{- $waiter := deepCopy (get $given "waiter" | default dict) -}}
{{- range $key, $value := $defaults.waiter -}}
{{- if not (hasKey $waiter $key) -}}{{- $_ := set $waiter $key $value -}}{{- end -}}
{{- end -}}
{{- $_ := set $waiter "image" $image -}}
{{- range $key, $value := $defaults -}}
{{- if not (hasKey $given $key) -}}{{- $_ := set $given $key $value -}}{{- end -}}
{{- end -}}
{{- $_ := set $given "waiter" $waiter -}}
{{- toYaml $given -}}
{{- end -}}

{{- define "django-migration-hook.labels" -}}
app.kubernetes.io/name: {{ .top.Chart.Name | quote }}
app.kubernetes.io/instance: {{ .top.Release.Name | quote }}
app.kubernetes.io/managed-by: {{ .top.Release.Service | quote }}
app.kubernetes.io/component: migration
helm.sh/chart: {{ printf "%s-%s" .top.Chart.Name .top.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" | quote }}
{{- range $key, $value := .values.labels }}
{{ $key }}: {{ $value | quote }}
{{- end }}
{{- end -}}

{{- define "django-migration-hook.migration" -}}
{{- $top := . -}}
{{- $given := dict -}}
{{- if hasKey . "context" -}}
{{- $top = .context -}}
{{- $given = .values | default dict -}}
{{- else -}}
{{- $given = .Values.migration | default dict -}}
{{- end -}}
{{- $v := fromYaml (include "django-migration-hook.values" $given) -}}
{{- if $v.enabled -}}
{{- $events := "" -}}
{{- if eq $v.onInstall "post-install" -}}
{{- $events = "post-install,pre-upgrade" -}}
{{- else if eq $v.onInstall "pre-install" -}}
{{- $events = "pre-install,pre-upgrade" -}}
{{- else if eq $v.onInstall "none" -}}
{{- $events = "pre-upgrade" -}}
{{- else -}}
{{- fail (printf "migration.onInstall must be post-install, pre-install or none, not %q" (toString $v.onInstall)) -}}
{{- end -}}
{{- $weight := int $v.hookWeight -}}
{{- $prefix := $v.namePrefix | default $top.Release.Name | trunc 40 | trimSuffix "-" -}}
{{- $run := printf "%s-%d" $prefix (int $top.Release.Revision) -}}
{{- $waiterName := printf "%s-migration-wait" $prefix -}}
{{- $labels := include "django-migration-hook.labels" (dict "top" $top "values" $v) -}}
{{- /* The spec may use templates ("{{ .Values.image.tag }}"), rendered with the app chart's context. */ -}}
{{- $spec := fromYaml (tpl (toYaml ($v.spec | default dict)) $top) -}}
{{- $app := get $spec "app" | default dict -}}
{{- $_ := required "migration.spec.app.deployment is required: the name of the Django Deployment the run stops and whose pod template the migrate Job copies" (get $app "deployment") -}}
{{- $_ := required "migration.spec.app.image is required: the image of the release being installed, e.g. \"registry/shop:{{ .Values.image.tag }}\"; without it the run would plan with the image still running and miss the new migrations" (get $app "image") -}}
{{- $_ := required "migration.spec.database.urlSecret is required: {name, key} of the Secret key holding the postgres:// URL" (dig "database" "urlSecret" "" $spec) -}}
{{- $waiter := $v.waiter -}}
{{- $timeout := int $waiter.timeoutSeconds -}}
{{- if lt $timeout 1 -}}{{- fail "migration.waiter.timeoutSeconds must be at least 1" -}}{{- end -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $waiterName }}
  namespace: {{ $top.Release.Namespace }}
  labels:
    {{- $labels | nindent 4 }}
  annotations:
    helm.sh/hook: {{ $events }}
    helm.sh/hook-weight: {{ sub $weight 1 | quote }}
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
automountServiceAccountToken: false
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ $waiterName }}
  namespace: {{ $top.Release.Namespace }}
  labels:
    {{- $labels | nindent 4 }}
  annotations:
    helm.sh/hook: {{ $events }}
    helm.sh/hook-weight: {{ sub $weight 1 | quote }}
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
rules:
  # This run only: the API server authorises a list or watch with fieldSelector metadata.name=<run> by name.
  - apiGroups: [djangoops.dev]
    resources: [djangomigrations]
    resourceNames: [{{ $run | quote }}]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ $waiterName }}
  namespace: {{ $top.Release.Namespace }}
  labels:
    {{- $labels | nindent 4 }}
  annotations:
    helm.sh/hook: {{ $events }}
    helm.sh/hook-weight: {{ sub $weight 1 | quote }}
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ $waiterName }}
subjects:
  - kind: ServiceAccount
    name: {{ $waiterName }}
    namespace: {{ $top.Release.Namespace }}
---
# One run per release revision: `kubectl get djm -l app.kubernetes.io/instance={{ $top.Release.Name }}` is the
# migration history of the release. Helm never deletes it (a hook is not part of the release's manifest).
apiVersion: djangoops.dev/v1alpha1
kind: DjangoMigration
metadata:
  name: {{ $run }}
  namespace: {{ $top.Release.Namespace }}
  labels:
    {{- $labels | nindent 4 }}
    djangoops.dev/helm-revision: {{ $top.Release.Revision | quote }}
  annotations:
    helm.sh/hook: {{ $events }}
    helm.sh/hook-weight: {{ $weight | quote }}
    helm.sh/hook-delete-policy: before-hook-creation
    {{- with $v.annotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  {{- toYaml $spec | nindent 2 }}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ $waiterName }}
  namespace: {{ $top.Release.Namespace }}
  labels:
    {{- $labels | nindent 4 }}
  annotations:
    helm.sh/hook: {{ $events }}
    helm.sh/hook-weight: {{ add $weight 1 | quote }}
    # Kept after a failure, for `kubectl logs job/{{ $waiterName }}`; replaced by the next upgrade.
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
    {{- with $waiter.logs }}
    # Helm prints the waiter's output (the run's phases; on failure why and where the app and data are).
    helm.sh/hook-output-log-policy: {{ join "," . }}
    {{- end }}
spec:
  # Waiting twice is harmless, but a second pod would only hide the first one's answer.
  backoffLimit: 0
  # The waiter gives up on its own after timeoutSeconds (exit 2, with a message); this is the backstop.
  activeDeadlineSeconds: {{ add $timeout 30 }}
  template:
    metadata:
      labels:
        {{- $labels | nindent 8 }}
      {{- with $waiter.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ $waiterName }}
      automountServiceAccountToken: true
      restartPolicy: Never
      {{- with $waiter.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $waiter.podSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $waiter.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $waiter.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: wait
          image: {{ printf "%s:%s" $waiter.image.repository (toString $waiter.image.tag) | quote }}
          imagePullPolicy: {{ $waiter.image.pullPolicy }}
          command:
            - python
            - -m
            - django_migration_operator.wait
            - {{ $run | quote }}
            - --namespace
            - {{ $top.Release.Namespace | quote }}
            - --timeout
            - {{ $timeout | quote }}
          env:
            - name: PYTHONUNBUFFERED
              value: "1"
          {{- with $waiter.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $waiter.securityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
{{- end }}
{{- end -}}
