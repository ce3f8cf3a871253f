{{/* Names and labels shared by every template. */}}
{{- define "gestalt.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gestalt.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gestalt.labels" -}}
{{ include "gestalt.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The Secret holding the object store's accessKey and secretKey. */}}
{{- define "gestalt.storeSecret" -}}
{{- if .Values.objectStore.external.enabled -}}
{{- .Values.objectStore.external.existingSecret -}}
{{- else if .Values.minio.existingSecret -}}
{{- .Values.minio.existingSecret -}}
{{- else -}}
{{- printf "%s-minio" (include "gestalt.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "gestalt.storeEndpoint" -}}
{{- if .Values.objectStore.external.enabled -}}
{{- .Values.objectStore.external.endpoint -}}
{{- else -}}
{{- printf "%s-minio:9000" (include "gestalt.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Environment of every Ray container: the S3 endpoint and its credentials (from the
     Secret only), and writable caches for the non-root user. */}}
{{- define "gestalt.rayEnv" -}}
- name: GESTALT_S3_ENDPOINT
  value: {{ include "gestalt.storeEndpoint" . | quote }}
- name: GESTALT_S3_SECURE
  value: {{ ternary "1" "0" (and .Values.objectStore.external.enabled .Values.objectStore.external.secure) | quote }}
- name: GESTALT_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ include "gestalt.storeSecret" . }}, key: accessKey}
- name: GESTALT_S3_SECRET_KEY
  valueFrom:
    secretKeyRef: {name: {{ include "gestalt.storeSecret" . }}, key: secretKey}
- name: RAY_USAGE_STATS_ENABLED
  value: "0"
{{- end -}}

{{- define "gestalt.containerSecurityContext" -}}
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
{{- end -}}

{{/* A Ray pod template: $ctx is the root context, $group the group's values, $role
     head / cpu-worker / gpu-worker, $ports extra container ports. */}}
{{- define "gestalt.rayPod" -}}
{{- $ctx := index . 0 -}}{{- $group := index . 1 -}}{{- $role := index . 2 -}}
metadata:
  labels:
    {{- include "gestalt.labels" $ctx | nindent 4 }}
    app.kubernetes.io/component: {{ $role }}
spec:
  {{- with $ctx.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $ctx.Values.podSecurityContext | nindent 4 }}
  {{- with $group.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $group.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $group.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: ray-{{ $role }}
      image: "{{ $ctx.Values.image.repository }}:{{ ternary $ctx.Values.image.gpuTag $ctx.Values.image.tag (eq $role "gpu-worker") }}"
      imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
      env:
        {{- include "gestalt.rayEnv" $ctx | nindent 8 }}
      ports:
        - {name: metrics, containerPort: 8080}
        {{- if eq $role "head" }}
        - {name: gcs-server, containerPort: 6379}
        - {name: dashboard, containerPort: 8265}
        - {name: client, containerPort: 10001}
        - {name: serve, containerPort: 8000}
        - {name: grpc, containerPort: {{ $ctx.Values.grpcPort }}}
        {{- end }}
      resources:
        {{- $resources := deepCopy $group.resources }}
        {{- if eq $role "gpu-worker" }}
        {{- $_ := set $resources.limits "nvidia.com/gpu" $group.gpusPerWorker }}
        {{- $_ := set $resources.requests "nvidia.com/gpu" $group.gpusPerWorker }}
        {{- end }}
        {{- toYaml $resources | nindent 8 }}
      securityContext:
        {{- include "gestalt.containerSecurityContext" $ctx | nindent 8 }}
      volumeMounts:
        - {name: shm, mountPath: /dev/shm}
        - {name: tmp, mountPath: /tmp}
    {{- if and (eq $role "head") $ctx.Values.tls.enabled }}
    - name: grpc-tls
      image: {{ $ctx.Values.tls.envoyImage }}
      args: ["--config-path", "/etc/envoy/envoy.yaml", "--log-level", "warn"]
      ports:
        - {name: grpc-tls, containerPort: {{ $ctx.Values.tls.port }}}
      resources:
        requests: {cpu: 100m, memory: 128Mi}
        limits: {cpu: 500m, memory: 256Mi}
      securityContext:
        {{- include "gestalt.containerSecurityContext" $ctx | nindent 8 }}
        readOnlyRootFilesystem: true
      volumeMounts:
        - {name: envoy-config, mountPath: /etc/envoy, readOnly: true}
        - {name: grpc-certificate, mountPath: /etc/grpc-tls, readOnly: true}
    {{- end }}
  volumes:
    # Ray's object store lives in shared memory; the default 64 MiB /dev/shm is too small.
    - name: shm
      emptyDir: {medium: Memory}
    - name: tmp
      emptyDir: {}
    {{- if and (eq $role "head") $ctx.Values.tls.enabled }}
    - name: envoy-config
      configMap: {name: {{ include "gestalt.fullname" $ctx }}-grpc-tls}
    - name: grpc-certificate
      secret: {secretName: {{ $ctx.Values.tls.secretName }}}
    {{- end }}
{{- end -}}

{{/* deploy/serve_config.yaml (files/serve_config.yaml links to it: one Serve config for
     `serve run` and the cluster) with this release's storage, gRPC port, replicas and
     resources. Replicas and resources go into its `deployments:` entries, which Serve
     applies in place (a change of `args` would restart every replica). */}}
{{- define "gestalt.serveConfig" -}}
{{- $config := .Files.Get "files/serve_config.yaml" | fromYaml -}}
{{- $serve := .Values.serve -}}
{{- $_ := set $config.grpc_options "port" .Values.grpcPort -}}
{{- range $config.applications -}}
{{- $_ := set .args "storage" (printf "s3://%s/%s" $.Values.objectStore.bucket $.Values.objectStore.prefix) -}}
{{- range .deployments -}}
{{- if eq .name "SaliencyLatents" -}}
{{- $_ := set .autoscaling_config "min_replicas" $serve.latentReplicas.min -}}
{{- $_ := set .autoscaling_config "max_replicas" $serve.latentReplicas.max -}}
{{- $_ := set .ray_actor_options "num_cpus" $serve.cpusPerReplica -}}
{{- $_ := set .ray_actor_options "num_gpus" $serve.gpusPerReplica -}}
{{- else if eq .name "DiscriminatorScores" -}}
{{- $_ := set . "num_replicas" $serve.samplerReplicas -}}
{{- $_ := set .ray_actor_options "num_cpus" (divf $serve.cpusPerReplica 2) -}}
{{- $_ := set .ray_actor_options "num_gpus" $serve.gpusPerReplica -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}
