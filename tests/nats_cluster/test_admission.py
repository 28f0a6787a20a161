"""What Kubernetes admission and the kubelet check beyond the schema, on every object we deploy.

Ported from kubernetes/kubernetes ``pkg/apis/apps/validation/validation.go``
(``ValidateStatefulSetUpdate``: only replicas, template, updateStrategy,
persistentVolumeClaimRetentionPolicy, minReadySeconds and ordinals may change;
``ValidateStatefulSetSpec``/``ValidateDeploymentSpec``: the selector must match the
template's labels) and ``pkg/apis/core/validation/validation.go`` (``validateProbe``:
a startup or liveness probe's successThreshold must be 1; a named probe port must be a
container port, which the kubelet otherwise fails on every probe). Selectors of the PDB and
Services must select the pods, or the budget protects nothing and the Service has no
endpoints. The sizes of issue #15 (GOMEMLIMIT, requests = limits, the storage chain) are
checked here too, and nats-server itself reads max_file_store from the environment.
Source commits were not pinned for the Kubernetes rules: no Kubernetes source is fetched
here (see docs/testing.md).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import re
import subprocess
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from stripe_bridge.deploy import alert_model, knative, profiles
from stripe_bridge.deploy.kustomize import build
from stripe_bridge.deploy.natsconf import (
    MAX_FILE_STORE_ENV,
    PASSWORD_ENV,
    SIZING,
    kubernetes_params,
    new_password,
    render_nats_conf,
    size_bytes,
)
from stripe_bridge.deploy.workloads import consumers
from stripe_bridge.ops.natsserver import NatsServer, free_port
from stripe_bridge_testing.repo import REPO_ROOT

ENVS = ("staging", "production")
#: ValidateStatefulSetUpdate: the spec fields an update may change.
STATEFULSET_MUTABLE = {
    "replicas", "template", "updateStrategy", "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds", "ordinals",
}  # fmt: skip


def nats_objects(env: str, root: Path = REPO_ROOT) -> list[dict[str, Any]]:
    return build(root / "nats" / "overlays" / env)


def workloads(env: str) -> list[dict[str, Any]]:
    profile = profiles.PROFILES[env]
    return [o for o in nats_objects(env) if o["kind"] == "StatefulSet"] + [
        o for o in consumers(profile) if o["kind"] == "Deployment"
    ]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def statefulset(env: str) -> dict[str, Any]:
    return one(nats_objects(env), "StatefulSet", "nats")


def nats_container(sts: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = sts["spec"]["template"]["spec"]["containers"]
    (container,) = [c for c in containers if c["name"] == "nats"]
    return container


# ------------------------------------------------------------------------ the ported rules


def immutable_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``ValidateStatefulSetUpdate``: spec fields that differ outside the mutable set."""
    keys = (set(old["spec"]) | set(new["spec"])) - STATEFULSET_MUTABLE
    return sorted(k for k in keys if old["spec"].get(k) != new["spec"].get(k))


def selector_errors(workload: dict[str, Any]) -> list[str]:
    """``ValidateStatefulSetSpec``/``ValidateDeploymentSpec``: selector matches the template."""
    wanted = workload["spec"]["selector"]["matchLabels"]
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return [f"{k}={v}" for k, v in wanted.items() if labels.get(k) != v]


