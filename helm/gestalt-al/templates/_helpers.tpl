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

{{/* Where every Ray pod finds the tokens file (auth.tokensSecret), and the file itself. */}}
{{- define "gestalt.authDir" -}}
/etc/gestalt-auth
{{- end -}}

{{- define "gestalt.authTokensFile" -}}
{{- printf "%s/%s" (include "gestalt.authDir" .) .Values.auth.tokensKey -}}
{{- end -}}

{{/* The TLS gateway (services/gateway.py) beside Serve's gRPC proxy in the head pod: the
     chart's own image, TLS (mTLS with tls.clientCA) on tls.port, plaintext to the proxy on
     the pod's loopback. It needs no Ray, no S3 credentials and no writable file system; it
     re-reads the mounted certificate files when their Secrets are rotated, and stops
     gracefully on SIGTERM. */}}
{{- define "gestalt.grpcGateway" -}}
{{- $tls := .Values.tls -}}
- name: grpc-gateway
  image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - python
    - -m
    - services.gateway
    - --listen
    - 0.0.0.0:{{ $tls.port }}
    - --upstream
    - 127.0.0.1:{{ .Values.grpcPort }}
    - --cert
    - /etc/grpc-tls/tls.crt
    - --key
    - /etc/grpc-tls/tls.key
    {{- if $tls.clientCA.secretName }}
    - --client-ca
    - /etc/grpc-client-ca/ca.crt
    {{- end }}
    - --max-message-bytes
    - {{ $tls.maxMessageBytes | int64 | quote }}
    - --max-concurrent-rpcs
    - {{ $tls.maxConcurrentRpcs | int64 | quote }}
  ports:
    - {name: grpc-tls, containerPort: {{ $tls.port }}}
  # TCP probes: a gRPC probe would need TLS (and, with mTLS, a client certificate). The
  # gateway listens as soon as its certificate is loaded; the Serve proxy behind it has
  # KubeRay's own probes.
  readinessProbe:
    tcpSocket: {port: grpc-tls}
    periodSeconds: 10
    timeoutSeconds: 2
    failureThreshold: 3
  livenessProbe:
    tcpSocket: {port: grpc-tls}
    initialDelaySeconds: 10
    periodSeconds: 20
    timeoutSeconds: 5
    failureThreshold: 3
  resources:
    {{- toYaml $tls.resources | nindent 4 }}
  securityContext:
    {{- include "gestalt.containerSecurityContext" . | nindent 4 }}
    readOnlyRootFilesystem: true
  volumeMounts:
    - {name: grpc-certificate, mountPath: /etc/grpc-tls, readOnly: true}
    {{- if $tls.clientCA.secretName }}
    - {name: grpc-client-ca, mountPath: /etc/grpc-client-ca, readOnly: true}
    {{- end }}
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
    {{- with $ctx.Values.auth }}{{ if .enabled }}
        - {name: auth-tokens, mountPath: {{ include "gestalt.authDir" $ctx }}, readOnly: true}
    {{- end }}{{ end }}
    {{- if and (eq $role "head") $ctx.Values.tls.enabled }}
    {{- include "gestalt.grpcGateway" $ctx | nindent 4 }}
    {{- end }}
  volumes:
    # Ray's object store lives in shared memory; the default 64 MiB /dev/shm is too small.
    - name: shm
      emptyDir: {medium: Memory}
    - name: tmp
      emptyDir: {}
    {{- with $ctx.Values.auth }}{{ if .enabled }}
    # Only the tokens key, and no subPath: the kubelet swaps the files in place when the
    # Secret changes, and the service re-reads them.
    - name: auth-tokens
      secret:
        secretName: {{ .tokensSecret }}
        items:
          - {key: {{ .tokensKey | quote }}, path: {{ .tokensKey | quote }}}
    {{- end }}{{ end }}
    {{- if and (eq $role "head") $ctx.Values.tls.enabled }}
    - name: grpc-certificate
      secret: {secretName: {{ $ctx.Values.tls.secretName }}}
    {{- with $ctx.Values.tls.clientCA }}{{ if .secretName }}
    # Only the CA certificate (a CA Secret of cert-manager also holds the CA's key).
    - name: grpc-client-ca
      secret:
        secretName: {{ .secretName }}
        items:
          - {key: {{ .key | quote }}, path: ca.crt}
    {{- end }}{{ end }}
    {{- end }}
{{- end -}}

{{/* deploy/serve_config.yaml (files/serve_config.yaml links to it: one Serve config for
     `serve run` and the cluster) with this release's storage, tokens file (auth.enabled),
     gRPC port, replicas and resources. Replicas and resources go into its `deployments:` entries, which Serve
     applies in place (a change of `args` would restart every replica). */}}
{{- define "gestalt.serveConfig" -}}
{{- $config := .Files.Get "files/serve_config.yaml" | fromYaml -}}
{{- $serve := .Values.serve -}}
{{- $_ := set $config.grpc_options "port" .Values.grpcPort -}}
{{- range $config.applications -}}
{{- $_ := set .args "storage" (printf "s3://%s/%s" $.Values.objectStore.bucket $.Values.objectStore.prefix) -}}
{{- if $.Values.auth.enabled -}}
{{- $_ := set .args "auth_tokens_file" (include "gestalt.authTokensFile" $) -}}
{{- end -}}
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
