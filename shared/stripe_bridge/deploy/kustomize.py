"""A small, strict subset of ``kustomize build`` for the manifests under ``nats/``.

No kustomize binary is installable from the registries this project may use (Debian's
``kubernetes-client`` is 1.20, without ``kubectl kustomize``'s v5 features), so the
tests and ``stripe-bridge nats build`` render with this. It supports exactly what
``nats/`` uses and refuses anything else, rather than render it wrongly:

- ``resources``: YAML files and directories holding a kustomization;
- ``namespace``; ``labels`` with ``pairs`` (metadata labels only, as kustomize does
  without ``includeSelectors``/``includeTemplates``);
- ``patches`` whose patch (inline or ``path``) is a JSON 6902 list of add/replace/remove
  operations with a ``kind``/``name`` target;
- ``images`` with ``newName``/``newTag``.

When ``kubectl`` is on PATH, the tests also compare this output with ``kubectl kustomize``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from ..errors import StripeBridgeError

KUSTOMIZATION = "kustomization.yaml"
_SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "patches", "images"}


class KustomizeError(StripeBridgeError):
    """The kustomization uses something this subset does not render, or is invalid."""


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document in ``path``."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def build(directory: Path) -> list[dict[str, Any]]:
    """The objects ``kustomize build directory`` would produce (in resource order)."""
    kustomization_file = directory / KUSTOMIZATION
    if not kustomization_file.exists():
        raise KustomizeError(f"{directory}: no {KUSTOMIZATION}")
    spec: dict[str, Any] = yaml.safe_load(kustomization_file.read_text()) or {}
    unknown = set(spec) - _SUPPORTED
    if unknown:
        raise KustomizeError(f"{kustomization_file}: unsupported fields {sorted(unknown)}")
    objects: list[dict[str, Any]] = []
    for resource in spec.get("resources", []):
        target = directory / resource
        objects += build(target) if target.is_dir() else load_documents(target)
    for patch in spec.get("patches", []):
        _apply_patch(directory, patch, objects)
    for image in spec.get("images", []):
        _set_image(image, objects)
    for labels in spec.get("labels", []):
        if set(labels) - {"pairs"}:
            raise KustomizeError(f"{kustomization_file}: labels support only 'pairs'")
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(labels["pairs"])
    if "namespace" in spec:
        for obj in objects:
            obj.setdefault("metadata", {})["namespace"] = spec["namespace"]
    return objects


def _apply_patch(directory: Path, patch: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    if "path" in patch:
        operations = yaml.safe_load((directory / patch["path"]).read_text())
    else:
        operations = yaml.safe_load(patch["patch"])
    if not isinstance(operations, list):
        raise KustomizeError(f"{directory}: only JSON 6902 patches (a list of operations)")
    target = patch.get("target") or {}
    matched = [
        obj
        for obj in objects
        if obj.get("kind") == target.get("kind")
        and obj.get("metadata", {}).get("name") == target.get("name")
    ]
    if not matched:
        raise KustomizeError(f"{directory}: patch target {target} matches nothing")
    for obj in matched:
        for operation in operations:
            json_patch(obj, operation)


def json_patch(document: dict[str, Any], operation: dict[str, Any]) -> None:
    """Apply one RFC 6902 ``add``/``replace``/``remove`` operation in place."""
    op = operation["op"]
    keys = [part.replace("~1", "/").replace("~0", "~") for part in operation["path"].split("/")[1:]]
    parent: Any = document
    for key in keys[:-1]:
        parent = parent[int(key)] if isinstance(parent, list) else parent[key]
    last = keys[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if op == "add":
            parent.insert(index, copy.deepcopy(operation["value"]))
        elif op == "replace":
            parent[index] = copy.deepcopy(operation["value"])
        elif op == "remove":
            del parent[index]
        else:
            raise KustomizeError(f"unsupported patch op {op!r}")
        return
    if op in ("replace", "remove") and last not in parent:
        raise KustomizeError(f"patch path {operation['path']} does not exist")
    if op in ("add", "replace"):
        parent[last] = copy.deepcopy(operation["value"])
    elif op == "remove":
        del parent[last]
    else:
        raise KustomizeError(f"unsupported patch op {op!r}")


def _set_image(image: dict[str, Any], objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            name, _, tag = container["image"].partition(":")
            if name != image["name"]:
                continue
            container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"


def render(objects: list[dict[str, Any]]) -> str:
    """The objects as one multi-document YAML stream."""
    return "---\n".join(yaml.safe_dump(obj, sort_keys=False, width=1000) for obj in objects)
