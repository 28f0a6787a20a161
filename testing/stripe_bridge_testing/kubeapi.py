"""A loopback stand-in for the few Kubernetes API calls ``stripe-bridge knative apply`` makes.

No Kubernetes cluster can run here, so this server follows the documented contract of
those calls instead: discovery of ``serving.knative.dev/v1`` (a plain-text 404 when the
CRDs are not installed, as the API server answers for unknown groups), GET of a Service
(a ``Status`` 404 when absent), and server-side apply (PATCH with
``application/apply-patch+yaml``, a required ``fieldManager``, 201 on create, 200
otherwise; ``metadata.generation`` bumps only when the spec changes; ``dryRun=All``
stores nothing). Knative's controller is simulated by marking a Service Ready after it
has been read a few times since its last change. Deployments (``apps/v1``) and CronJobs
(``batch/v1``) take the same GET and apply calls at their own paths; the Deployment
controller is simulated the same way: after a few reads every replica is updated and
available, or (``ready_status="False"``) the ``Progressing`` condition reports
``ProgressDeadlineExceeded``, as Kubernetes does when new pods never become available.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from stripe_bridge.natsserver import free_port

from .standin import HttpStandIn, StandInHandler

TOKEN = "test-token-not-a-secret"
GROUP_PATH = "/apis/serving.knative.dev/v1"
#: Path prefix -> plural of the built-in kinds ``knative apply`` also writes.
WORKLOAD_PATHS = {"/apis/apps/v1": "deployments", "/apis/batch/v1": "cronjobs"}


@dataclass
class Call:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str


@dataclass
class FakeKubeAPI(HttpStandIn):
    """The server's behaviour, its stored Services and the requests it saw."""

    crds_installed: bool = True
    forbid_patch: bool = False
    #: Answer 403 to applies of Deployments and CronJobs (an old Role without them).
    forbid_workloads: bool = False
    #: GETs after a change before the simulated controller reports a final Ready status.
    reads_until_ready: int = 2
    ready_status: str = "True"
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: Deployments and CronJobs by (plural, namespace, name).
    workloads: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    reads: dict[tuple[str, str], int] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    port: int = field(default_factory=free_port)

    def __post_init__(self) -> None:
        super().__init__(self.port)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        """The few Kubernetes API calls ``knative apply`` makes."""
        return _handler(self)

    def kubeconfig(self, path: Path) -> Path:
        """Write a kubeconfig pointing at this server with a bearer token."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "deployer", "user": {"token": TOKEN}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "deployer"}}],
            "current-context": "fake",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    # --- the simulated API

    def status_view(self, key: tuple[str, str]) -> dict[str, Any]:
        obj = self.objects[key]
        self.reads[key] = self.reads.get(key, 0) + 1
        generation = obj["metadata"]["generation"]
        if self.reads[key] >= self.reads_until_ready:
            namespace, name = key
            obj["status"] = {
                "observedGeneration": generation,
                "url": f"http://{name}.{namespace}.example.com",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": self.ready_status,
                        **(
                            {"reason": "RevisionFailed", "message": "Container failed to start"}
                            if self.ready_status == "False"
                            else {}
                        ),
                    }
                ],
            }
        return obj

    def workload_view(self, key: tuple[str, str, str]) -> dict[str, Any]:
        obj = self.workloads[key]
        self.reads[key[1:]] = self.reads.get(key[1:], 0) + 1
        if key[0] == "deployments" and self.reads[key[1:]] >= self.reads_until_ready:
            replicas = obj["spec"].get("replicas", 1)
            status: dict[str, Any] = {"observedGeneration": obj["metadata"]["generation"]}
            if self.ready_status == "False":
                status["conditions"] = [
                    {
                        "type": "Progressing",
                        "status": "False",
                        "reason": "ProgressDeadlineExceeded",
                        "message": f'ReplicaSet "{key[2]}-7d9f" has timed out progressing.',
                    }
                ]
            else:
                status.update(
                    replicas=replicas,
                    updatedReplicas=replicas,
                    readyReplicas=replicas,
                    availableReplicas=replicas,
                )
            obj["status"] = status
        return obj

    def apply(
        self,
        key: tuple[str, str],
        body: dict[str, Any],
        dry_run: bool,
        store: dict[Any, dict[str, Any]] | None = None,
        store_key: Any = None,
    ) -> tuple[int, Any]:
        """Server-side apply into ``store`` (the Services unless given) under ``store_key``."""
        namespace, name = key
        store = self.objects if store is None else store
        store_key = key if store_key is None else store_key
        current = store.get(store_key)
        generation = 1
        if current is not None:
            generation = current["metadata"]["generation"]
            if current["spec"] != body["spec"]:
                generation += 1
        stored = {
            "apiVersion": body["apiVersion"],
            "kind": body["kind"],
            "metadata": {
                **body["metadata"],
                "namespace": namespace,
                "name": name,
                "generation": generation,
            },
            "spec": body["spec"],
            "status": (current or {}).get("status", {}),
        }
        if not dry_run:
            if current is None or current["metadata"]["generation"] != generation:
                self.reads[key if store_key == key else store_key[1:]] = 0
            store[store_key] = stored
        return (201 if current is None else 200), stored


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _handler(api: FakeKubeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(StandInHandler):
        def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
            self.send(code, body, content_type)

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            raw = self.read_body()
            api.calls.append(Call(method, url.path, query, self.headers.get("Content-Type", "")))
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                self._send(401, _status(401, "Unauthorized", "Unauthorized"))
                return
            for prefix, plural in WORKLOAD_PATHS.items():
                if url.path.startswith(prefix + "/"):
                    self._workload(method, plural, url.path[len(prefix) :], query, raw)
                    return
            if not api.crds_installed and url.path.startswith(GROUP_PATH):
                self._send(404, b"404 page not found\n", "text/plain; charset=utf-8")
                return
            if url.path == GROUP_PATH and method == "GET":
                self._send(200, _resource_list())
                return
            parts = url.path[len(GROUP_PATH) :].strip("/").split("/")
            if len(parts) != 4 or parts[0] != "namespaces" or parts[2] != "services":
                self._send(404, _status(404, "NotFound", "the server could not find the resource"))
                return
            key = (parts[1], parts[3])
            if method == "GET":
                if key not in api.objects:
                    message = f'services.serving.knative.dev "{key[1]}" not found'
                    self._send(404, _status(404, "NotFound", message))
                    return
                self._send(200, api.status_view(key))
                return
            self._patch(key, query, raw)

        def _workload(
            self, method: str, plural: str, rest: str, query: dict[str, list[str]], raw: bytes
        ) -> None:
            parts = rest.strip("/").split("/")
            if len(parts) != 4 or parts[0] != "namespaces" or parts[2] != plural:
                self._send(404, _status(404, "NotFound", "the server could not find the resource"))
                return
            key = (plural, parts[1], parts[3])
            group = "apps" if plural == "deployments" else "batch"
            if method == "GET":
                if key not in api.workloads:
                    message = f'{plural}.{group} "{key[2]}" not found'
                    self._send(404, _status(404, "NotFound", message))
                    return
                self._send(200, api.workload_view(key))
                return
            if not self._valid_apply(query):
                return
            if api.forbid_workloads:
                message = (
                    f'{plural}.{group} "{key[2]}" is forbidden: User "deployer" cannot patch '
                    f'resource "{plural}" in API group "{group}" in the namespace "{key[1]}"'
                )
                self._send(403, _status(403, "Forbidden", message))
                return
            body = yaml.safe_load(raw)
            dry_run = query.get("dryRun") == ["All"]
            code, stored = api.apply(key[1:], body, dry_run, api.workloads, key)
            self._send(code, stored)

        def _valid_apply(self, query: dict[str, list[str]]) -> bool:
            """An apply patch with a field manager; otherwise answer as the API server does."""
            if self.headers.get("Content-Type") != "application/apply-patch+yaml":
                self._send(415, _status(415, "UnsupportedMediaType", "not an apply patch"))
                return False
            if not query.get("fieldManager"):
                message = "PatchOptions.meta.k8s.io is invalid: fieldManager: Required value"
                self._send(422, _status(422, "Invalid", message))
                return False
            return True

        def _patch(self, key: tuple[str, str], query: dict[str, list[str]], raw: bytes) -> None:
            if not self._valid_apply(query):
                return
            if api.forbid_patch:
                message = (
                    f'services.serving.knative.dev "{key[1]}" is forbidden: User "deployer" '
                    f'cannot patch resource "services" in API group "serving.knative.dev" '
                    f'in the namespace "{key[0]}"'
                )
                self._send(403, _status(403, "Forbidden", message))
                return
            body = yaml.safe_load(raw)
            code, stored = api.apply(key, body, query.get("dryRun") == ["All"])
            self._send(code, stored)

        def do_GET(self) -> None:
            self._route("GET")

        def do_PATCH(self) -> None:
            self._route("PATCH")

    return Handler


def _resource_list() -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "serving.knative.dev/v1",
        "resources": [
            {
                "name": "services",
                "singularName": "service",
                "namespaced": True,
                "kind": "Service",
                "verbs": ["delete", "get", "list", "patch", "create", "update", "watch"],
                "shortNames": ["ksvc", "kservice"],
                "categories": ["all", "knative", "serving"],
            },
            {
                "name": "services/status",
                "singularName": "",
                "namespaced": True,
                "kind": "Service",
                "verbs": ["get", "patch", "update"],
            },
        ],
    }
