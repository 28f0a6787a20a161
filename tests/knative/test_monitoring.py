"""The Prometheus Operator objects ``knative render`` writes: valid, and aimed right.

Validated against the operator's v1 CRD schemas (prometheus-operator-v1.schema.yaml, see
its header), strict as the API server is. Their selectors are checked against the pods
the other manifests actually run (nats/ and knative/<env>/consumers.yaml): a PodMonitor
selects pods by label in its namespaceSelector's namespaces and scrapes the container
port of that name. No Prometheus Operator runs here.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from stripe_bridge.deploy import profiles, promoperator
from stripe_bridge.deploy.alert_model import (
    COUNTER_JOB,
    FORWARDER_JOB,
    LIFECYCLE_JOB,
    NATS_JOB,
    PROJECTOR_JOB,
)
from stripe_bridge_testing.repo import REPO_ROOT

from .test_render import ENVS, KNATIVE_DIR, consumer_docs, documents, strict

SCHEMAS = yaml.safe_load((Path(__file__).parent / "prometheus-operator-v1.schema.yaml").read_text())


def validator(kind: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(strict(SCHEMAS[kind]))


def rendered_objects() -> list[dict[str, Any]]:
    paths = [KNATIVE_DIR / "monitoring.yaml"] + [
        KNATIVE_DIR / env / "monitoring.yaml" for env in ENVS
    ]
    return [doc for path in paths for doc in documents(path)]


def test_every_object_validates_against_the_operator_schema() -> None:
    objects = rendered_objects()
    assert sorted({o["kind"] for o in objects}) == [
        "PodMonitor",
        "PrometheusRule",
        "ServiceMonitor",
    ]
    for obj in objects:
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        validator(obj["kind"]).validate(obj)


def test_the_schema_rejects_what_the_api_server_would() -> None:
    (monitor, *_rest) = documents(KNATIVE_DIR / "staging" / "monitoring.yaml")
    typo = copy.deepcopy(monitor)
    typo["spec"]["podMetricsEndpoints"][0]["honorLabel"] = True
    with pytest.raises(jsonschema.ValidationError):
        validator("PodMonitor").validate(typo)
    rule = copy.deepcopy(documents(KNATIVE_DIR / "monitoring.yaml")[0])
    del rule["spec"]["groups"][0]["rules"][0]["expr"]
    with pytest.raises(jsonschema.ValidationError):
        validator("PrometheusRule").validate(rule)


def test_the_rule_holds_exactly_the_alerts_of_dashboards_alerts_yml() -> None:
    (rule, pushgateway) = documents(KNATIVE_DIR / "monitoring.yaml")
    alerts = yaml.safe_load((REPO_ROOT / "dashboards" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]
    assert pushgateway["spec"]["endpoints"][0]["honorLabels"] is True


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.mark.parametrize("env", ENVS)
def test_pod_monitors_select_the_pods_and_ports_the_manifests_run(env: str) -> None:
    profile = profiles.PROFILES[env]
    monitors = {m["metadata"]["name"]: m for m in documents(KNATIVE_DIR / env / "monitoring.yaml")}
    statefulset = next(
        d
        for d in documents(REPO_ROOT / "nats" / "base" / "statefulset.yaml")
        if d["kind"] == "StatefulSet"
    )
    overlay = yaml.safe_load(
        (REPO_ROOT / "nats" / "overlays" / env / "kustomization.yaml").read_text()
    )
    pods = {"nats": (overlay["namespace"], statefulset["spec"]["template"])}
    for name, doc in consumer_docs(env).items():
        if doc["kind"] == "Deployment":
            pods[name] = (doc["metadata"]["namespace"], doc["spec"]["template"])
    jobs = {
        "nats": NATS_JOB,
        "forward-openmeter": FORWARDER_JOB,
        "project-tiers": PROJECTOR_JOB,
        "project-lifecycle": LIFECYCLE_JOB,
        "count-usage": COUNTER_JOB,
    }
    assert set(monitors) == set(jobs)
    for name, monitor in monitors.items():
        namespace, template = pods[name]
        spec = monitor["spec"]
        assert spec["namespaceSelector"]["matchNames"] == [namespace] == [profile.namespace]
        assert labels_match(spec["selector"]["matchLabels"], template["metadata"]["labels"])
        (endpoint,) = spec["podMetricsEndpoints"]
        ports = {p.get("name") for c in template["spec"]["containers"] for p in c.get("ports", [])}
        assert endpoint["port"] in ports
        relabeled = {r["targetLabel"]: r["replacement"] for r in endpoint["relabelings"]}
        assert relabeled == {"job": jobs[name], "environment": env}
    # No other workload of the namespace is selected by mistake.
    for name, (_ns, template) in pods.items():
        chosen = [
            m
            for m, mon in monitors.items()
            if labels_match(mon["spec"]["selector"]["matchLabels"], template["metadata"]["labels"])
        ]
        assert chosen == [name]


def test_render_writes_them_with_the_knative_manifests(tmp_path: Path) -> None:
    from stripe_bridge.cli import main

    assert main(["knative", "render", "--env", "staging", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "monitoring.yaml").read_text() == promoperator.render(["staging"])[
        "monitoring.yaml"
    ]
    assert (tmp_path / "staging" / "monitoring.yaml").exists()
