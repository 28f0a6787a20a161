"""Create or update the Knative Services and the consumers' Deployments and CronJob with
server-side apply, then wait until they are Ready (Services) or rolled out (Deployments).

Uses the ``kubernetes`` client (the optional ``deploy`` extra), imported lazily so the
functions never load it. Every failure becomes a ``DeployError`` whose message is one
line for an operator (no tokens, no kubeconfig contents) and whose ``exit_code`` says
what kind of failure it was.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import StripeBridgeError
from ..exitcodes import ExitCode
from .access import DEPLOYER_GROUP
from .k8s import FIELD_MANAGER, WEBHOOK_SECRET
from .knative import ALL_EVENTS, SERVICES_PLURAL, SERVING_GROUP, SERVING_VERSION, FunctionSpec

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
JSON_PATCH_CONTENT_TYPE = "application/json-patch+json"
#: Where client-side ``kubectl apply`` keeps the manifest it applied; the manager owning it
#: with an ``Update`` is that history (kubectl pkg/cmd/apply/apply.go).
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
#: Attempts at the managed-fields patch: a controller's status write in between changes
#: the resourceVersion it tests (kubectl retries the same way).
_ADOPT_ATTEMPTS = 5
_RESOURCE = f"{SERVICES_PLURAL}.{SERVING_GROUP}"


class DeployError(StripeBridgeError):
    """Deploying cannot go on: the API server is unreachable or refused (or, raised with
    ``ExitCode.CONFIG``, the kubeconfig is unusable)."""

    exit_code = ExitCode.UNAVAILABLE


@dataclass
class ServiceState:
    """What ``apply`` did to one object (a Service unless ``kind`` says) and how it is doing."""

    name: str
    action: str
    url: str = ""
    ready: str = "Unknown"
    reason: str = ""
    kind: str = "Service"

    @property
    def label(self) -> str:
        """How the output names it: a Service by its name, others as ``kind/name``."""
        return self.name if self.kind == "Service" else f"{self.kind.lower()}/{self.name}"


def _first_line(text: object) -> str:
    return str(text).strip().splitlines()[0] if str(text).strip() else ""


def api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """An ApiClient from ``kubeconfig``, else $KUBECONFIG or ~/.kube/config, else in-cluster."""
    try:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException
    except ImportError:
        raise DeployError(
            "the kubernetes client is not installed: pip install 'stripe-bridge[deploy]'",
            ExitCode.CONFIG,
        ) from None
    default = Path.home() / ".kube" / "config"
    try:
        if kubeconfig is not None:
            if not Path(kubeconfig).is_file():
                raise DeployError(f"no kubeconfig at {kubeconfig}", ExitCode.CONFIG)
            return config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context
            )
        if os.environ.get("KUBECONFIG") or default.is_file():
            return config.new_client_from_config(context=context)  # type: ignore[no-untyped-call]
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = client.Configuration()
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
            return client.ApiClient(configuration)
    except ConfigException as exc:
        raise DeployError(f"invalid kubeconfig: {_first_line(exc)}", ExitCode.CONFIG) from None
    raise DeployError(
        f"no kubeconfig: pass --kubeconfig, set KUBECONFIG or create {default} "
        "(for kind: kind export kubeconfig)",
        ExitCode.CONFIG,
    )


def _status_message(exc: Any) -> str:
    """The ``message`` of a Kubernetes Status body, else the HTTP reason."""
    try:
        message = json.loads(exc.body).get("message", "")
    except (TypeError, ValueError, AttributeError):
        message = ""
    return _first_line(message or exc.reason or "")


class Deployer:
    """Applies Services into one namespace through the CustomObjectsApi."""

    def __init__(self, client: Any, namespace: str, env: str, dry_run: bool = False) -> None:
        from kubernetes import client as k8s

        self.api = k8s.CustomObjectsApi(client)
        self.apps = k8s.AppsV1Api(client)
        self.batch = k8s.BatchV1Api(client)
        self.client = client
        self.host = str(client.configuration.host)
        self.namespace = namespace
        self.env = env
        self.dry_run = dry_run

    def _call(
        self,
        verb: str,
        name: str,
        call: Any,
        not_found: DeployError | None = None,
        resource: str = _RESOURCE,
    ) -> Any:
        """Run one API call; translate its failures into a DeployError."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return call()
        except ApiException as exc:
            if exc.status == 404 and not_found is not None:
                raise not_found from None
            raise self._api_error(exc, verb, name, resource) from None
        except HTTPError as exc:
            raise DeployError(
                f"cannot reach the Kubernetes API at {self.host}: {type(exc).__name__}"
            ) from None

    def _api_error(self, exc: Any, verb: str, name: str, resource: str) -> DeployError:
        status = exc.status
        if status == 401:
            return DeployError("unauthorized: the API server rejected the kubeconfig's credentials")
        if status == 403:
            return DeployError(
                f"forbidden: you may not {verb} {resource} in namespace {self.namespace}; "
                f"a cluster admin must apply knative/{self.env}/rbac.yaml and add you to "
                f"group {DEPLOYER_GROUP}"
            )
        target = name or resource
        return DeployError(f"{verb} {target} failed: HTTP {status} {_status_message(exc)}")

    def _adopt(
        self,
        name: str,
        resource: str,
        applied: dict[str, Any],
        read: Callable[[], dict[str, Any] | None],
        json_patch: Callable[[list[dict[str, Any]]], Any],
        reapply: Callable[[], Any],
    ) -> bool:
        """Take over ``applied``'s client-side apply history, then apply again so what only
        that history set is removed; whether there was any (docs/deploy.md, apply contract)."""
        from kubernetes.client.exceptions import ApiException

        current: dict[str, Any] | None = applied
        for _attempt in range(_ADOPT_ATTEMPTS):
            ops = client_side_adoption(current or {})
            if ops is None:
                return False
            try:
                json_patch(ops)
                break
            except ApiException as exc:
                if exc.status != 409:
                    raise self._api_error(exc, "adopt", name, resource) from None
                current = read()
        else:
            raise DeployError(
                f"adopt {name} failed: its resourceVersion kept changing "
                f"({_ADOPT_ATTEMPTS} attempts); apply again"
            )
        self._call("patch", name, reapply, resource=resource)
        return True

    def check_knative(self) -> None:
        """DeployError unless the API server serves Knative Serving's ``services``."""
        missing = DeployError(
            f"Knative Serving is not installed: {self.host} does not serve "
            f"{SERVING_GROUP}/{SERVING_VERSION} {SERVICES_PLURAL} "
            "(install Knative Serving first, see knative/README.md)"
        )
        resources = self._call(
            "discover",
            "",
            lambda: self.api.get_api_resources(SERVING_GROUP, SERVING_VERSION),
            not_found=missing,
        )
        names = {resource.name for resource in resources.resources or []}
        if SERVICES_PLURAL not in names:
            raise missing

    def get(self, name: str) -> dict[str, Any] | None:
        """The Service called ``name``, or None if there is none."""
        from kubernetes.client.exceptions import ApiException

        def call() -> dict[str, Any] | None:
            try:
                found: Any = self.api.get_namespaced_custom_object(
                    SERVING_GROUP, SERVING_VERSION, self.namespace, SERVICES_PLURAL, name
                )
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return dict(found)

        result: dict[str, Any] | None = self._call("get", name, call)
        return result

    def apply(self, manifest: dict[str, Any]) -> ServiceState:
        """Server-side apply ``manifest``; say whether it was created, updated or unchanged."""
        name = manifest["metadata"]["name"]
        body = {**manifest, "metadata": {**manifest["metadata"], "namespace": self.namespace}}
        before = self.get(name)

        def patch(patch_body: Any, content_type: str, **options: Any) -> Any:
            return self.api.patch_namespaced_custom_object_with_http_info(
                SERVING_GROUP, SERVING_VERSION, self.namespace, SERVICES_PLURAL, name,
                patch_body, _content_type=content_type, **options,
            )  # fmt: skip

        def apply() -> Any:
            # force: this tool owns these fields; a hand edit (kubectl edit) or client-side
            # apply history must not block a deploy (docs/deploy.md, the apply contract).
            return patch(
                body, APPLY_CONTENT_TYPE, field_manager=FIELD_MANAGER, force=True,
                dry_run="All" if self.dry_run else None,
            )  # fmt: skip

        data, status, _headers = self._call("patch", name, apply)
        after = data if isinstance(data, dict) else self.get(name) or {}
        adopted = not self.dry_run and self._adopt(
            name, _RESOURCE, after, lambda: self.get(name),
            lambda ops: patch(ops, JSON_PATCH_CONTENT_TYPE), apply,
        )  # fmt: skip
        if before is None or status == 201:
            action = "created"
        else:
            action = "updated" if adopted or _changed(before, after) else "unchanged"
        return ServiceState(name, _action(action, self.dry_run, adopted))

    def _workload(self, kind: str) -> tuple[str, Any, Any]:
        """The resource name, read call and apply call of a Deployment or CronJob."""
        if kind == "Deployment":
            return (
                "deployments.apps",
                self.apps.read_namespaced_deployment,
                self.apps.patch_namespaced_deployment_with_http_info,
            )
        if kind == "CronJob":
            return (
                "cronjobs.batch",
                self.batch.read_namespaced_cron_job,
                self.batch.patch_namespaced_cron_job_with_http_info,
            )
        raise ValueError(f"cannot apply a {kind}")

    def get_workload(self, kind: str, name: str) -> dict[str, Any] | None:
        """The Deployment or CronJob called ``name`` as a plain dict, or None if absent."""
        from kubernetes.client.exceptions import ApiException

        resource, read, _apply = self._workload(kind)

        def call() -> dict[str, Any] | None:
            try:
                found = read(name, self.namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            return dict(self.client.sanitize_for_serialization(found))

        result: dict[str, Any] | None = self._call("get", name, call, resource=resource)
        return result

    def apply_workload(self, manifest: dict[str, Any]) -> ServiceState:
        """Server-side apply a Deployment or CronJob, like ``apply`` does a Service."""
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        resource, _read, patch = self._workload(kind)
        body = {**manifest, "metadata": {**manifest["metadata"], "namespace": self.namespace}}
        before = self.get_workload(kind, name)

        def apply() -> Any:
            return patch(
                name, self.namespace, body, field_manager=FIELD_MANAGER, force=True,
                dry_run="All" if self.dry_run else None, _content_type=APPLY_CONTENT_TYPE,
            )  # fmt: skip

        data, status, _headers = self._call("patch", name, apply, resource=resource)
        after = self.client.sanitize_for_serialization(data)
        adopted = not self.dry_run and self._adopt(
            name, resource, after, lambda: self.get_workload(kind, name),
            lambda ops: patch(name, self.namespace, ops, _content_type=JSON_PATCH_CONTENT_TYPE),
            apply,
        )  # fmt: skip
        if before is None or status == 201:
            action = "created"
        else:
            action = "updated" if adopted or _changed(before, after) else "unchanged"
        state = ServiceState(name, _action(action, self.dry_run, adopted), kind=kind)
        if kind == "CronJob":
            # Nothing runs until its schedule: applied is all there is to wait for.
            state.ready, state.reason = "True", "scheduled"
        return state

    def wait_ready(
        self, states: list[ServiceState], timeout: float, poll: float = 2.0
    ) -> list[ServiceState]:
        """Poll until every Service reports Ready True/False for its latest generation and
        every Deployment has rolled out (or its rollout failed)."""
        deadline = time.monotonic() + timeout
        pending = [state for state in states if state.ready not in ("True", "False")]
        while True:
            for state in list(pending):
                read: Callable[[dict[str, Any], ServiceState], None]
                if state.kind == "Service":
                    found = self.get(state.name)
                    read = _read_status
                else:
                    found = self.get_workload(state.kind, state.name)
                    read = _read_rollout
                if found is None:
                    continue
                read(found, state)
                if state.ready in ("True", "False"):
                    pending.remove(state)
            remaining = deadline - time.monotonic()
            if not pending or remaining <= 0:
                return states
            time.sleep(min(poll, remaining))


def _action(action: str, dry_run: bool, adopted: bool) -> str:
    """How the output says what apply did."""
    if dry_run:
        return f"{action} (dry run)"
    return f"{action} (adopted from client-side kubectl apply)" if adopted else action


def _generation(service: dict[str, Any]) -> int:
    return int(service.get("metadata", {}).get("generation") or 0)


def _changed(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether an apply changed the spec (a new generation) or the labels/annotations.

    Not resourceVersion: Knative's controller rewrites the status all the time.
    """
    if _generation(after) != _generation(before):
        return True
    meta_before, meta_after = before.get("metadata", {}), after.get("metadata", {})
    return any(meta_before.get(key) != meta_after.get(key) for key in ("labels", "annotations"))


def _read_status(service: dict[str, Any], state: ServiceState) -> None:
    """Copy URL and the Ready condition into ``state`` once they describe this generation."""
    status = service.get("status") or {}
    state.url = str(status.get("url") or "")
    if int(status.get("observedGeneration") or 0) < _generation(service):
        state.ready, state.reason = "Unknown", "not yet reconciled"
        return
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            state.ready = str(condition.get("status") or "Unknown")
            state.reason = _first_line(condition.get("message") or condition.get("reason") or "")


def _read_rollout(deployment: dict[str, Any], state: ServiceState) -> None:
    """Ready once every replica runs the new pod template, as ``kubectl rollout status`` does.

    ``False`` when the Deployment's ``Progressing`` condition says the progress deadline
    passed: Kubernetes gave up waiting for the new pods.
    """
    status = deployment.get("status") or {}
    wanted = int((deployment.get("spec") or {}).get("replicas", 1))
    if int(status.get("observedGeneration") or 0) < _generation(deployment):
        state.ready, state.reason = "Unknown", "not yet observed"
        return
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("status") == "False":
            state.ready = "False"
            state.reason = _first_line(condition.get("message") or condition.get("reason") or "")
            return
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated >= wanted and int(status.get("replicas") or 0) == updated and available >= updated:
        state.ready, state.reason = "True", f"{available}/{wanted} available"
    else:
        state.ready, state.reason = "Unknown", f"{available}/{wanted} available"


def _merge_fields(into: dict[str, Any], fields: dict[str, Any]) -> None:
    for key, sub in fields.items():
        _merge_fields(into.setdefault(key, {}), sub)


def client_side_adoption(obj: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The JSON patch moving ``obj``'s client-side ``kubectl apply`` history to our field
    manager, as kubectl does after a server-side apply (k8s.io/client-go util/csaupgrade);
    None when there is none.

    After it, a field only the old client-side manifests set is ours, so the next apply
    (which does not send it) removes it, the last-applied annotation included.
    """
    metadata = obj.get("metadata") or {}
    entries: list[dict[str, Any]] = list(metadata.get("managedFields") or [])

    def client_side(entry: dict[str, Any]) -> bool:
        annotations = (entry.get("fieldsV1") or {}).get("f:metadata", {}).get("f:annotations", {})
        return entry.get("operation") == "Update" and f"f:{LAST_APPLIED}" in annotations

    history = [e for e in entries if client_side(e)]
    if not history:
        return None
    ours = [
        e for e in entries if e.get("manager") == FIELD_MANAGER and e.get("operation") == "Apply"
    ]
    fields: dict[str, Any] = {}
    for entry in [*ours, *history]:
        _merge_fields(fields, entry.get("fieldsV1") or {})
    apply_entry = {
        "manager": FIELD_MANAGER,
        "operation": "Apply",
        "apiVersion": obj.get("apiVersion"),
    }
    base = ours[0] if ours else apply_entry
    rest = [e for e in entries if e not in history and e not in ours]
    return [
        {
            "op": "test",
            "path": "/metadata/resourceVersion",
            "value": metadata.get("resourceVersion"),
        },
        {
            "op": "replace",
            "path": "/metadata/managedFields",
            "value": [*rest, {**base, "fieldsType": "FieldsV1", "fieldsV1": fields}],
        },
    ]


def registration_steps(
    specs: list[FunctionSpec], states: list[ServiceState], namespace: str
) -> str:
    """How to register each Service's URL as a Stripe webhook endpoint and store its secret."""
    urls = {state.name: state.url for state in states}
    lines = [
        "Register each URL as a Stripe webhook endpoint for its event type (Dashboard:",
        "Workbench > Webhooks > add a destination, or the stripe CLI below). Stripe shows the",
        "endpoint's signing secret (whsec_...) once: store it under the function's key in",
        f"Secret {WEBHOOK_SECRET}, then roll the Service so new pods read it (docs/deploy.md).",
        "",
    ]
    for spec in specs:
        url = urls.get(spec.service_name) or f"<URL of {spec.service_name}>"
        patch = json.dumps({"stringData": {spec.function_name: "whsec_..."}})
        note = "  (optional: every event type, deduplicated against the others)"
        lines += [
            f"# {spec.event_type} -> {spec.service_name}"
            + (note if spec.event_type == ALL_EVENTS else ""),
            f'stripe webhook_endpoints create --url "{url}" '
            f'-d "enabled_events[]={spec.event_type}"',
            f"kubectl -n {namespace} patch secret {WEBHOOK_SECRET} --type merge -p '{patch}'",
            "",
        ]
    if any(state.url.startswith("http://") for state in states):
        lines.append(
            "Note: Stripe needs https:// URLs in live mode; enable TLS for Knative's external "
            "domain (or put a TLS ingress in front) before registering live endpoints."
        )
    return "\n".join(lines).rstrip() + "\n"
