"""The kind walkthrough in knative/README.md creates what the staging manifests need.

Nothing here runs kind (no container engine here). Its commands are read as the shell would
run them and compared with the rendered staging objects: every Secret key a pod reads
(functions, consumers, NATS) must be created by a ``kubectl create secret`` of the
walkthrough, in the namespace the pod runs in (a missing key is a pod stuck in
CreateContainerConfigError: the walkthrough once lacked ``usage-password``), and every
namespace, overlay, environment and Service URL it names must exist.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from stripe_bridge.deploy import knative, profiles, workloads
from stripe_bridge.deploy.kustomize import build
from stripe_bridge_testing.repo import REPO_ROOT

README = REPO_ROOT / "knative" / "README.md"
PROFILE = profiles.PROFILES["staging"]


def walkthrough() -> list[str]:
    """The walkthrough's shell commands, continuations joined, comments dropped."""
    text = README.read_text().split("## Staging on kind", 1)[1]
    (block,) = re.findall(r"```sh\n(.*?)```", text, re.S)[:1]
    lines = block.replace("\\\n", " ").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def staging_objects() -> list[dict[str, Any]]:
    objects = knative.services(PROFILE) + workloads.consumers(PROFILE)
    return objects + build(REPO_ROOT / "nats" / "overlays" / "staging")


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod = spec.get("template", {}).get("spec")
    return [pod] if pod else []


def needed_keys() -> set[tuple[str, str, str]]:
    """(namespace, Secret, key) of every secretKeyRef in the staging pods."""
    needed = set()
    for obj in staging_objects():
        for pod in pod_specs(obj):
            for container in pod["containers"]:
                for var in container.get("env") or []:
                    ref = (var.get("valueFrom") or {}).get("secretKeyRef")
                    if ref and not ref.get("optional"):
                        needed.add((obj["metadata"]["namespace"], ref["name"], ref["key"]))
    return needed


def created_keys(commands: list[str]) -> set[tuple[str, str, str]]:
    """(namespace, Secret, key) created by the walkthrough's ``kubectl create secret``."""
    created = set()
    for command in commands:
        found = re.match(r"kubectl -n (\S+) create secret generic (\S+) (.*)", command)
        if not found:
            continue
        namespace, name, rest = found.groups()
        keys = set(re.findall(r"--from-literal=([a-z0-9_-]+)=", rest))
        loop = re.search(r"\$\(ls functions \| grep -v '\^(\w+)'\)", rest)
        if loop:  # one key per function folder, as the shell loop prints them
            keys |= {
                p.name
                for p in (REPO_ROOT / "functions").iterdir()
                if p.is_dir() and not p.name.startswith(loop[1])
            }
        created |= {(namespace, name, key) for key in keys}
    return created


def test_every_secret_key_the_staging_pods_read_is_created() -> None:
    needed, created = needed_keys(), created_keys(walkthrough())
    assert len(needed) > 10
    assert needed - created == set()


def test_a_missing_key_is_caught() -> None:
    commands = [c.replace("--from-literal=usage-password=", "--x=") for c in walkthrough()]
    missing = needed_keys() - created_keys(commands)
    assert (PROFILE.namespace, "nats-auth", "usage-password") in missing


@pytest.mark.parametrize("command", walkthrough())
def test_names_in_the_commands_exist(command: str) -> None:
    namespaces = {o["metadata"]["namespace"] for o in staging_objects()}
    for namespace in re.findall(r"(?:-n|namespace) (stripe-bridge\S*)", command):
        assert namespace in namespaces, command
    if overlay := re.search(r"--overlay (\S+)", command):
        assert (REPO_ROOT / "nats" / "overlays" / overlay[1]).is_dir()
    if env := re.search(r"--env (\S+)", command):
        assert env[1] in profiles.PROFILES
    for name, namespace in re.findall(r"http://([a-z0-9-]+)\.(stripe-bridge[a-z-]*)\.", command):
        services = {s["metadata"]["name"] for s in knative.services(PROFILE)}
        assert namespace == PROFILE.namespace and name in services, command
    for path in re.findall(r"-f (knative/\S+)", command):
        assert (REPO_ROOT / path).is_file(), command
