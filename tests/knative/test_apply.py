"""``stripe-bridge knative apply`` against a local stand-in for the Kubernetes API.

No Kubernetes cluster (kind, k3d, ...) can run in this environment, so the API server is
``kubeapi.FakeKubeAPI``: a loopback HTTP server implementing the few calls apply makes,
following their documented contract (see its docstring). The real ``kubernetes`` client
talks to it through a real kubeconfig, exactly as it would to a cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stripe_bridge.cli import main
from stripe_bridge.deploy import knative, profiles, workloads
from stripe_bridge.deploy.k8s import FIELD_MANAGER
from stripe_bridge_testing.kubeapi import (
    CLIENT_SIDE_APPLY,
    LAST_APPLIED,
    FakeKubeAPI,
    dotted,
    owned_fields,
)

NAMESPACE = "stripe-test"
SERVICES = [
    service["metadata"]["name"] for service in knative.services(profiles.PROFILES["staging"])
]
#: consumers.yaml: (plural, name) of each Deployment and CronJob, and how apply prints it.
WORKLOADS = {
    ("deployments", "forward-openmeter"): "deployment/forward-openmeter",
    ("deployments", "project-tiers"): "deployment/project-tiers",
    ("deployments", "project-lifecycle"): "deployment/project-lifecycle",
    ("deployments", "count-usage"): "deployment/count-usage",
    ("cronjobs", "pushgateway-gc"): "cronjob/pushgateway-gc",
    ("cronjobs", "nats-backup"): "cronjob/nats-backup",
}


@pytest.fixture
def kube() -> Iterator[FakeKubeAPI]:
    api = FakeKubeAPI().start()
    try:
        yield api
    finally:
        api.stop()


def apply(kubeconfig: Path, *extra: str) -> int:
    return main(
        [
            "knative", "apply", "--env", "staging", "--namespace", NAMESPACE,
            "--kubeconfig", str(kubeconfig), "--wait", "20", "--poll-interval", "0.02",
            *extra,
        ]
    )  # fmt: skip


def test_creates_then_unchanged_then_updates_and_reports_ready(
    kube: FakeKubeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = kube.kubeconfig(tmp_path / "kubeconfig")

    assert apply(config) == 0
    out = capsys.readouterr().out
    for name in SERVICES:
        assert f"{name}: created" in out
        assert f"{name}: Ready=True http://{name}.{NAMESPACE}.example.com" in out
    assert set(kube.objects) == {(NAMESPACE, name) for name in SERVICES}
    assert set(kube.workloads) == {(plural, NAMESPACE, name) for plural, name in WORKLOADS}
    for label in WORKLOADS.values():
        assert f"{label}: created" in out
        assert f"{label}: Ready=True -" in out
    patches = [c for c in kube.calls if c.method == "PATCH"]
    assert len(patches) == len(SERVICES) + len(WORKLOADS)
    assert {c.path for c in patches} >= {
        f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/forward-openmeter",
        f"/apis/batch/v1/namespaces/{NAMESPACE}/cronjobs/pushgateway-gc",
    }
    assert all(c.content_type == "application/apply-patch+yaml" for c in patches)
    assert all(c.query["fieldManager"] == ["stripe-bridge"] for c in patches)
    assert all(c.query["force"] == ["true"] for c in patches)
    stored = kube.objects[(NAMESPACE, "stripe-invoice-paid")]
    rendered = knative.service(profiles.PROFILES["staging"], knative.function_specs()[5])
    assert rendered["metadata"]["name"] == "stripe-invoice-paid"
    assert stored["spec"] == rendered["spec"]
    # The webhook registration steps name each URL and its event type.
    url = f"http://stripe-invoice-paid.{NAMESPACE}.example.com"
    assert f'--url "{url}" -d "enabled_events[]=invoice.paid"' in out
    assert '"stringData": {"invoice_paid": "whsec_..."}' in out
    assert 'enabled_events[]=*"' in out
    assert "https:// URLs in live mode" in out

    assert apply(config) == 0
    out = capsys.readouterr().out
    assert all(f"{name}: unchanged" in out for name in SERVICES), out
    assert all(f"{label}: unchanged" in out for label in WORKLOADS.values()), out
    assert {obj["metadata"]["generation"] for obj in kube.objects.values()} == {1}
    assert {obj["metadata"]["generation"] for obj in kube.workloads.values()} == {1}

    assert apply(config, "--image", "registry.example.com/stripe-bridge:0.1.1") == 0
    out = capsys.readouterr().out
    assert all(f"{name}: updated" in out for name in SERVICES), out
    assert {obj["metadata"]["generation"] for obj in kube.objects.values()} == {2}
    pod = kube.objects[(NAMESPACE, "stripe-event")]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example.com/stripe-bridge:0.1.1"
    assert all(f"{label}: updated" in out for label in WORKLOADS.values()), out
    forwarder = kube.workloads[("deployments", NAMESPACE, "forward-openmeter")]
    assert forwarder["metadata"]["generation"] == 2
    container = forwarder["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example.com/stripe-bridge:0.1.1"


def test_a_label_only_change_is_reported_as_updated(
    kube: FakeKubeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = kube.kubeconfig(tmp_path / "kubeconfig")
    assert apply(config) == 0
    for obj in kube.objects.values():
        obj["metadata"]["labels"]["app.kubernetes.io/version"] = "0.0.9"  # an older deploy
    capsys.readouterr()
    assert apply(config) == 0
    out = capsys.readouterr().out
    assert all(f"{name}: updated" in out for name in SERVICES), out
    assert {obj["metadata"]["generation"] for obj in kube.objects.values()} == {1}


def test_dry_run_changes_nothing(
    kube: FakeKubeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert apply(kube.kubeconfig(tmp_path / "kubeconfig"), "--dry-run") == 0
    out = capsys.readouterr().out
    assert all(f"{name}: created (dry run)" in out for name in SERVICES)
    assert all(f"{label}: created (dry run)" in out for label in WORKLOADS.values())
    assert kube.objects == {}
    assert kube.workloads == {}
    assert all(c.query.get("dryRun") == ["All"] for c in kube.calls if c.method == "PATCH")


def test_not_ready_exits_1_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = FakeKubeAPI(ready_status="False").start()
    try:
        assert apply(api.kubeconfig(tmp_path / "kubeconfig")) == 1
    finally:
        api.stop()
    captured = capsys.readouterr()
    assert "stripe-event: Ready=False" in captured.out
    assert "Container failed to start" in captured.out
    assert (
        'deployment/forward-openmeter: Ready=False - (ReplicaSet "forward-openmeter-7d9f" '
        "has timed out progressing.)" in captured.out
    )
    assert "deployment/project-tiers" in captured.err.split("not Ready: ")[1]


def test_forbidden_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeKubeAPI(forbid_patch=True).start()
    try:
        assert apply(api.kubeconfig(tmp_path / "kubeconfig")) == 3
    finally:
        api.stop()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "forbidden: you may not patch services.serving.knative.dev" in err
    assert f"namespace {NAMESPACE}" in err
    assert "knative/staging/rbac.yaml" in err
    assert "test-token" not in err


def test_forbidden_workloads_name_the_resource_and_the_role(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = FakeKubeAPI(forbid_workloads=True).start()
    try:
        assert apply(api.kubeconfig(tmp_path / "kubeconfig")) == 3
    finally:
        api.stop()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"forbidden: you may not patch deployments.apps in namespace {NAMESPACE}" in err
    assert "knative/staging/rbac.yaml" in err


def test_no_consumers_applies_only_the_services(
    kube: FakeKubeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert apply(kube.kubeconfig(tmp_path / "kubeconfig"), "--no-consumers") == 0
    assert kube.workloads == {}
    assert not [c for c in kube.calls if not c.path.startswith("/apis/serving.knative.dev/")]
    assert "deployment/" not in capsys.readouterr().out


def test_missing_knative_crds_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api = FakeKubeAPI(crds_installed=False).start()
    try:
        assert apply(api.kubeconfig(tmp_path / "kubeconfig")) == 3
    finally:
        api.stop()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "Knative Serving is not installed" in err
    assert not [c for c in api.calls if c.method == "PATCH"], "must stop before applying"


def test_no_kubeconfig(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["knative", "apply"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stripe-bridge knative apply: no kubeconfig")
    assert len(err.splitlines()) == 1

    assert main(["knative", "apply", "--kubeconfig", str(tmp_path / "missing")]) == 2
    assert "no kubeconfig at" in capsys.readouterr().err


def test_invalid_kubeconfig(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "kubeconfig"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")
    assert main(["knative", "apply", "--kubeconfig", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert "invalid kubeconfig" in err
    assert len(err.splitlines()) == 1


def test_unreachable_api_server(
    kube: FakeKubeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = kube.kubeconfig(tmp_path / "kubeconfig")
    kube.stop()
    assert apply(config) == 3
    err = capsys.readouterr().err.strip()
    assert f"cannot reach the Kubernetes API at {kube.url}" in err
    assert len(err.splitlines()) == 1


OLD_IMAGE = "registry.example.com/stripe-bridge:0.0.9"
FORWARDER_IMAGE = '.spec.template.spec.containers[name="forward-openmeter"].image'


def old_forwarder() -> dict[str, Any]:
    """forward-openmeter as an older manifest had it: another image, three replicas."""
    profile = profiles.PROFILES["staging"]
    (spec,) = (s for s in workloads.consumer_specs(profile) if s.name == "forward-openmeter")
    deployment = workloads.deployment(profile, spec, OLD_IMAGE)
    return {**deployment, "spec": {**deployment["spec"], "replicas": 3}}


def test_an_apply_without_force_is_refused_over_client_side_history(
    kube: FakeKubeAPI, tmp_path: Path
) -> None:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    kube.seed(old_forwarder(), NAMESPACE)  # `kubectl apply -f consumers.yaml`, client-side
    kubeconfig = str(kube.kubeconfig(tmp_path / "kubeconfig"))
    api = client.AppsV1Api(config.new_client_from_config(kubeconfig))  # type: ignore[no-untyped-call]
    current = workloads.consumers(profiles.PROFILES["staging"])[0]
    with pytest.raises(ApiException) as refused:
        api.patch_namespaced_deployment(
            "forward-openmeter", NAMESPACE, current, field_manager=FIELD_MANAGER,
            _content_type="application/apply-patch+yaml",
        )  # fmt: skip
    assert refused.value.status == 409
    status = json.loads(str(refused.value.body))
    assert (status["kind"], status["status"], status["reason"], status["code"]) == (
        "Status", "Failure", "Conflict", 409,
    )  # fmt: skip
    manager = f'"{CLIENT_SIDE_APPLY}" using apps/v1'
    assert status["message"] == (
        f"Apply failed with 2 conflicts: conflicts with {manager}:\n"
        f"- .spec.replicas\n- {FORWARDER_IMAGE}"
    )
    assert status["details"]["causes"] == [
        {"reason": "FieldManagerConflict", "message": f"conflict with {manager}", "field": f}
        for f in (".spec.replicas", FORWARDER_IMAGE)
    ]
    key = ("deployments", NAMESPACE, "forward-openmeter")
    assert kube.workloads[key]["spec"]["replicas"] == 3
    assert kube.owners(key, FORWARDER_IMAGE) == {CLIENT_SIDE_APPLY}


def with_legacy_label(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with a label today's manifests no longer set."""
    labels = {**manifest["metadata"]["labels"], "legacy": "true"}
    return {**manifest, "metadata": {**manifest["metadata"], "labels": labels}}


