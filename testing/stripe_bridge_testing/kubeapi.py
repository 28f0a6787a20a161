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

Field ownership is tracked as server-side apply does (managed fields): each manager owns
the leaf fields it set (``.spec.replicas``, ``.spec.template.spec.containers[name="x"].image``;
lists of named objects are keyed by name, other lists are one atomic field). An apply that
changes a field another manager owns is refused with the API server's 409 ``Conflict``
Status unless ``force=true``, which moves those fields to the applier (same value: owned
by both, no conflict). The Status is built as k8s.io/apimachinery builds it
(pkg/util/managedfields/internal/conflict.go ``NewConflictError``/``printManager``,
pkg/api/errors ``NewApplyConflict``; read at eed236ce): reason ``Conflict``, code 409,
``details.causes`` of reason ``FieldManagerConflict``, message ``Apply failed with N
conflicts: conflicts with "<manager>" using <apiVersion>:`` and one ``- <path>`` line per
field. A field only the applier owned and no longer sends is removed; other managers'
fields stay. Owners are returned as ``metadata.managedFields`` (``fieldsV1``), which a JSON
patch (``test`` of ``resourceVersion``, ``replace`` of ``managedFields``) may rewrite, as
kubectl's client-side-apply migration does. ``seed`` stores an object as an earlier writer
left it, e.g. ``kubectl apply`` without ``--server-side``: an ``Update`` by
``kubectl-client-side-apply`` owning the fields and its last-applied annotation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from stripe_bridge.ops.natsserver import free_port

from .standin import HttpStandIn, StandInHandler

TOKEN = "test-token-not-a-secret"
JSON_PATCH = "application/json-patch+json"
#: The manager ``kubectl apply`` (client-side) records its writes under
#: (kubernetes/kubectl pkg/cmd/apply/apply.go ``FieldManagerClientSideApply``).
CLIENT_SIDE_APPLY = "kubectl-client-side-apply"
#: The annotation client-side ``kubectl apply`` keeps its last manifest in.
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
#: A field as managed fields name it: ``("f:spec", "f:containers", 'k:{"name":"x"}', ...)``.
FieldPath = tuple[str, ...]
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
class Manager:
    """One entry of an object's managed fields: who wrote which leaf fields, and how."""

    name: str
    #: "Apply" (server-side apply) or "Update" (any other write, client-side apply included).
    operation: str
    api_version: str
    fields: set[FieldPath]

    def printed(self) -> str:
        """As apimachinery's ``printManager`` names it in conflict messages."""
        if self.operation == "Update":
            return f'"{self.name}" using {self.api_version}'
        return f'"{self.name}"'

    def entry(self) -> dict[str, Any]:
        """As ``metadata.managedFields`` lists it."""
        return {
            "manager": self.name,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(self.fields),
        }

    @classmethod
    def from_entry(cls, entry: dict[str, Any]) -> Manager:
        """One ``metadata.managedFields`` entry (as a JSON patch writes it back)."""
        fields = leaf_paths(entry.get("fieldsV1") or {})
        return cls(entry["manager"], entry["operation"], entry.get("apiVersion", ""), fields)


def _key(name: Any) -> str:
    return "k:" + json.dumps({"name": name}, separators=(",", ":"))


def leaf_fields(value: Any, path: FieldPath = ()) -> dict[FieldPath, Any]:
    """Field path -> value for every field server-side apply tracks an owner of."""
    if isinstance(value, dict) and value:
        fields: dict[FieldPath, Any] = {}
        for key, item in value.items():
            fields.update(leaf_fields(item, (*path, f"f:{key}")))
        return fields
    if (
        isinstance(value, list)
        and value
        and all(isinstance(i, dict) and "name" in i for i in value)
    ):
        fields = {}
        for item in value:
            fields.update(leaf_fields(item, (*path, _key(item["name"]))))
        return fields
    return {path: value}


def build(fields: dict[FieldPath, Any]) -> dict[str, Any]:
    """The object ``leaf_fields`` took apart (keyed list items in first-seen order)."""
    root: dict[str, Any] = {}
    for path, value in fields.items():
        node: Any = root
        for index, element in enumerate(path):
            last = index == len(path) - 1
            if element.startswith("k:"):
                name = json.loads(element[2:])["name"]
                found = [item for item in node if item.get("name") == name]
                if not found:
                    node.append({"name": name})
                    found = [node[-1]]
                node = found[0]
                continue
            key = element[2:]
            if last and value == {}:
                node.setdefault(key, {})  # "the map exists": never empties one with fields
            elif last:
                node[key] = value
            else:
                keyed = path[index + 1].startswith("k:")
                node = node.setdefault(key, [] if keyed else {})
    return root


