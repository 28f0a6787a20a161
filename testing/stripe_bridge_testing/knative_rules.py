"""Knative Serving's own admission rules (defaulting, then validation), ported to Python.

A schema check says nothing about what Knative's webhook does: it rejected every Service
this project rendered until #15 (a readiness probe with ``timeoutSeconds`` but no
``periodSeconds``). Each function below ports one piece of knative/serving's Go code, as
of commit ``SERVING`` (``KNATIVE_PKG`` for knative/pkg), with the default feature flags
and defaults of ``pkg/apis/config/features.go`` and ``defaults.go``; the docstrings name
the Go function. ``admit`` runs them in the webhook's order (``SetDefaults``, then
``Validate``) and returns every error, so a test can show which rule refused what.

Not ported: image reference parsing (go-containerregistry), creator/modifier annotations,
rollout-duration and networking annotations (none rendered), update-only rules.
"""

from __future__ import annotations

import copy
import posixpath
import re
from typing import Any

SERVING = "knative/serving@98e5ef90aa7033797aa0a61ef97f3ff7e49a3944"
KNATIVE_PKG = "knative/pkg@521cb33b33ddfe74529a68ff564450c051287436"

# pkg/apis/config/defaults.go
DEFAULT_REVISION_TIMEOUT = 300
MAX_REVISION_TIMEOUT = 600
MAX_CONTAINER_CONCURRENCY = 1000
DEFAULT_USER_CONTAINER_NAME = "user-container"

# pkg/apis/serving/k8s_validation.go (reservedPaths, reservedContainerNames, ...)
RESERVED_PATHS = {"/", "/dev", "/dev/log"}
RESERVED_CONTAINER_NAMES = {"queue-proxy"}
RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
#: networking.BackendHTTPPort, BackendHTTP2Port, QueueAdminPort, AutoscalingQueueMetricsPort,
#: UserQueueMetricsPort, runtime.ProfilingDefaultPort.
RESERVED_PORTS = {8012, 8013, 8022, 9090, 9091, 8008}
VALID_PORT_NAMES = {"h2c", "http1", ""}

# pkg/apis/serving/fieldmask.go with the default feature flags (features.go: every
# podspec-* flag Disabled, secure-pod-defaults Disabled, multi-container Enabled,
# emptyDir volumes Enabled).
POD_SPEC_FIELDS = {
    "serviceAccountName", "containers", "volumes", "imagePullSecrets", "enableServiceLinks",
    "automountServiceAccountToken",
}  # fmt: skip
#: RevisionSpec's own fields beside the inlined PodSpec (pkg/apis/serving/v1/revision_types.go).
REVISION_SPEC_FIELDS = {
    "containerConcurrency", "timeoutSeconds", "idleTimeoutSeconds", "responseStartTimeoutSeconds",
}  # fmt: skip
CONTAINER_FIELDS = {
    "name", "args", "command", "env", "workingDir", "envFrom", "image", "imagePullPolicy",
    "livenessProbe", "ports", "readinessProbe", "resources", "securityContext", "startupProbe",
    "terminationMessagePath", "terminationMessagePolicy", "volumeMounts",
}  # fmt: skip
SECURITY_CONTEXT_FIELDS = {
    "capabilities", "readOnlyRootFilesystem", "runAsUser", "runAsGroup", "runAsNonRoot",
    "allowPrivilegeEscalation", "seccompProfile", "privileged",
}  # fmt: skip
PROBE_FIELDS = {
    "httpGet", "tcpSocket", "exec", "grpc", "initialDelaySeconds", "timeoutSeconds",
    "periodSeconds", "successThreshold", "failureThreshold", "terminationGracePeriodSeconds",
}  # fmt: skip
HANDLERS = ("httpGet", "tcpSocket", "exec", "grpc")
HTTP_GET_FIELDS = {"host", "path", "scheme", "httpHeaders", "port"}
PORT_FIELDS = {"containerPort", "name", "protocol"}
ENV_FIELDS = {"name", "value", "valueFrom"}
ENV_SOURCE_FIELDS = {"configMapKeyRef", "secretKeyRef"}
VOLUME_SOURCES = {"secret", "configMap", "projected", "emptyDir"}
VOLUME_MOUNT_FIELDS = {"name", "readOnly", "mountPath", "subPath"}
RESOURCE_FIELDS = {"limits", "requests"}