def test_knative_apply_adopts_objects_first_applied_client_side(
    kube: FakeKubeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = profiles.PROFILES["staging"]
    old = [*knative.services(profile, OLD_IMAGE), *workloads.consumers(profile, OLD_IMAGE)]
    for manifest in old:
        if manifest["metadata"]["name"] == "forward-openmeter":
            manifest = old_forwarder()
        kube.seed(with_legacy_label(manifest), NAMESPACE)  # `kubectl apply -f`, client-side
    config = kube.kubeconfig(tmp_path / "kubeconfig")

    assert apply(config) == 0
    out = capsys.readouterr().out
    adopted = "updated (adopted from client-side kubectl apply)"
    assert all(f"{name}: {adopted}" in out for name in SERVICES), out
    assert all(f"{label}: {adopted}" in out for label in WORKLOADS.values()), out
    # stripe-bridge alone owns every field it sets, and what only the client-side history
    # set (a dropped label, kubectl's last-applied annotation) is gone: nothing is left for
    # a later manifest change to trip over.
    for manifest in [*knative.services(profile), *workloads.consumers(profile)]:
        name = manifest["metadata"]["name"]
        key = (NAMESPACE, name) if manifest["kind"] == "Service" else (
            f"{manifest['kind'].lower()}s", NAMESPACE, name,
        )  # fmt: skip
        assert set(kube.managers[key]) == {FIELD_MANAGER}, (name, kube.managers[key])
        for path in map(dotted, owned_fields(manifest)):
            assert kube.owners(key, path) == {FIELD_MANAGER}, (name, path)
        stored = kube.objects[key] if len(key) == 2 else kube.workloads[key]
        assert "legacy" not in stored["metadata"]["labels"], name
        assert LAST_APPLIED not in stored["metadata"].get("annotations", {}), name
        assert stored["spec"] == manifest["spec"], name
    forwarder = ("deployments", NAMESPACE, "forward-openmeter")
    assert kube.workloads[forwarder]["spec"]["replicas"] == 1

    assert apply(config) == 0
    out = capsys.readouterr().out
    assert all(f"{name}: unchanged" in out for name in SERVICES), out
    assert all(f"{label}: unchanged" in out for label in WORKLOADS.values()), out


def test_an_apply_keeps_fields_another_manager_set(
    kube: FakeKubeAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = kube.kubeconfig(tmp_path / "kubeconfig")
    assert apply(config, "--no-consumers") == 0
    # An operator's annotation, written by another server-side applier.
    service = knative.services(profiles.PROFILES["staging"])[0]
    name = service["metadata"]["name"]
    mark = {
        "apiVersion": service["apiVersion"], "kind": "Service",
        "metadata": {"name": name, "annotations": {"team.example.com/owner": "billing"}},
        "spec": {},
    }  # fmt: skip
    assert kube.apply((NAMESPACE, name), mark, False, manager="operator")[0] == 200
    capsys.readouterr()

    assert apply(config, "--no-consumers") == 0
    assert f"{name}: unchanged" in capsys.readouterr().out
    annotations = kube.objects[(NAMESPACE, name)]["metadata"]["annotations"]
    assert annotations["team.example.com/owner"] == "billing"
