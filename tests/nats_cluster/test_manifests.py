"""nats/ manifests: schema-valid offline, kustomize builds render, generated files fresh.

No Kubernetes cluster runs here: objects are validated against the Kubernetes OpenAPI
schemas (kubernetes-validate) and the built overlays are checked for what the cluster
tests rely on (the same nats.conf, ports, probes, security).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from stripe_bridge.cli import main
from stripe_bridge.deploy.kustomize import KustomizeError, build, load_documents
from stripe_bridge.deploy.natsconf import (
    PASSWORD_ENV,
    config_checksum,
    generated_files,
    kubernetes_params,
    render_nats_conf,
)
from stripe_bridge.deploy.profiles import PROFILES
from stripe_bridge.ops.natsserver import nats_server_binary
from stripe_bridge_testing.repo import REPO_ROOT

NATS = REPO_ROOT / "nats"
K8S_VERSION = "1.30"
TARGETS = {
    "base": NATS / "base",
    "staging": NATS / "overlays" / "staging",
    "production": NATS / "overlays" / "production",
}


def by_kind(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


@pytest.mark.parametrize("path", sorted(NATS.rglob("*.yaml")), ids=lambda p: str(p.name))
def test_every_manifest_file_is_valid(path: Path) -> None:
    for document in load_documents(path):
        if isinstance(document, list):  # a JSON 6902 patch
            assert all({"op", "path"} <= set(op) for op in document)
            continue
        if document.get("kind") == "Kustomization":
            continue
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.servers  # runs kubectl kustomize
def test_kustomize_build_renders_valid_objects(target: str) -> None:
    objects = build(TARGETS[target])
    kinds = sorted(kind for kind, _name in by_kind(objects))
    assert kinds == [
        "ConfigMap", "NetworkPolicy", "PodDisruptionBudget", "Service", "Service",
        "ServiceAccount", "StatefulSet",
    ]  # fmt: skip
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "stripe-bridge"
    if kubectl := shutil.which("kubectl"):
        # Where a real kustomize exists, the subset renderer must agree with it exactly.
        built = subprocess.run(
            [kubectl, "kustomize", str(TARGETS[target])],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        assert by_kind([d for d in yaml.safe_load_all(built) if d]) == by_kind(objects)


def test_overlays_set_namespace_and_volume_size() -> None:
    sizes = {}
    for target in ("staging", "production"):
        objects = build(TARGETS[target])
        assert len({obj["metadata"]["namespace"] for obj in objects}) == 1
        sts = by_kind(objects)[("StatefulSet", "nats")]
        sizes[target] = sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]
    assert sizes == {env: {"storage": PROFILES[env].nats.volume} for env in sizes}


@pytest.mark.servers  # runs nats-server --version
def test_statefulset_follows_the_helm_chart_shape() -> None:
    objects = by_kind(build(TARGETS["production"]))
    sts = objects[("StatefulSet", "nats")]
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    nats, exporter = pod["containers"]
    assert spec["replicas"] == 3 and spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == "nats-headless"
    env = {e["name"]: e for e in nats["env"]}
    assert env["SERVER_NAME"]["value"] == "$(POD_NAME)"
    # Every user nats.conf defines gets its password from the Secret (the server would not
    # start with one missing).
    for user, user_env in PASSWORD_ENV.items():
        ref = env[user_env]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "nats-auth", "key": f"{user}-password"}
    assert {p["containerPort"] for p in nats["ports"]} == {4222, 6222, 8222}
    assert exporter["ports"][0]["containerPort"] == 7777
    assert nats["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert nats["livenessProbe"]["httpGet"]["path"] == "/healthz?js-enabled-only=true"
    assert nats["readinessProbe"]["httpGet"]["path"] == "/healthz?js-server-only=true"
    assert nats["lifecycle"]["preStop"]["exec"]["command"] == [
        "nats-server", "--signal", "ldm=/var/run/nats/nats.pid",
    ]  # fmt: skip
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["affinity"]["podAntiAffinity"] and pod["topologySpreadConstraints"]
    # The image runs the nats-server version the cluster tests ran.
    version = subprocess.run(
        [nats_server_binary(), "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    assert nats["image"] == f"nats:{version.removeprefix('v')}-alpine"
    assert objects[("PodDisruptionBudget", "nats")]["spec"]["maxUnavailable"] == 1
    headless = objects[("Service", "nats-headless")]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True


def test_network_policy_limits_each_port_to_its_clients() -> None:
    policy = by_kind(build(TARGETS["base"]))[("NetworkPolicy", "nats")]["spec"]
    rules = {
        tuple(sorted(p["port"] for p in rule["ports"])): rule["from"] for rule in policy["ingress"]
    }
    assert set(rules) == {(4222,), (6222,), (7777, 8222)}
    # Labelled pods of NATS's own namespace only: a namespaceSelector (even `{}`) would let
    # a pod in any namespace (staging) that labels itself reach this NATS (production).
    assert rules[(4222,)] == [
        {"podSelector": {"matchLabels": {"stripe-bridge.io/nats-client": "true"}}}
    ]
    assert rules[(6222,)][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "nats"
    assert rules[(7777, 8222)][0]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "prometheus"
    }


def test_configmap_is_the_fresh_rendering_of_the_one_template() -> None:
    for name, content in generated_files().items():
        assert (NATS / name).read_text() == content, "run `stripe-bridge nats generate`"
    objects = by_kind(build(TARGETS["production"]))
    text = objects[("ConfigMap", "nats-config")]["data"]["nats.conf"]
    assert text == render_nats_conf(kubernetes_params())
    annotations = objects[("StatefulSet", "nats")]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["checksum/config"] == config_checksum(text)
    assert "nats://nats-2.nats-headless:6222" in text


def test_generate_check_reports_a_stale_configmap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(NATS, tmp_path / "nats")
    assert main(["nats", "generate", "--check", "--root", str(tmp_path)]) == 0
    (tmp_path / "nats" / "base" / "nats-config.yaml").write_text("stale\n")
    assert main(["nats", "generate", "--check", "--root", str(tmp_path)]) == 1
    assert "out of date" in capsys.readouterr().out
    assert main(["nats", "generate", "--root", str(tmp_path)]) == 0
    assert main(["nats", "generate", "--check", "--root", str(tmp_path)]) == 0


def test_render_config_prints_the_configmap_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nats", "render-config"]) == 0
    assert capsys.readouterr().out == render_nats_conf(kubernetes_params())


def test_apply_without_kubectl_exits_127_with_a_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no kubectl
    assert main(["nats", "apply", "--root", str(REPO_ROOT), "--overlay", "staging"]) == 127
    err = capsys.readouterr().err
    assert "kubectl not found" in err and len(err.strip().splitlines()) == 1


@pytest.mark.servers  # runs a stand-in kubectl
def test_apply_runs_kubectl_server_side_forcing_conflicts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A kubectl that records its arguments: what reaches the API server is kubectl's job.
    argv = tmp_path / "argv"
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {argv}\n')
    kubectl.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["nats", "apply", "--root", str(REPO_ROOT), "--overlay", "staging"]) == 0
    args = argv.read_text().splitlines()
    assert args == [
        "apply", "--server-side", "--force-conflicts", "-k",
        str(REPO_ROOT / "nats" / "overlays" / "staging"),
    ]  # fmt: skip


def test_apply_dry_run_prints_the_command_and_manifests(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["nats", "apply", "--root", str(REPO_ROOT), "--dry-run"]) == 0
    out = capsys.readouterr().out
    # Without --force-conflicts, objects first applied client-side refuse the apply (409).
    assert out.startswith("# kubectl apply --server-side --force-conflicts -k ")
    assert "namespace: stripe-bridge\n" in out and "kind: StatefulSet" in out


def test_subset_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nconfigMapGenerator: []\n")
    with pytest.raises(KustomizeError, match="configMapGenerator"):
        build(tmp_path)


def test_secret_example_has_a_password_for_every_user() -> None:
    (secret,) = load_documents(NATS / "secret.example.yaml")
    assert set(secret["stringData"]) == {f"{user}-password" for user in PASSWORD_ENV}