# pkg/apis/autoscaling/register.go
AUTOSCALING = "autoscaling.knative.dev/"
KPA = "kpa.autoscaling.knative.dev"
HPA = "hpa.autoscaling.knative.dev"
TARGET_MIN = 0.01
WINDOW_MIN, WINDOW_MAX = 6.0, 3600.0

_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_INT32 = 2**31 - 1


def go_duration(text: str) -> float | None:
    """Seconds in a Go ``time.ParseDuration`` string; None where Go returns an error."""
    if text == "0":
        return 0.0
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if not body or _DURATION.sub("", body):
        return None
    return sign * sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(body))


def dns1035_label(name: str) -> list[str]:
    """k8s.io/apimachinery ``NameIsDNS1035Label``: lower-case letter first, at most 63."""
    errors = []
    if len(name) > 63:
        errors.append(f"{name!r}: must be no more than 63 characters")
    if not _DNS1035.match(name):
        errors.append(f"{name!r}: not a DNS-1035 label")
    return errors


def _disallowed(obj: dict[str, Any] | None, allowed: set[str], where: str) -> list[str]:
    """knative/pkg ``apis.CheckDisallowedFields``: any field the mask drops is an error."""
    if not obj:
        return []
    return [f"{where}.{key}: must not set the field(s)" for key in sorted(set(obj) - allowed)]


# ---------------------------------------------------------------------------- defaulting


