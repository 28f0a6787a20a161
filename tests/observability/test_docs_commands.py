"""The kubectl commands and scrape configs in the docs name what the manifests deploy.

A runbook command with a wrong namespace or label selector finds nothing exactly when it is
needed, and a scrape job in the wrong namespace leaves the NATS alerts unable to fire.
"""

from __future__ import annotations

import json
import re
import textwrap
from typing import Any

import pytest
import yaml
from stripe_bridge.deploy import access, knative, profiles, workloads
from stripe_bridge.deploy.kustomize import build
from stripe_bridge_testing.repo import REPO_ROOT

DOCS = [REPO_ROOT / "docs" / "runbook.md", REPO_ROOT / "docs" / "observability.md"]
#: Not deployed by this project (the Pushgateway's chart); only the namespace is checked.
THIRD_PARTY_NAMESPACES = {"monitoring"}


def deployed() -> list[dict[str, Any]]:
    """Every object of both environments: Services, consumers and the NATS overlay."""
    objects: list[dict[str, Any]] = []
    for env, profile in profiles.PROFILES.items():
        objects += knative.services(profile) + workloads.consumers(profile)
        objects += build(REPO_ROOT / "nats" / "overlays" / env)
    return objects


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    labels: dict[str, str] = spec.get("template", {}).get("metadata", {}).get("labels", {})
    return labels


def kubectl_commands() -> list[str]:
    """Each ``kubectl …`` in the docs (inline code or a code block line, continuations joined)."""
    commands = []
    for doc in DOCS:
        text = doc.read_text().replace("\\\n", " ")
        commands += re.findall(r"kubectl [^`\n]+", text)
    return commands


def option(command: str, *names: str) -> str | None:
    for name in names:
        found = re.search(rf"(?:^|\s){re.escape(name)}[ =](\S+)", command)
        if found:
            return found[1].strip("'\"")
    return None


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return deployed()


def test_docs_have_kubectl_commands() -> None:
    assert len(kubectl_commands()) >= 12


@pytest.mark.parametrize("command", kubectl_commands())
def test_kubectl_command_matches_the_manifests(command: str, objects: list[dict[str, Any]]) -> None:
    namespaces = {obj["metadata"]["namespace"] for obj in objects}
    namespace = option(command, "-n", "--namespace")
    assert namespace in namespaces | THIRD_PARTY_NAMESPACES, command
    if namespace in THIRD_PARTY_NAMESPACES:
        return
    here = [obj for obj in objects if obj["metadata"]["namespace"] == namespace]
    selector = option(command, "-l", "--selector")
    if selector:
        for term in selector.split(","):
            key, _, values = term.partition("=")
            for value in values.split("|"):
                assert any(pod_labels(o).get(key) == value for o in here), (term, command)
    kinds = {"deployment": "Deployment", "ksvc": "Service", "pod": "StatefulSet"}
    for kind, name in re.findall(r"\b(deployment|ksvc|pod)[/ ]([a-zA-Z][a-zA-Z0-9-]+)", command):
        name = re.sub(r"-N$", "", name)  # nats-N: a pod of the nats StatefulSet
        names = {o["metadata"]["name"] for o in here if o["kind"] == kinds[kind]}
        assert name in names, (kind, name, command)
    if " secret " in command and "patch" in command:
        templates = {s["metadata"]["name"]: s for s in access.secrets_template()}
        name = command.split(" secret ")[1].split()[0]
        assert name in templates, command
        (patch_text,) = re.findall(r"-p '([^']*)'", command)
        patch = json.loads(patch_text)
        assert set(patch["stringData"]) <= set(templates[name]["stringData"]), command


def scrape_jobs() -> list[dict[str, Any]]:
    text = (REPO_ROOT / "docs" / "observability.md").read_text()
    jobs = []
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        if "kubernetes_sd_configs" in block:
            loaded = yaml.safe_load(textwrap.dedent(block))
            jobs += loaded if isinstance(loaded, list) else []
    return jobs


def test_scrape_jobs_look_where_the_pods_are(objects: list[dict[str, Any]]) -> None:
    jobs = {job["job_name"]: job for job in scrape_jobs()}
    assert {"nats", "openmeter-forwarder"} <= set(jobs)
    for name, job in jobs.items():
        (sd,) = job["kubernetes_sd_configs"]
        for relabel in job["relabel_configs"]:
            source = relabel["source_labels"][0]
            if relabel.get("action") != "keep" or not source.startswith(
                "__meta_kubernetes_pod_label_"
            ):
                continue
            # Prometheus turns label names into [a-zA-Z0-9_]; compare the same way.
            wanted = source.removeprefix("__meta_kubernetes_pod_label_")
            for namespace in sd["namespaces"]["names"]:
                pods = [
                    pod_labels(o)
                    for o in objects
                    if o["metadata"]["namespace"] == namespace and pod_labels(o)
                ]
                assert any(
                    re.sub(r"[^a-zA-Z0-9_]", "_", k) == wanted and re.fullmatch(relabel["regex"], v)
                    for labels in pods
                    for k, v in labels.items()
                ), (name, namespace, relabel)