def dotted(path: FieldPath) -> str:
    """A field path as the API server prints it (``.spec.containers[name="x"].image``)."""
    text = ""
    for element in path:
        if element.startswith("f:"):
            text += "." + element[2:]
        else:
            text += "".join(f'[{k}="{v}"]' for k, v in json.loads(element[2:]).items())
    return text


def fields_v1(paths: set[FieldPath]) -> dict[str, Any]:
    """``paths`` as the nested ``fieldsV1`` of a managed-fields entry."""
    root: dict[str, Any] = {}
    for path in paths:
        node = root
        for element in path:
            node = node.setdefault(element, {})
    return root


def leaf_paths(fields: dict[str, Any], path: FieldPath = ()) -> set[FieldPath]:
    """The leaf paths of a ``fieldsV1`` tree."""
    if not fields:
        return {path}
    return {
        leaf for key, sub in fields.items() if key != "." for leaf in leaf_paths(sub, (*path, key))
    }


def owned_fields(obj: dict[str, Any]) -> dict[FieldPath, Any]:
    """The fields of a manifest that have owners (not its identity: kind, name, namespace)."""
    metadata = {k: v for k, v in obj["metadata"].items() if k in ("labels", "annotations")}
    return leaf_fields({"metadata": metadata, "spec": obj["spec"]})