def set_defaults(service: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``service`` as Knative's defaulting webhook leaves it (create).

    ``RevisionSpec.SetDefaults`` and ``applyDefault`` (pkg/apis/serving/v1/
    revision_defaults.go): timeoutSeconds 300 when unset or 0, containerConcurrency 0,
    unnamed containers ``user-container``, enableServiceLinks false, and the readiness
    probe defaults of ``applyUserContainerDefaultReadinessProbe`` (a TCP probe when none is
    given) and ``applyReadinessProbeDefaults`` (successThreshold 1; failureThreshold 3 and
    timeoutSeconds 1 **only when periodSeconds is set**: nothing defaults periodSeconds).
    """
    out = copy.deepcopy(service)
    spec = out["spec"]["template"]["spec"]
    if not spec.get("timeoutSeconds"):
        spec["timeoutSeconds"] = DEFAULT_REVISION_TIMEOUT
    spec.setdefault("containerConcurrency", 0)
    spec.setdefault("enableServiceLinks", False)
    containers = spec.get("containers") or []
    for container in containers:
        container.setdefault("name", DEFAULT_USER_CONTAINER_NAME)
        if len(containers) == 1 or container.get("ports"):
            probe = container.setdefault("readinessProbe", {})
            if not any(h in probe for h in HANDLERS):
                probe["tcpSocket"] = {}
        probe = container.get("readinessProbe")
        if probe is not None:
            if not probe.get("successThreshold"):
                probe["successThreshold"] = 1
            if probe.get("periodSeconds"):
                probe.setdefault("failureThreshold", 3)
                probe.setdefault("timeoutSeconds", 1)
    return out


# ---------------------------------------------------------------------------- validation


def validate_object_metadata(meta: dict[str, Any]) -> list[str]:
    """knative/pkg ``apis.ValidateObjectMetadata`` (apis/metadata_validation.go), plus
    serving's ``ValidateHasNoAutoscalingAnnotation`` (pkg/apis/serving/metadata_validation.go)
    for a Service's own metadata: autoscaling annotations belong on the template."""
    errors = [f"metadata.name: {e}" for e in dns1035_label(meta.get("name", ""))]
    for key in meta.get("annotations") or {}:
        if key.startswith(AUTOSCALING):
            errors.append(f"metadata.annotations.{key}: autoscaling annotations not allowed here")
    return errors


def _int_ge0(annotations: dict[str, str], key: str) -> tuple[int, list[str]]:
    """``getIntGE0`` (pkg/apis/autoscaling/annotation_validation.go)."""
    if key not in annotations:
        return 0, []
    try:
        value = int(annotations[key], 10)
    except ValueError:
        return 0, [f"{key}: invalid value {annotations[key]!r}"]
    if value < 0 or value > MAX_INT32:
        return 0, [f"{key}: {value} out of bounds 0..{MAX_INT32}"]
    return value, []


def validate_autoscaling_annotations(annotations: dict[str, str]) -> list[str]:
    """``autoscaling.ValidateAnnotations`` (pkg/apis/autoscaling/annotation_validation.go):
    class, min/max-scale (max-scale-limit 0: unlimited), target >= 0.01, window 6s..1h,
    scale-down-delay 0..1h with second precision, metric valid for the class,
    initial-scale >= 0 (allow-zero-initial-scale false: not 0)."""
    a = annotations
    errors: list[str] = []
    cls = a.get(AUTOSCALING + "class", KPA)
    if cls.endswith(".knative.dev") and cls not in (KPA, HPA):
        errors.append(f"{AUTOSCALING}class: invalid value {cls!r}")
    low, err_low = _int_ge0(a, AUTOSCALING + "min-scale")
    high, err_high = _int_ge0(a, AUTOSCALING + "max-scale")
    errors += err_low + err_high
    if high and high < low:
        errors.append(f"max-scale={high} is less than min-scale={low}")
    if (target := a.get(AUTOSCALING + "target")) is not None:
        try:
            if float(target) < TARGET_MIN:
                errors.append(f"{AUTOSCALING}target: {target} should be at least {TARGET_MIN}")
        except ValueError:
            errors.append(f"{AUTOSCALING}target: invalid value {target!r}")
    if (window := a.get(AUTOSCALING + "window")) is not None:
        seconds = go_duration(window)
        if seconds is None or not WINDOW_MIN <= seconds <= WINDOW_MAX or seconds != int(seconds):
            errors.append(f"{AUTOSCALING}window: invalid value {window!r}")
    if (delay := a.get(AUTOSCALING + "scale-down-delay")) is not None:
        seconds = go_duration(delay)
        if seconds is None or not 0 <= seconds <= WINDOW_MAX:
            errors.append(f"{AUTOSCALING}scale-down-delay: invalid value {delay!r}")
        elif round(seconds) != seconds:
            errors.append(f"{AUTOSCALING}scale-down-delay: at most second precision")
    metric = a.get(AUTOSCALING + "metric")
    if metric is not None and (
        (cls == KPA and metric not in ("concurrency", "rps")) or (cls == HPA and not metric)
    ):
        errors.append(f"{AUTOSCALING}metric: invalid value {metric!r} for {cls}")
    initial = a.get(AUTOSCALING + "initial-scale")
    if initial is not None and (not re.fullmatch(r"[+-]?\d+", initial) or int(initial) <= 0):
        errors.append(f"{AUTOSCALING}initial-scale: invalid value {initial!r}")
    return errors


def validate_revision_spec_limits(spec: dict[str, Any]) -> list[str]:
    """``validateTimeoutSeconds`` (pkg/apis/serving/v1/revision_validation.go: 0 <= t <= 600,
    max-revision-timeout-seconds) and ``ValidateContainerConcurrency``
    (pkg/apis/serving/metadata_validation.go: 0..1000, container-concurrency-max-limit)."""
    errors = []
    timeout = spec.get("timeoutSeconds")
    if timeout and not 0 <= timeout <= MAX_REVISION_TIMEOUT:
        errors.append(f"spec.timeoutSeconds: {timeout} out of bounds 0..{MAX_REVISION_TIMEOUT}")
    concurrency = spec.get("containerConcurrency")
    if concurrency is not None and not 0 <= concurrency <= MAX_CONTAINER_CONCURRENCY:
        errors.append(
            f"spec.containerConcurrency: {concurrency} out of bounds 0..{MAX_CONTAINER_CONCURRENCY}"
        )
    return errors


def validate_pod_spec_fields(spec: dict[str, Any]) -> list[str]:
    """``PodSpecMask`` (pkg/apis/serving/fieldmask.go) under the default feature flags:
    affinity, tolerations, securityContext, initContainers, ... are all disallowed; and
    automountServiceAccountToken is kept only when false."""
    errors = _disallowed(spec, POD_SPEC_FIELDS | REVISION_SPEC_FIELDS, "spec")
    if spec.get("automountServiceAccountToken") is True:
        errors.append("spec.automountServiceAccountToken: must not set the field(s)")
    return errors


def serving_port(containers: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """``validateContainersPorts`` (k8s_validation.go): one port across all containers; its
    name defaults to ``http`` and its number to 8080 for the probe-port comparison."""
    ports = [p for c in containers for p in c.get("ports") or []]
    port = dict(ports[0]) if ports else {}
    port["name"] = port.get("name") or "http"
    port.setdefault("containerPort", 8080)
    errors = []
    if not ports and len(containers) > 1:
        errors.append("spec.containers[*].ports: missing field(s)")
    if len(ports) > 1:
        errors.append("spec.containers[*].ports: more than one container port is set")
    return port, errors


def validate_container_ports(ports: list[dict[str, Any]], where: str) -> list[str]:
    """``validateContainerPorts`` and ``validateContainerPortBasic`` (k8s_validation.go):
    ``ContainerPortMask`` fields, reserved ports, TCP only, name empty/h2c/http1."""
    if not ports:
        return []
    port = ports[0]
    errors = _disallowed(port, PORT_FIELDS, f"{where}.ports")
    number = port.get("containerPort", 0)
    if number in RESERVED_PORTS:
        errors.append(f"{where}.ports.containerPort: {number} is a reserved port")
    if not 0 <= number <= 65535:
        errors.append(f"{where}.ports.containerPort: {number} out of bounds 0..65535")
    if port.get("protocol", "TCP") != "TCP":
        errors.append(f"{where}.ports.protocol: invalid value {port['protocol']!r}")
    if port.get("name", "") not in VALID_PORT_NAMES:
        errors.append(f"{where}.ports: Port name {port['name']} is not allowed")
    return errors


def validate_probe(probe: dict[str, Any] | None, port: dict[str, Any], where: str) -> list[str]:
    """``validateProbe`` (k8s_validation.go) for the user container: ``ProbeMask``,
    ``HTTPGetActionMask``, a named probe port must be the serving port's name, exactly
    one handler."""
    if probe is None:
        return []
    errors = _disallowed(probe, PROBE_FIELDS, where)
    handlers = [h for h in HANDLERS if h in probe]
    if "httpGet" in probe:
        errors += _disallowed(probe["httpGet"], HTTP_GET_FIELDS, f"{where}.httpGet")
    for handler in ("httpGet", "tcpSocket"):
        probe_port = (probe.get(handler) or {}).get("port")
        if isinstance(probe_port, str) and probe_port and probe_port != port["name"]:
            errors.append(f"{where}.{handler}.port: Probe port must match container port")
    if not handlers:
        errors.append(f"{where}: expected exactly one, got neither: {', '.join(HANDLERS)}")
    elif len(handlers) > 1:
        errors.append(f"{where}: expected exactly one, got both: {', '.join(handlers)}")
    return errors


def validate_readiness_probe(
    probe: dict[str, Any] | None, port: dict[str, Any], where: str
) -> list[str]:
    """``validateReadinessProbe`` (k8s_validation.go): periodSeconds 0 is Knative's
    aggressive probe, which allows neither failureThreshold nor timeoutSeconds; otherwise
    both must be at least 1; successThreshold at least 1 (after defaulting)."""
    if probe is None:
        return []
    errors = validate_probe(probe, port, where)
    period = probe.get("periodSeconds", 0)
    if period < 0 or probe.get("initialDelaySeconds", 0) < 0:
        errors.append(f"{where}: periodSeconds/initialDelaySeconds out of bounds")
    if probe.get("successThreshold", 0) < 1:
        errors.append(f"{where}.successThreshold: out of bounds 1..{MAX_INT32}")
    if period == 0:
        for key in ("failureThreshold", "timeoutSeconds"):
            if probe.get(key, 0) != 0:
                errors.append(f"{where}.{key}: {key} is disallowed when periodSeconds is zero")
    else:
        for key in ("timeoutSeconds", "failureThreshold"):
            if probe.get(key, 0) < 1:
                errors.append(f"{where}.{key}: out of bounds 1..{MAX_INT32}")
    return errors


def validate_env(env: list[dict[str, Any]], where: str) -> list[str]:
    """``validateEnvVar`` and ``validateEnvValueFrom`` (k8s_validation.go): reserved names,
    ``EnvVarMask``, ``EnvVarSourceMask`` (fieldRef/resourceFieldRef need
    kubernetes.podspec-fieldref, Disabled by default)."""
    errors = []
    for i, var in enumerate(env):
        errors += _disallowed(var, ENV_FIELDS, f"{where}.env[{i}]")
        if not var.get("name"):
            errors.append(f"{where}.env[{i}].name: missing field(s)")
        elif var["name"] in RESERVED_ENV:
            errors.append(f"{where}.env[{i}].name: {var['name']!r} is a reserved env variable")
        errors += _disallowed(
            var.get("valueFrom"), ENV_SOURCE_FIELDS, f"{where}.env[{i}].valueFrom"
        )
    return errors


def validate_security_context(context: dict[str, Any] | None, where: str) -> list[str]:
    """``validateSecurityContext`` with ``SecurityContextMask`` and ``CapabilitiesMask``
    (fieldmask.go): privileged only as false, capabilities.add needs a feature flag,
    runAsUser/runAsGroup within 0..2^31-1."""
    if not context:
        return []
    errors = _disallowed(context, SECURITY_CONTEXT_FIELDS, f"{where}.securityContext")
    if context.get("privileged") is True:
        errors.append(f"{where}.securityContext.privileged: must not set the field(s)")
    errors += _disallowed(context.get("capabilities"), {"drop"}, f"{where}.securityContext.caps")
    for key in ("runAsUser", "runAsGroup"):
        if key in context and not 0 <= context[key] <= MAX_INT32:
            errors.append(f"{where}.securityContext.{key}: out of bounds")
    return errors


def validate_volumes(spec: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``ValidateVolumes``/``validateVolume`` (k8s_validation.go) with ``VolumeSourceMask``:
    unique, mounted, and only secret/configMap/projected/emptyDir sources by default."""
    mounted = {m["name"] for c in spec.get("containers") or [] for m in c.get("volumeMounts") or []}
    volumes: dict[str, Any] = {}
    errors = []
    for i, volume in enumerate(spec.get("volumes") or []):
        name = volume.get("name", "")
        if name in volumes:
            errors.append(f"spec.volumes[{i}].name: duplicate volume name {name!r}")
        if name not in mounted:
            errors.append(f"spec.volumes[{i}].name: volume with name {name!r} not mounted")
        errors += _disallowed(volume, VOLUME_SOURCES | {"name"}, f"spec.volumes[{i}]")
        volumes[name] = volume
    return volumes, errors


def validate_volume_mounts(
    mounts: list[dict[str, Any]], volumes: dict[str, Any], where: str
) -> list[str]:
    """``validateVolumeMounts`` (k8s_validation.go): a matching volume, an absolute,
    unique, non-reserved mountPath, and readOnly for every volume but emptyDir/PVC."""
    errors = []
    seen: set[str] = set()
    for i, mount in enumerate(mounts):
        at = f"{where}.volumeMounts[{i}]"
        errors += _disallowed(mount, VOLUME_MOUNT_FIELDS, at)
        volume = volumes.get(mount.get("name", ""))
        if volume is None:
            errors.append(f"{at}.name: volumeMount has no matching volume")
        path = mount.get("mountPath", "")
        clean = posixpath.normpath(path) if path else ""
        if not path:
            errors.append(f"{at}.mountPath: missing field(s)")
        elif clean in RESERVED_PATHS:
            errors.append(f"{at}.mountPath: {clean!r} is a reserved path")
        elif not path.startswith("/"):
            errors.append(f"{at}.mountPath: invalid value {path!r}")
        elif clean in seen:
            errors.append(f"{at}.mountPath: {path!r} must be unique")
        seen.add(clean)
        writable_kind = volume is not None and ("emptyDir" in volume or "ephemeral" in volume)
        if not writable_kind and not mount.get("readOnly"):
            errors.append(f"{at}.readOnly: volume mount should be readOnly for this type")
    return errors


def validate_container(
    container: dict[str, Any], volumes: dict[str, Any], port: dict[str, Any], where: str
) -> list[str]:
    """``ValidateUserContainer`` and ``validate`` (k8s_validation.go): probes, then
    ``ContainerMask`` (lifecycle, stdin, tty, volumeDevices are disallowed), reserved
    container names, env, image, ports, resources, securityContext, volumeMounts."""
    errors = validate_probe(container.get("livenessProbe"), port, f"{where}.livenessProbe")
    errors += validate_readiness_probe(
        container.get("readinessProbe"), port, f"{where}.readinessProbe"
    )
    errors += validate_probe(container.get("startupProbe"), port, f"{where}.startupProbe")
    errors += _disallowed(container, CONTAINER_FIELDS, where)
    if container.get("name") in RESERVED_CONTAINER_NAMES:
        errors.append(f"{where}.name: {container['name']!r} is a reserved container name")
    errors += validate_env(container.get("env") or [], where)
    if not container.get("image"):
        errors.append(f"{where}.image: missing field(s)")
    errors += validate_container_ports(container.get("ports") or [], where)
    errors += _disallowed(container.get("resources"), RESOURCE_FIELDS, f"{where}.resources")
    errors += validate_security_context(container.get("securityContext"), where)
    if container.get("terminationMessagePolicy", "") not in ("", "File", "FallbackToLogsOnError"):
        errors.append(f"{where}.terminationMessagePolicy: invalid value")
    errors += validate_volume_mounts(container.get("volumeMounts") or [], volumes, where)
    return errors


def validate_pod_spec(spec: dict[str, Any]) -> list[str]:
    """``ValidatePodSpec`` (k8s_validation.go) for a single- or multi-container revision."""
    errors = validate_pod_spec_fields(spec)
    volumes, volume_errors = validate_volumes(spec)
    errors += volume_errors
    containers = spec.get("containers") or []
    port, port_errors = serving_port(containers)
    errors += port_errors
    if not containers:
        errors.append("spec.containers: missing field(s)")
    names: set[str] = set()
    for i, container in enumerate(containers):
        if container.get("name") in names:
            errors.append(f"spec.containers[{i}].name: duplicate container name")
        names.add(container.get("name", ""))
        # A sidecar (no ports, multi-container) gets the sidecar rules; not rendered here.
        errors += validate_container(container, volumes, port, f"spec.containers[{i}]")
    return errors


def validate(service: dict[str, Any]) -> list[str]:
    """``Service.Validate`` (pkg/apis/serving/v1/service_validation.go) down through
    ``RevisionTemplateSpec.Validate`` and ``RevisionSpec.Validate`` (revision_validation.go)."""
    errors = validate_object_metadata(service["metadata"])
    template = service["spec"]["template"]
    annotations = (template.get("metadata") or {}).get("annotations") or {}
    errors += validate_autoscaling_annotations(annotations)
    spec = template["spec"]
    errors += validate_pod_spec(spec)
    errors += validate_revision_spec_limits(spec)
    return errors


def admit(service: dict[str, Any]) -> list[str]:
    """Every error Knative's webhook would report creating ``service`` (empty: admitted)."""
    return validate(set_defaults(service))


def domain_labels(name: str, namespace: str, template: str) -> list[str]:
    """The host labels of a route's domain, for ``DomainNameFromTemplate``
    (pkg/reconciler/route/domains/domains.go), which refuses any label over 63
    (``IsFullyQualifiedDomainName``). ``template``: ``{name}.{namespace}`` (the default
    ``{{.Name}}.{{.Namespace}}.{{.Domain}}``) or e.g. ``{name}-{namespace}``."""
    return template.format(name=name, namespace=namespace).split(".")


def pod_termination_grace(service: dict[str, Any]) -> int:
    """``BuildPodSpec`` (pkg/reconciler/revision/resources/deploy.go): the pod's
    terminationGracePeriodSeconds is the revision's timeoutSeconds (after defaulting)."""
    grace: int = set_defaults(service)["spec"]["template"]["spec"]["timeoutSeconds"]
    return grace


#: pkg/queue/sharedmain/main.go ``drainSleepDuration``: queue-proxy's drain keeps the pod
#: (the user container's preStop hook waits on it) until 30 s pass without a request.
QUEUE_PROXY_DRAIN_SECONDS = 30
#: Kubernetes' one-off extension when a preStop hook outlives the grace period
#: (kubelet ``minimumGracePeriodInSeconds``, pkg/kubelet/kuberuntime/kuberuntime_container.go).
KUBELET_PRESTOP_EXTENSION_SECONDS = 2