def probe_errors(container: dict[str, Any]) -> list[str]:
    """``validateProbe`` and the kubelet: successThreshold 1 for startup/liveness, named
    ports that exist in the container."""
    ports = {p["name"] for p in container.get("ports") or [] if p.get("name")}
    errors = []
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = container.get(kind)
        if probe is None:
            continue
        if kind != "readinessProbe" and probe.get("successThreshold", 1) != 1:
            errors.append(f"{kind}.successThreshold must be 1")
        port = (probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port")
        if isinstance(port, str) and port not in ports:
            errors.append(f"{kind} port {port!r} is no container port")
    return errors


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def previous_nats(tmp: Path) -> Path:
    """The nats/ folder at the merge base with main (the render a cluster has now)."""
    base = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "merge-base", "HEAD", "main"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", base or "HEAD", "nats"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp, filter="data")
    return tmp


# --------------------------------------------------------------- applied to what we deploy


def storage_grown(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """The volume claims differ only by a larger storage request: the one immutable change
    with a path (docs/runbook.md, resize-pvcs: grow each PVC, delete the StatefulSet with
    ``--cascade=orphan``, apply)."""
    old_claim, new_claim = (copy.deepcopy(s["spec"]["volumeClaimTemplates"][0]) for s in (old, new))
    sizes = [c["spec"]["resources"]["requests"].pop("storage") for c in (old_claim, new_claim)]
    return old_claim == new_claim and size_bytes(sizes[1]) > size_bytes(sizes[0])


@pytest.mark.parametrize("env", ENVS)
def test_statefulset_update_changes_only_mutable_fields(env: str, tmp_path: Path) -> None:
    old = one(nats_objects(env, previous_nats(tmp_path)), "StatefulSet", "nats")
    new = statefulset(env)
    changes = immutable_changes(old, new)
    if changes == ["volumeClaimTemplates"] and storage_grown(old, new):
        # Allowed only with the upgrade step in the changelog: `nats apply` alone is refused.
        assert "#resize-pvcs" in (REPO_ROOT / "README.md").read_text()
        changes = []
    assert changes == []


def test_a_storage_growth_is_told_from_other_claim_changes() -> None:
    new = statefulset("production")
    bigger = copy.deepcopy(new)
    bigger["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] = "9Ti"
    assert storage_grown(new, bigger) and not storage_grown(bigger, new)
    bigger["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] = ["ReadWriteMany"]
    assert not storage_grown(new, bigger)


def test_an_immutable_change_is_caught() -> None:
    new = statefulset("production")
    bigger = copy.deepcopy(new)
    bigger["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] = "99Gi"
    assert immutable_changes(new, bigger) == ["volumeClaimTemplates"]


@pytest.mark.parametrize("env", ENVS)
def test_selectors_match_the_pods(env: str) -> None:
    objects = nats_objects(env)
    pods = statefulset(env)["spec"]["template"]["metadata"]["labels"]
    for workload in workloads(env):
        assert selector_errors(workload) == [], workload["metadata"]["name"]
    assert selects(
        one(objects, "PodDisruptionBudget", "nats")["spec"]["selector"]["matchLabels"], pods
    )
    for service in (o for o in objects if o["kind"] == "Service"):
        assert selects(service["spec"]["selector"], pods), service["metadata"]["name"]
        containers = statefulset(env)["spec"]["template"]["spec"]["containers"]
        names = {p["name"] for c in containers for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, port
    policy = one(objects, "NetworkPolicy", "nats")
    assert selects(policy["spec"]["podSelector"]["matchLabels"], pods)


def test_a_selector_that_misses_the_pods_is_caught() -> None:
    bad = copy.deepcopy(statefulset("production"))
    bad["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "natz"
    assert selector_errors(bad) == ["app.kubernetes.io/component=natz"]


@pytest.mark.parametrize("env", ENVS)
def test_probe_ports_name_container_ports(env: str) -> None:
    for workload in workloads(env):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            assert probe_errors(container) == [], (workload["metadata"]["name"], container["name"])


def test_bad_probes_are_caught() -> None:
    container = copy.deepcopy(nats_container(statefulset("production")))
    container["startupProbe"]["successThreshold"] = 2
    container["livenessProbe"]["httpGet"]["port"] = "monitoring"
    assert probe_errors(container) == [
        "startupProbe.successThreshold must be 1",
        "livenessProbe port 'monitoring' is no container port",
    ]


# ------------------------------------------------------------------- issue #15's defects


def test_probes_gate_the_roll_on_full_healthz_after_the_early_window() -> None:
    nats = nats_container(statefulset("production"))
    startup = nats["startupProbe"]
    # js-enabled-only passes 0.05 s after start with an empty replica; /healthz passes in
    # the first second too (bench/bench_rollout.py --timeline): the first probe comes later.
    assert startup["httpGet"]["path"] == "/healthz"
    assert startup["initialDelaySeconds"] >= 10
    assert nats["readinessProbe"]["httpGet"]["path"] == "/healthz?js-server-only=true"
    text = (REPO_ROOT / "nats/base/statefulset.yaml").read_text()
    assert "can take minutes" not in text  # the comment that contradicted its endpoint


@pytest.mark.parametrize("env", ENVS)
def test_resources_are_guaranteed_and_gomemlimit_below_the_limit(env: str) -> None:
    for container in statefulset(env)["spec"]["template"]["spec"]["containers"]:
        resources = container["resources"]
        assert resources["requests"] == resources["limits"], container["name"]
    nats = nats_container(statefulset(env))
    env_vars = {e["name"]: e.get("value") for e in nats["env"]}
    limit = size_bytes(nats["resources"]["limits"]["memory"])
    gomemlimit = size_bytes(env_vars["GOMEMLIMIT"].removesuffix("B"))
    assert 0.8 <= gomemlimit / limit <= 0.9, (gomemlimit, limit)
    cpu = nats["resources"]["limits"]["cpu"]
    assert cpu.endswith("m") or int(cpu) >= 1


def test_production_has_the_chart_readmes_minimum() -> None:
    resources = nats_container(statefulset("production"))["resources"]["limits"]
    assert int(resources["cpu"]) >= 2 and size_bytes(resources["memory"]) >= size_bytes("8Gi")


@pytest.mark.parametrize("env", ENVS)
def test_the_storage_chain_is_ordered(env: str) -> None:
    sizing = SIZING[env]
    sts = statefulset(env)
    volume = sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    env_vars = {e["name"]: e.get("value") for e in nats_container(sts)["env"]}
    assert volume == sizing.volume
    assert env_vars[MAX_FILE_STORE_ENV] == sizing.max_file_store
    assert kubernetes_params().max_file_store == f"${MAX_FILE_STORE_ENV}"
    store = size_bytes(sizing.max_file_store)
    stripe = size_bytes(sizing.stripe_max_bytes)
    assert store <= 0.9 * size_bytes(volume)
    assert alert_model.STORAGE_ALERT_RATIO * store < stripe < store
    assert "max_memory_store: 64M" in render_nats_conf(kubernetes_params())


def test_nats_server_reads_max_file_store_from_the_environment(tmp_path: Path) -> None:
    passwords = {env: new_password() for env in PASSWORD_ENV.values()}
    server = NatsServer(
        tmp_path / "js",
        config_file=tmp_path / "nats.conf",
        env={**passwords, MAX_FILE_STORE_ENV: SIZING["staging"].max_file_store},
    )
    # The Kubernetes rendering (max_file_store: $NATS_MAX_FILE_STORE) on loopback ports.
    cluster_port = free_port()
    params = dataclasses.replace(
        kubernetes_params(1),
        server_name="n0",
        host=server.host,
        client_port=server.port,
        monitor_port=server.monitor_port,
        cluster_port=cluster_port,
        routes=(f"nats://127.0.0.1:{cluster_port}",),
        store_dir=str(server.store_dir),
        pid_file=str(tmp_path / "nats.pid"),
    )
    conf = render_nats_conf(params)
    (tmp_path / "nats.conf").write_text(conf)
    with server:
        url = f"http://{server.host}:{server.monitor_port}/varz"
        with urllib.request.urlopen(url, timeout=5) as response:
            varz = json.loads(response.read())
    assert varz["jetstream"]["config"]["max_storage"] == size_bytes("4500M")
    assert varz["jetstream"]["config"]["max_memory"] == size_bytes("64M")


def test_anti_affinity_is_preferred_in_staging_and_required_in_production() -> None:
    staging = statefulset("staging")["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    production = statefulset("production")["spec"]["template"]["spec"]["affinity"][
        "podAntiAffinity"
    ]
    assert set(staging) == {"preferredDuringSchedulingIgnoredDuringExecution"}
    assert set(production) == {"requiredDuringSchedulingIgnoredDuringExecution"}


@pytest.mark.parametrize("env", ENVS)
def test_pods_get_no_service_links(env: str) -> None:
    profile = profiles.PROFILES[env]
    pods = [statefulset(env)["spec"]["template"]["spec"]]
    for obj in consumers(profile) + knative.services(profile):
        spec = obj["spec"]
        if obj["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        pods.append(spec["template"]["spec"])
    assert all(p.get("enableServiceLinks") is False for p in pods)


def test_the_exporter_is_a_current_release() -> None:
    (exporter,) = [
        c
        for c in statefulset("production")["spec"]["template"]["spec"]["containers"]
        if c["name"] == "prom-exporter"
    ]
    version = tuple(int(x) for x in re.findall(r":(\d+)\.(\d+)\.(\d+)$", exporter["image"])[0])
    # The NATS chart's default (nats-io/k8s helm/charts/nats/values.yaml at 957650fb).
    assert version >= (0, 20, 1)
