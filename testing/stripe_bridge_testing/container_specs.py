"""How the rendered manifests in knative/<env>/ run the image, read from the YAML itself.

The container tests start the image with what these return (environment, command,
probes, limits, the termination budget), so a manifest and the test that proves it cannot
drift apart. The Knative rules ported here are knative/serving's (commit 98e5ef90aa70,
pkg/reconciler/revision/resources/): PORT is the user container's port (deploy.go:353);
K_SERVICE, K_CONFIGURATION and K_REVISION are set (env_var.go:26-28); a httpGet probe
without a port probes the user port (deploy.go:147-148); the pod's
terminationGracePeriodSeconds is the revision's timeoutSeconds (deploy.go:309).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .repo import REPO_ROOT

#: (Secret name, key) -> value: what the cluster's Secrets would hold.
Secrets = Mapping[tuple[str, str], str]


@dataclass(frozen=True)
class Probe:
    """A httpGet probe: path and container port."""

    path: str
    port: int


@dataclass(frozen=True)
class ContainerSpec:
    """One container of a rendered manifest, as a container engine needs it."""

    name: str
    command: list[str]
    env: list[dict[str, Any]]
    port: int
    readiness: Probe
    liveness: Probe
    #: How long the container may take to stop after SIGTERM.
    grace_seconds: int
    memory: str
    cpus: str
    read_only: bool
    #: The user it must run as, when the manifest says (Knative Services leave it to the image).
    user: int | None

    def environment(self, secrets: Secrets) -> dict[str, str]:
        """The container's environment with ``secretKeyRef`` values taken from ``secrets``."""
        out = {}
        for item in self.env:
            if "value" in item:
                out[item["name"]] = str(item["value"])
            else:
                ref = item["valueFrom"]["secretKeyRef"]
                out[item["name"]] = secrets[(ref["name"], ref["key"])]
        return out


def manifest_path(environment: str, name: str) -> Path:
    """knative/<environment>/<name>.yaml."""
    return REPO_ROOT / "knative" / environment / f"{name}.yaml"


def _probe(probe: dict[str, Any], ports: dict[str, int], default: int) -> Probe:
    port = probe["httpGet"].get("port", default)
    return Probe(probe["httpGet"]["path"], ports[port] if isinstance(port, str) else int(port))


def _cpus(limit: str) -> str:
    return str(int(limit[:-1]) / 1000) if limit.endswith("m") else limit


def _container(pod: dict[str, Any], name: str, grace: int, user: int | None) -> ContainerSpec:
    (container,) = pod["containers"]
    ports = {p.get("name", str(p["containerPort"])): p["containerPort"] for p in container["ports"]}
    port = container["ports"][0]["containerPort"]
    limits = container["resources"]["limits"]
    return ContainerSpec(
        name=name,
        command=container.get("command", []) + container.get("args", []),
        env=container["env"],
        port=port,
        readiness=_probe(container["readinessProbe"], ports, port),
        liveness=_probe(container["livenessProbe"], ports, port),
        grace_seconds=grace,
        memory=limits["memory"].replace("Mi", "m"),
        cpus=_cpus(limits["cpu"]),
        read_only=container["securityContext"]["readOnlyRootFilesystem"],
        user=user,
    )


def knative_service(environment: str, name: str) -> ContainerSpec:
    """The container of the Knative Service in knative/<environment>/<name>.yaml."""
    service = yaml.safe_load(manifest_path(environment, name).read_text())
    spec = service["spec"]["template"]["spec"]
    return _container(spec, service["metadata"]["name"], spec["timeoutSeconds"], None)


def knative_env(spec: ContainerSpec, revision: int = 1) -> dict[str, str]:
    """What Knative adds to a revision's container environment."""
    return {
        "PORT": str(spec.port),
        "K_SERVICE": spec.name,
        "K_CONFIGURATION": spec.name,
        "K_REVISION": f"{spec.name}-{revision:05d}",
    }


def deployments(environment: str, name: str = "consumers") -> dict[str, ContainerSpec]:
    """Deployment name -> its container, from knative/<environment>/<name>.yaml."""
    out = {}
    for doc in yaml.safe_load_all(manifest_path(environment, name).read_text()):
        if doc and doc["kind"] == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            grace = pod.get("terminationGracePeriodSeconds", 30)
            user = pod.get("securityContext", {}).get("runAsUser")
            out[doc["metadata"]["name"]] = _container(pod, doc["metadata"]["name"], grace, user)
    return out
