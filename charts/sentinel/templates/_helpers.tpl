{{/*
The chart's name, cut to 63 characters (a Kubernetes label value's limit).
*/}}
{{- define "sentinel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: "<release>-<chart>" unless the release name already
contains the chart name. Cut to 63 characters because object names that end
up as DNS labels (Service) and label values may not be longer.
*/}}
{{- define "sentinel.fullname" -}}
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

{{/*
"<chart>-<version>" for the helm.sh/chart label ("+" is not allowed in labels).
*/}}
{{- define "sentinel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: what the Deployment, the Service and the ServiceMonitor select
on. Kept apart from "sentinel.labels" because a Deployment's selector is
immutable: these never carry the chart or app version, so an upgrade never
needs the Deployment deleted.
*/}}
{{- define "sentinel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sentinel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels on every object except the helm-test pod (see "sentinel.testLabels").
*/}}
{{- define "sentinel.labels" -}}
{{ include "sentinel.commonLabels" . }}
{{ include "sentinel.selectorLabels" . }}
{{- end }}

{{/*
Labels that identify the release but select nothing.
*/}}
{{- define "sentinel.commonLabels" -}}
helm.sh/chart: {{ include "sentinel.chart" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sentinel
{{- end }}

{{/*
The helm-test pod must not carry both selector labels: the Deployment's
ReplicaSet would adopt it (it has no owner) and the Service would route to it.
*/}}
{{- define "sentinel.testLabels" -}}
{{ include "sentinel.commonLabels" . }}
app.kubernetes.io/name: {{ printf "%s-test" (include "sentinel.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: test
{{- end }}

{{/*
The ServiceAccount the pod runs as.
*/}}
{{- define "sentinel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sentinel.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Sentinel's image reference; the tag defaults to the chart's appVersion, a
digest (if set) pins it.
*/}}
{{- define "sentinel.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
The workload's image in sidecar mode; the Sentinel image (which ships the
leak demo) unless workload.image.repository is set.
*/}}
{{- define "sentinel.workloadImage" -}}
{{- if .Values.workload.image.repository }}
{{- printf "%s:%s" .Values.workload.image.repository (.Values.workload.image.tag | default "latest" | toString) }}
{{- else }}
{{- include "sentinel.image" . }}
{{- end }}
{{- end }}

{{/*
Where the control socket lives: on the shared emptyDir, so that the workload
(sidecar mode) and `kubectl exec` reach it.
*/}}
{{- define "sentinel.socketPath" -}}
{{- printf "%s/sentinel.socket" (.Values.sharedVolume.mountPath | trimSuffix "/") }}
{{- end }}

{{/*
A Sentinel duration ("3s", "250ms", "1.5", "2m", "1h") in seconds, as a
string holding a float. The schema has already checked the grammar.
*/}}
{{- define "sentinel.durationSeconds" -}}
{{- $text := . | toString | trim }}
{{- $number := regexFind "^([0-9]+(\\.[0-9]*)?|\\.[0-9]+)" $text }}
{{- $unit := trimPrefix $number $text | trim }}
{{- $factors := dict "us" 0.000001 "ms" 0.001 "s" 1.0 "" 1.0 "m" 60.0 "h" 3600.0 }}
{{- mulf (float64 $number) (get $factors $unit) }}
{{- end }}

{{/*
A Sentinel size (sentinel/config.py parse_size: "200Mi", "1.5Gi", "512M",
"512m" = 512 MiB as Docker means it, "1048576") in bytes, as a string holding
a float. The schema has already checked the grammar.
*/}}
{{- define "sentinel.sizeBytes" -}}
{{- $text := . | toString | trim }}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $text }}
{{- $unit := trimPrefix $number $text | trim }}
{{- $factors := dict "" 1.0 "b" 1.0 "B" 1.0
      "k" 1e3 "K" 1e3 "kB" 1e3 "KB" 1e3 "M" 1e6 "MB" 1e6 "G" 1e9 "GB" 1e9
      "T" 1e12 "TB" 1e12 "P" 1e15 "PB" 1e15
      "Ki" 1024.0 "KiB" 1024.0 "kiB" 1024.0 "kb" 1024.0
      "Mi" 1048576.0 "MiB" 1048576.0 "m" 1048576.0 "mb" 1048576.0
      "Gi" 1073741824.0 "GiB" 1073741824.0 "g" 1073741824.0 "gb" 1073741824.0
      "Ti" 1099511627776.0 "TiB" 1099511627776.0 "t" 1099511627776.0 "tb" 1099511627776.0
      "Pi" 1125899906842624.0 "PiB" 1125899906842624.0 }}
{{- mulf (float64 $number) (get $factors $unit) }}
{{- end }}

{{/*
A Kubernetes quantity ("512Mi", "1G", "1e9", "0.5Gi", a YAML number) in base
units, as a string holding a float (k8s.io/apimachinery resource.Quantity:
binary suffixes Ki..Ei, decimal m k M G T P E, or an exponent eN/EN).
*/}}
{{- define "sentinel.quantityBytes" -}}
{{- $text := . | toString | trim }}
{{- $number := regexFind "^[+-]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)" $text }}
{{- $suffix := trimPrefix $number $text }}
{{- $factors := dict "" 1.0 "m" 0.001 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18
      "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0
      "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 }}
{{- $value := float64 $number }}
{{- if hasKey $factors $suffix }}
{{- $value = mulf $value (get $factors $suffix) }}
{{- else }}
{{- $exp := int (trimPrefix "+" (substr 1 (len $suffix) $suffix)) }}
{{- range until (int (ternary $exp (mul -1 $exp) (ge $exp 0))) }}
{{- $value = ternary (mulf $value 10) (divf $value 10) (ge $exp 0) }}
{{- end }}
{{- end }}
{{- $value }}
{{- end }}

{{/*
Sentinel's own resident memory in MiB, as the limits check counts it: the
interpreter, asyncio, the control socket and the Prometheus exporter measure
about 30 MiB (22 MiB with the exporter off); the kubernetes client that posts
Events adds about 24 MiB (measured with `sentinel run` on CPython 3.11).
Rounded up: 32 MiB, or 56 MiB when Events are not off.
*/}}
{{- define "sentinel.footprintMiB" -}}
{{- ternary 32 56 (eq (include "sentinel.k8sEvents" .) "off") }}
{{- end }}

{{/*
The effective sentinel.maxRss and sentinel.measure. null (the default) means the
mode's default: in wrapper mode with workload.resources.limits.memory, "auto" on
"working-set" (90 % of the container's limit, on what the kubelet evicts on and
close to what the kernel's OOM killer judges: Sentinel stops the workload before
either does); otherwise (no limit to take a share of, or a sidecar, which cannot
see the workload's cgroup) "200Mi" on "rss". Argument: the root context.
*/}}
{{- define "sentinel.kernelDefaults" -}}
{{- if and (eq .Values.mode "wrapper") (dig "limits" "memory" "" (.Values.workload.resources | default dict)) }}true{{ end }}
{{- end }}

{{- define "sentinel.maxRss" -}}
{{- $v := .Values.sentinel.maxRss }}
{{- if kindIs "invalid" $v }}{{ ternary "auto" "200Mi" (eq (include "sentinel.kernelDefaults" .) "true") }}{{ else }}{{ $v | toString }}{{ end }}
{{- end }}

{{- define "sentinel.measure" -}}
{{- $v := .Values.sentinel.measure }}
{{- if kindIs "invalid" $v }}{{ ternary "working-set" "rss" (eq (include "sentinel.kernelDefaults" .) "true") }}{{ else }}{{ $v }}{{ end }}
{{- end }}

{{/*
Checks that the schema cannot express; each fails the render with the fix.
*/}}
{{- define "sentinel.validate" -}}
{{- if .Values.programs }}
{{- include "sentinel.validatePrograms" . }}
{{- end }}
{{- if and (eq .Values.mode "wrapper") (not .Values.workload.command) (not .Values.programs) }}
{{- fail "mode: wrapper needs workload.command (or programs): Sentinel runs `sentinel run -- <workload.command>`" }}
{{- end }}
{{- if eq .Values.mode "sidecar" }}
{{- if eq .Values.workload.name "sentinel" }}
{{- fail "workload.name: \"sentinel\" is the Sentinel container's name in mode: sidecar; pick another name" }}
{{- end }}
{{- $t := .Values.sidecar.target }}
{{- $set := 0 }}
{{- if $t.name }}{{ $set = add1 $set }}{{ end }}
{{- if $t.cmdline }}{{ $set = add1 $set }}{{ end }}
{{- if $t.pid }}{{ $set = add1 $set }}{{ end }}
{{- if ne $set 1 }}
{{- fail "mode: sidecar needs exactly one of sidecar.target.name, sidecar.target.cmdline or sidecar.target.pid, so that `sentinel watch` knows which process to guard" }}
{{- end }}
{{- if has (include "sentinel.measure" .) (list "cgroup" "working-set") }}
{{- fail (printf "sentinel.measure: %s does not work in mode: sidecar: the sidecar sees its own container's cgroup, not the workload's; use rss, pss or uss, or mode: wrapper" (include "sentinel.measure" .)) }}
{{- end }}
{{- if regexMatch "^ *(?i:auto)" (include "sentinel.maxRss" .) }}
{{- fail "sentinel.maxRss: auto does not work in mode: sidecar yet (Sentinel resolves it against its own container's limit); give a size, or use mode: wrapper" }}
{{- end }}
{{- end }}
{{- range .Values.workload.ports }}
{{- if eq (int .containerPort) (int $.Values.sentinel.metrics.port) }}
{{- fail (printf "workload.ports: port %v is sentinel.metrics.port, where Sentinel's exporter listens (every container of a pod shares its network): give the workload another port or move sentinel.metrics.port" .containerPort) }}
{{- end }}
{{- end }}
{{- $s := merge (dict "maxRss" (include "sentinel.maxRss" .) "measure" (include "sentinel.measure" .)) (omit .Values.sentinel "maxRss" "measure") }}
{{- $interval := include "sentinel.durationSeconds" $s.interval | float64 }}
{{- if or (lt $interval 0.001) (gt $interval 60.0) }}
{{- fail (printf "sentinel.interval: %v is outside Sentinel's range of 1ms to 60s; use e.g. 100ms" $s.interval) }}
{{- end }}
{{- if gt (include "sentinel.durationSeconds" $s.gracePeriod | float64) 31536000.0 }}
{{- fail (printf "sentinel.gracePeriod: %v is longer than a year, which Sentinel refuses; use e.g. 3s or 1m" $s.gracePeriod) }}
{{- end }}
{{- /* With programs, their own checks (sentinel.validatePrograms) replace these. */}}
{{- $auto := and (not .Values.programs) (regexMatch "^ *(?i:auto)" ($s.maxRss | toString)) }}
{{- if and $auto (eq .Values.mode "wrapper") (not (dig "limits" "memory" "" (.Values.workload.resources | default dict))) }}
{{- fail (printf "sentinel.maxRss: %s is a share of the container's memory limit, and workload.resources.limits.memory is not set: Sentinel would refuse to start; set workload.resources.limits.memory or give maxRss a size" $s.maxRss) }}
{{- end }}
{{- if and $auto (has $s.measure (list "cgroup" "working-set")) (ge (regexFind "[0-9.]+" ($s.maxRss | toString) | float64) 100.0) }}
{{- fail (printf "sentinel.maxRss: %s with measure: %s puts Sentinel's limit at the kernel's own, which OOM-kills the workload before Sentinel can stop it: Sentinel would refuse to start; use a share below 100 %% (auto is 90 %%)" $s.maxRss $s.measure) }}
{{- end }}
{{- if and $s.maxRss (not $auto) (not .Values.programs) }}
{{- $maxRss := include "sentinel.sizeBytes" $s.maxRss | float64 }}
{{- if lt $maxRss 64000.0 }}
{{- fail (printf "sentinel.maxRss: %q is %.0f bytes, below Sentinel's 64k floor (a missing unit? e.g. %sMi): it would kill the workload at once" $s.maxRss (ceil $maxRss) (regexFind "^[0-9.]+" ($s.maxRss | toString | trim))) }}
{{- end }}
{{- if gt $maxRss 9223372036854775807.0 }}
{{- fail (printf "sentinel.maxRss: %q is larger than 2^63-1 bytes, which Sentinel refuses; use e.g. 200Mi or 1.5Gi" $s.maxRss) }}
{{- end }}
{{- $footprint := include "sentinel.footprintMiB" . | int }}
{{- $workloadMemory := dig "limits" "memory" "" (.Values.workload.resources | default dict) }}
{{- if $workloadMemory }}
{{- $memory := include "sentinel.quantityBytes" $workloadMemory | float64 }}
{{- $ownMiB := 0 }}
{{- $own := "" }}
{{- if and (eq .Values.mode "wrapper") (not (has $s.measure (list "cgroup" "working-set"))) }}
{{- $ownMiB = $footprint }}
{{- $own = printf " plus Sentinel's own memory in the same container (%d MiB%s)" $footprint (ternary "" " with the Events client" (eq $footprint 32)) }}
{{- end }}
{{- $needed := addf $maxRss (mulf $ownMiB 1048576.0) }}
{{- if le $memory $needed }}
{{- fail (printf "workload.resources.limits.memory (%v) must be above sentinel.maxRss (%v)%s: else the kernel's OOM killer stops the workload before Sentinel does, and no kill is recorded; raise limits.memory to at least %dMi or lower sentinel.maxRss" $workloadMemory $s.maxRss $own (add1 (int (ceil (divf $needed 1048576.0))))) }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq .Values.mode "sidecar" }}
{{- $sentinelMemory := dig "limits" "memory" "" (.Values.sentinel.resources | default dict) }}
{{- if $sentinelMemory }}
{{- $footprint := include "sentinel.footprintMiB" . | int }}
{{- if lt (include "sentinel.quantityBytes" $sentinelMemory | float64) (mulf $footprint 1048576.0) }}
{{- fail (printf "sentinel.resources.limits.memory (%v) is below Sentinel's own footprint (%d MiB%s): the kernel would OOM-kill Sentinel; set at least %dMi" $sentinelMemory $footprint (ternary "" " with the Events client" (eq $footprint 32)) $footprint) }}
{{- end }}
{{- end }}
{{- end }}
{{- $grace := include "sentinel.durationSeconds" .Values.sentinel.gracePeriod | float64 }}
{{- if lt (float64 .Values.terminationGracePeriodSeconds) (addf $grace 1) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be at least sentinel.gracePeriod (%s) plus 1 s: a memory kill under way at pod deletion (SIGTERM, the grace period, SIGKILL) must finish, and be reported, before the kubelet SIGKILLs everything when terminationGracePeriodSeconds runs out" .Values.terminationGracePeriodSeconds .Values.sentinel.gracePeriod) }}
{{- end }}
{{- end }}

{{/*
Sentinel's settings as SENTINEL_* variables plus the downward API that names
the pod in Kubernetes Events. Argument: the root context.
*/}}
{{- define "sentinel.env" -}}
{{- $s := merge (dict "maxRss" (include "sentinel.maxRss" .) "measure" (include "sentinel.measure" .)) (omit .Values.sentinel "maxRss" "measure") -}}
{{- /* With programs, the program options are the programs file's settings:
(sentinel.programsSettings) and each program names itself. */}}
{{- if not .Values.programs -}}
- name: SENTINEL_WORKLOAD_NAME
  value: {{ .Values.workload.name | quote }}
{{- if $s.maxRss }}
- name: SENTINEL_MAX_RSS
  value: {{ $s.maxRss | toString | quote }}
{{- end }}
- name: SENTINEL_MEASURE
  value: {{ $s.measure | quote }}
- name: SENTINEL_INTERVAL
  value: {{ $s.interval | toString | quote }}
- name: SENTINEL_GRACE_PERIOD
  value: {{ $s.gracePeriod | toString | quote }}
{{- if eq .Values.mode "wrapper" }}
- name: SENTINEL_RESTART
  value: {{ $s.restart | quote }}
{{- end }}
{{ end -}}
- name: SENTINEL_LOG_FORMAT
  value: {{ $s.logFormat | quote }}
- name: SENTINEL_LOG_LEVEL
  value: {{ $s.logLevel | quote }}
- name: SENTINEL_METRICS_ADDRESS
  value: {{ $s.metrics.address | quote }}
- name: SENTINEL_METRICS_PORT
  value: {{ $s.metrics.port | toString | quote }}
- name: SENTINEL_SOCKET
  value: {{ include "sentinel.socketPath" . | quote }}
- name: SENTINEL_SOCKET_MODE
  value: {{ $s.socketMode | toString | quote }}
- name: SENTINEL_K8S_EVENTS
  value: {{ include "sentinel.k8sEvents" . | quote }}
- name: SENTINEL_TERMINATION_LOG
  value: {{ $s.terminationLog | quote }}
{{- if ne (include "sentinel.probe" .) "poll" }}
# probe: the eBPF memory probe (the container has the rights: sentinel.securityContext).
- name: SENTINEL_PROBE
  value: {{ include "sentinel.probe" . | quote }}
{{- end }}
# The pod's counters (kills, restarts, last kill) outlive a container restart
# on the shared emptyDir, which lives as long as the pod: the next container's
# sentinel_kills_total goes on from there instead of from zero.
- name: SENTINEL_STATE_DIR
  value: {{ .Values.sharedVolume.mountPath | quote }}
{{- if eq .Values.mode "sidecar" }}
{{- with .Values.sidecar.target }}
{{- if .name }}
- name: SENTINEL_TARGET_NAME
  value: {{ .name | quote }}
{{- end }}
{{- if .cmdline }}
- name: SENTINEL_TARGET_CMDLINE
  value: {{ .cmdline | quote }}
{{- end }}
{{- if .pid }}
- name: SENTINEL_TARGET_PID
  value: {{ .pid | toString | quote }}
{{- end }}
{{- end }}
{{- end }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_UID
  valueFrom:
    fieldRef:
      fieldPath: metadata.uid
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
{{- with $s.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Probes of the container that runs Sentinel.
- readiness: HTTP GET /metrics on the exporter's port *number* (a named port
  of a native sidecar, an init container, does not resolve everywhere before
  Kubernetes 1.33); it is what a scrape needs.
- liveness, wrapper mode: the same GET. Sentinel binds the metrics port before
  it spawns the workload, so the workload cannot hold it first. Cheaper than an
  exec (no process is started, which the cgroup measure would count).
- liveness, sidecar mode: the workload shares the pod's network namespace and
  may hold that port first (the GET would then ask the workload, and a dead
  Sentinel would pass), so it asks Sentinel's control socket instead:
  files/liveness.py under `python3 -I -S`: about 17 ms of CPU and 11 MB for the
  length of one probe, every periodSeconds (1.7 ms/s at the default 10 s, under
  2 % of a 100m CPU limit; `sentinel status` would cost 140 ms and 33 MB).
*/}}
{{- define "sentinel.probes" -}}
{{- $probes := dict }}
{{- range $kind := list "liveness" "readiness" }}
{{- $p := get $.Values.probes $kind }}
{{- if $p.enabled }}
{{- $probe := dict "httpGet" (dict "path" "/metrics" "port" (int $.Values.sentinel.metrics.port)) }}
{{- if and (eq $kind "liveness") (eq $.Values.mode "sidecar") }}
{{- $script := $.Files.Get "files/liveness.py" }}
{{- if not $script }}
{{- fail "files/liveness.py is missing from the chart: it is the sidecar's liveness probe" }}
{{- end }}
{{- $probe = dict "exec" (dict "command" (list "python3" "-I" "-S" "-c" $script (include "sentinel.socketPath" $) (toString $p.timeoutSeconds))) }}
{{- end }}
{{- range $field := list "initialDelaySeconds" "periodSeconds" "timeoutSeconds" "failureThreshold" }}
{{- $_ := set $probe $field (get $p $field) }}
{{- end }}
{{- $_ := set $probes (printf "%sProbe" $kind) $probe }}
{{- end }}
{{- end }}
{{- with $probes }}{{ toYaml . }}{{ end }}
{{- end }}

{{/*
The container port of Sentinel's exporter.
*/}}
{{- define "sentinel.metricsPort" -}}
- name: metrics
  containerPort: {{ .Values.sentinel.metrics.port }}
  protocol: TCP
{{- end }}

{{/*
Mounts of every container: the shared emptyDir that holds the control socket,
and a writable /tmp (the root filesystem is read-only).
*/}}
{{- define "sentinel.volumeMounts" -}}
- name: shared
  mountPath: {{ .Values.sharedVolume.mountPath }}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/*
The Sentinel container of sidecar mode, running `sentinel watch`.
Argument: dict "root" (the root context) "native" (true: an init container
with restartPolicy: Always; false: a plain container).
*/}}
{{- define "sentinel.sidecarContainer" -}}
{{- with .root -}}
- name: sentinel
  image: {{ include "sentinel.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command: ["sentinel", "watch"]
  {{- if $.native }}
  restartPolicy: Always
  {{- end }}
  env:
    {{- include "sentinel.env" . | nindent 4 }}
  ports:
    {{- include "sentinel.metricsPort" . | nindent 4 }}
  {{- with include "sentinel.probes" . }}
  {{- . | nindent 2 }}
  {{- end }}
  terminationMessagePath: {{ .Values.sentinel.terminationLog }}
  terminationMessagePolicy: FallbackToLogsOnError
  {{- with .Values.sentinel.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- include "sentinel.securityContext" (dict "root" . "override" .Values.sentinel.securityContext "sentinel" true) | nindent 4 }}
  volumeMounts:
    {{- include "sentinel.volumeMounts" . | nindent 4 }}
    {{- if ne (include "sentinel.k8sEvents" .) "off" }}
    # The pod does not automount the token (the workload would get it too):
    # this container alone mounts it, at the path the kubernetes client reads.
    - name: sentinel-api-token
      mountPath: /var/run/secrets/kubernetes.io/serviceaccount
      readOnly: true
    {{- end }}
{{- end }}
{{- end }}

{{/*
The value probe ("poll", "ebpf" or "auto"); a values file of an older chart has none.
*/}}
{{- define "sentinel.probe" -}}
{{- .Values.probe | default "poll" }}
{{- end }}

{{/*
A container's securityContext: containerSecurityContext with "override" (the
container's own value) merged over it. Argument: dict "root" (the root context)
"override" (a dict) "sentinel" (true for the container that runs Sentinel).
With probe ebpf or auto, the container that runs Sentinel gets exactly what loading
the eBPF probe needs (README: "eBPF probe"; nothing changes with probe: poll):
- capabilities.add BPF and PERFMON (bpf(2) for the maps and programs, perf events
  for the tp_btf attach), added to the container's own adds; drop ALL stays;
- probeSeccompProfile (Unconfined unless a Localhost profile is given): a runtime's
  default profile may refuse bpf(2) even with the capabilities (podman's does);
- runAsUser 0 and runAsNonRoot false: Kubernetes gives added capabilities to root
  processes only (no ambient capabilities: kubernetes/kubernetes#56374), so UID
  10001 would hold none of them;
- in sidecar mode also KILL (root may not signal the workload's UID without it),
  and SYS_PTRACE with measure pss or uss (reading its smaps_rollup).
allowPrivilegeEscalation and readOnlyRootFilesystem stay as they are; the kernel's
BTF (/sys/kernel/btf/vmlinux) is readable through the container's default read-only
/sys, so no mount is added.
*/}}
{{- define "sentinel.securityContext" -}}
{{- $root := .root }}
{{- $sc := mergeOverwrite (deepCopy $root.Values.containerSecurityContext) (deepCopy (.override | default dict)) }}
{{- if and .sentinel (ne (include "sentinel.probe" $root) "poll") }}
{{- $add := list "BPF" "PERFMON" }}
{{- if eq $root.Values.mode "sidecar" }}
{{- $add = append $add "KILL" }}
{{- if has (include "sentinel.measure" $root) (list "pss" "uss") }}
{{- $add = append $add "SYS_PTRACE" }}
{{- end }}
{{- end }}
{{- $caps := deepCopy ($sc.capabilities | default dict) }}
{{- $_ := set $caps "add" (concat ($caps.add | default list) $add | uniq) }}
{{- $_ := set $sc "capabilities" $caps }}
{{- $_ := set $sc "seccompProfile" (deepCopy $root.Values.probeSeccompProfile) }}
{{- $_ := set $sc "runAsUser" 0 }}
{{- $_ := set $sc "runAsNonRoot" false }}
{{- end }}
{{- toYaml $sc }}
{{- end }}

{{/*
sentinel.k8sEvents as "auto", "on" or "off": an unquoted on/off in a values
file reaches the chart as a YAML 1.1 boolean.
*/}}
{{- define "sentinel.k8sEvents" -}}
{{- $v := .Values.sentinel.k8sEvents }}
{{- if kindIs "bool" $v }}{{ ternary "on" "off" $v }}{{ else }}{{ $v }}{{ end }}
{{- end }}

{{/*
Several programs (.Values.programs, wrapper mode): where the programs file is
mounted, its ConfigMap, its `settings:` and the file itself.
*/}}
{{- define "sentinel.programsDir" -}}
/etc/sentinel
{{- end }}

{{- define "sentinel.programsPath" -}}
{{- printf "%s/sentinel.yaml" (include "sentinel.programsDir" .) }}
{{- end }}

{{- define "sentinel.programsConfigMap" -}}
{{- printf "%s-programs" (include "sentinel.fullname" .) }}
{{- end }}

{{/*
The programs file's `settings:` as YAML: the program options the chart has
values for (sentinel.interval, gracePeriod, restart, and maxRss and measure
when not null: with programs null means no default, not the single workload's
auto/200Mi) under programsSettings. They are the programs' defaults in the file
rather than SENTINEL_* variables: a variable would override programsSettings
(command line > environment > file). An empty maxRss is "none" there.
*/}}
{{- define "sentinel.programsSettings" -}}
{{- $s := dict "interval" .Values.sentinel.interval "grace-period" .Values.sentinel.gracePeriod "restart" .Values.sentinel.restart }}
{{- if not (kindIs "invalid" .Values.sentinel.maxRss) }}
{{- $_ := set $s "max-rss" (.Values.sentinel.maxRss | toString | default "none") }}
{{- end }}
{{- if not (kindIs "invalid" .Values.sentinel.measure) }}
{{- $_ := set $s "measure" .Values.sentinel.measure }}
{{- end }}
{{- toYaml (merge (deepCopy (.Values.programsSettings | default dict)) $s) }}
{{- end }}

{{/*
sentinel.yaml (docs/config.md), the ConfigMap's only key; its sha256 is the
pod's checksum/programs annotation.
*/}}
{{- define "sentinel.programsFile" -}}
# Rendered by the Sentinel chart from .Values.programs and .Values.programsSettings
# (the format: docs/config.md). Sentinel's own settings come from SENTINEL_*
# variables, which override this file's settings:.
version: 1
settings:
  {{- include "sentinel.programsSettings" . | nindent 2 }}
programs:
{{- range .Values.programs }}
  - name: {{ .name | quote }}
    {{- with omit . "name" }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
{{- end }}

{{/*
Checks of .Values.programs that the schema cannot express; each fails the
render with the fix. The memory check is the single workload's, summed: the
programs' sizes (auto and none skipped: auto is resolved by Sentinel against the
same limit) plus Sentinel's own footprint must fit under limits.memory. On pod
deletion Sentinel stops the programs in reverse start order, each with its own
ladder, so terminationGracePeriodSeconds must cover the sum of their grace
periods plus 1 s (the single workload's rule, summed).
*/}}
{{- define "sentinel.validatePrograms" -}}
{{- if eq .Values.mode "sidecar" }}
{{- fail "programs: several programs need mode: wrapper (Sentinel runs them as PID 1 from the programs file); in mode: sidecar Sentinel only watches a process another container started: set mode: wrapper, or programs: []" }}
{{- end }}
{{- $measure := .Values.sentinel.measure }}
{{- if has $measure (list "cgroup" "working-set") }}
{{- fail (printf "sentinel.measure: %s measures the whole container, shared by every program of programs: use rss, pss or uss (per program: measure)" $measure) }}
{{- end }}
{{- $settings := include "sentinel.programsSettings" . | fromYaml }}
{{- $memory := dig "limits" "memory" "" (.Values.workload.resources | default dict) }}
{{- $names := list }}
{{- $mains := list }}
{{- $sum := 0.0 }}
{{- $sizes := list }}
{{- $grace := 0.0 }}
{{- range $i, $p := .Values.programs }}
{{- if has $p.name $names }}
{{- fail (printf "programs[%d].name: %q is the name of an earlier program; names must be unique (they label metrics and Events)" $i $p.name) }}
{{- end }}
{{- $names = append $names $p.name }}
{{- if $p.main }}{{ $mains = append $mains $p.name }}{{ end }}
{{- $max := get $settings "max-rss" }}
{{- if hasKey $p "max-rss" }}{{ $max = index $p "max-rss" }}{{ end }}
{{- $text := ternary "" (toString $max | trim) (kindIs "invalid" $max) }}
{{- if regexMatch "^(?i:auto)" $text }}
{{- if not $memory }}
{{- fail (printf "programs[%d] (%s): max-rss %s is a share of the container's memory limit, and workload.resources.limits.memory is not set: Sentinel would refuse to start; set workload.resources.limits.memory or give max-rss a size" $i $p.name $text) }}
{{- end }}
{{- else if and $text (not (regexMatch "^(?i:none)$" $text)) }}
{{- $bytes := include "sentinel.sizeBytes" $text | float64 }}
{{- if lt $bytes 64000.0 }}
{{- fail (printf "programs[%d] (%s): max-rss %q is %.0f bytes, below Sentinel's 64k floor (a missing unit? e.g. %sMi): it would kill the program at once" $i $p.name $text (ceil $bytes) (regexFind "^[0-9.]+" $text)) }}
{{- end }}
{{- $sum = addf $sum $bytes }}
{{- $sizes = append $sizes (printf "%s %s" $p.name $text) }}
{{- end }}
{{- $g := get $settings "grace-period" }}
{{- if hasKey $p "grace-period" }}{{ $g = index $p "grace-period" }}{{ end }}
{{- $grace = addf $grace (include "sentinel.durationSeconds" $g | float64) }}
{{- end }}
{{- if gt (len $mains) 1 }}
{{- fail (printf "programs: %s are all main: true; at most one program is main (its exit ends the container with its status)" (join ", " $mains)) }}
{{- end }}
{{- range $i, $p := .Values.programs }}
{{- range (index $p "depends-on" | default list) }}
{{- if not (has . $names) }}
{{- fail (printf "programs[%d] (%s): depends-on names %q, which is not a program here (programs: %s)" $i $p.name . (join ", " $names)) }}
{{- end }}
{{- end }}
{{- end }}
{{- if $memory }}
{{- $footprint := include "sentinel.footprintMiB" . | int }}
{{- $needed := addf $sum (mulf $footprint 1048576.0) }}
{{- if le (include "sentinel.quantityBytes" $memory | float64) $needed }}
{{- fail (printf "workload.resources.limits.memory (%v) must be above the sum of the programs' max-rss (%s) plus Sentinel's own memory in the same container (%d MiB%s): else the kernel's OOM killer stops a program before Sentinel does, and no kill is recorded; raise limits.memory to at least %dMi or lower the programs' max-rss" $memory (join ", " $sizes | default "none") $footprint (ternary "" " with the Events client" (eq $footprint 32)) (add1 (int (ceil (divf $needed 1048576.0))))) }}
{{- end }}
{{- end }}
{{- if lt (float64 .Values.terminationGracePeriodSeconds) (addf $grace 1) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be at least the sum of the programs' grace periods (%gs) plus 1 s: on pod deletion Sentinel stops them one after the other, and the kubelet SIGKILLs everything when terminationGracePeriodSeconds runs out" .Values.terminationGracePeriodSeconds $grace) }}
{{- end }}
{{- end }}