def conflict_status(conflicts: list[tuple[Manager, FieldPath]]) -> dict[str, Any]:
    """The 409 Status of an apply that would change fields other managers own."""
    causes = [
        {
            "reason": "FieldManagerConflict",
            "message": f"conflict with {m.printed()}",
            "field": dotted(f),
        }
        for m, f in conflicts
    ]
    if len(conflicts) == 1:
        manager, path = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {manager.printed()}: {dotted(path)}"
    else:
        lines = []
        for name in sorted({m.name for m, _ in conflicts}):
            mine = [(m, f) for m, f in conflicts if m.name == name]
            lines.append(f"conflicts with {mine[0][0].printed()}:")
            lines += [f"- {dotted(f)}" for _, f in mine]
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return {**_status(409, "Conflict", message), "details": {"causes": causes}}


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
    #: Managed fields of each stored object (by its key in ``objects`` or ``workloads``).
    managers: dict[Any, dict[str, Manager]] = field(default_factory=dict)
    #: The last resourceVersion handed out.
    version: int = 0
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

    def seed(
        self,
        manifest: dict[str, Any],
        namespace: str,
        manager: str = CLIENT_SIDE_APPLY,
        operation: str = "Update",
    ) -> None:
        """Store ``manifest`` as if ``manager`` had written it (default: ``kubectl apply``)."""
        name = manifest["metadata"]["name"]
        if manifest["kind"] == "Service":
            store: dict[Any, dict[str, Any]] = self.objects
            key: Any = (namespace, name)
        else:
            plural = {"Deployment": "deployments", "CronJob": "cronjobs"}[manifest["kind"]]
            store, key = self.workloads, (plural, namespace, name)
        if manager == CLIENT_SIDE_APPLY:
            # kubectl keeps the manifest it applied in an annotation (its three-way merge).
            annotations = {**manifest["metadata"].get("annotations", {})}
            annotations[LAST_APPLIED] = json.dumps(manifest, sort_keys=True)
            manifest = {
                **manifest,
                "metadata": {**manifest["metadata"], "annotations": annotations},
            }
        metadata = {**manifest["metadata"], "namespace": namespace, "generation": 1}
        store[key] = {**manifest, "metadata": metadata, "status": {}}
        fields = set(owned_fields(manifest))
        self.managers[key] = {manager: Manager(manager, operation, manifest["apiVersion"], fields)}
        self._publish_managers(store[key], key)

    def owners(self, key: Any, path: str) -> set[str]:
        """Who owns field ``path`` (as printed, ``.spec.replicas``) of the object at ``key``."""
        managers = self.managers.get(key, {}).values()
        return {m.name for m in managers if any(dotted(f) == path for f in m.fields)}

    def _publish_managers(self, obj: dict[str, Any], key: Any) -> None:
        """Show ``key``'s owners in ``metadata.managedFields``; a write bumps resourceVersion."""
        managers = self.managers.get(key, {}).values()
        obj["metadata"]["managedFields"] = [m.entry() for m in managers]
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)

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
        manager: str = "",
        force: bool = False,
    ) -> tuple[int, Any]:
        """Server-side apply into ``store`` (the Services unless given) under ``store_key``;
        409 (a Status) if it would change fields another manager owns and not ``force``."""
        namespace, name = key
        store = self.objects if store is None else store
        store_key = key if store_key is None else store_key
        current = store.get(store_key)
        before = owned_fields(current) if current is not None else {}
        after = owned_fields(body)
        changed = {f for f, value in after.items() if f in before and before[f] != value}
        others = [m for m in self.managers.get(store_key, {}).values() if m.name != manager]
        conflicts = sorted(
            ((m, f) for m in others for f in sorted(changed & m.fields)),
            key=lambda c: (c[0].name, c[1]),
        )
        if conflicts and not force:
            return 409, conflict_status(conflicts)
        managers = self._owners_after(store_key, manager, set(after), changed)
        # Fields only this manager owned and no longer sends are removed; other managers'
        # fields stay as they are.
        kept = {f: v for f, v in before.items() if any(f in m.fields for m in managers.values())}
        merged = build({**kept, **after})
        generation = 1
        if current is not None:
            generation = current["metadata"]["generation"]
            if current["spec"] != merged["spec"]:
                generation += 1
        stored = {
            "apiVersion": body["apiVersion"],
            "kind": body["kind"],
            "metadata": {
                **merged["metadata"],
                "namespace": namespace,
                "name": name,
                "generation": generation,
            },
            "spec": merged["spec"],
            "status": (current or {}).get("status", {}),
        }
        if not dry_run:
            if current is None or current["metadata"]["generation"] != generation:
                self.reads[key if store_key == key else store_key[1:]] = 0
            store[store_key] = stored
            self.managers[store_key] = managers
            self._publish_managers(stored, store_key)
        return (201 if current is None else 200), stored

    def json_patch(self, store: dict[Any, dict[str, Any]], key: Any, ops: list[Any]) -> Any:
        """The JSON patch kubectl's migration sends: ``test`` the resourceVersion, ``replace``
        the managed fields. A failed test is a 409 Conflict, as the API server answers."""
        obj = store[key]
        for op in ops:
            if op["op"] == "test" and op["path"] == "/metadata/resourceVersion":
                if obj["metadata"]["resourceVersion"] != op["value"]:
                    message = "the object has been modified; please apply your changes again"
                    return 409, _status(409, "Conflict", message)
            elif op["op"] == "replace" and op["path"] == "/metadata/managedFields":
                entries = [Manager.from_entry(entry) for entry in op["value"]]
                self.managers[key] = {m.name: m for m in entries}
            else:
                return 422, _status(422, "Invalid", f"unsupported patch operation {op}")
        self._publish_managers(obj, key)
        return 200, obj

    def _owners_after(
        self, key: Any, manager: str, fields: set[FieldPath], changed: set[FieldPath]
    ) -> dict[str, Manager]:
        """``manager`` owns ``fields`` (and only those); others lose the ``changed`` ones."""
        managers = {
            name: Manager(m.name, m.operation, m.api_version, m.fields - changed)
            for name, m in self.managers.get(key, {}).items()
            if name != manager
        }
        managers[manager] = Manager(manager, "Apply", "", fields)
        return {name: m for name, m in managers.items() if m.fields}


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
            if self.headers.get("Content-Type") == JSON_PATCH and key in api.workloads:
                self._send(*api.json_patch(api.workloads, key, json.loads(raw)))
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
            code, stored = api.apply(
                key[1:], body, dry_run, api.workloads, key, *self._applier(query)
            )
            self._send(code, stored)

        def _applier(self, query: dict[str, list[str]]) -> tuple[str, bool]:
            """The apply's field manager and whether it forces conflicts (``force=true``)."""
            return query["fieldManager"][0], query.get("force") == ["true"]

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
            if self.headers.get("Content-Type") == JSON_PATCH and key in api.objects:
                self._send(*api.json_patch(api.objects, key, json.loads(raw)))
                return
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
            dry_run = query.get("dryRun") == ["All"]
            code, stored = api.apply(key, body, dry_run, None, None, *self._applier(query))
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
