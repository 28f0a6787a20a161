"""Prometheus Operator objects: the alert rules as a PrometheusRule, and the scrape jobs.

For clusters whose Prometheus is run by the Prometheus Operator (monitoring.coreos.com/v1)
instead of a hand-written scrape config (docs/observability.md shows both). ``knative
render`` writes them beside the Knative manifests:

- ``knative/monitoring.yaml`` (namespace ``monitoring``): the ``PrometheusRule`` holding
  exactly the rules of ``dashboards/alerts.yml`` (read from alerts.py's output, one
  source), and a ``ServiceMonitor`` of the Pushgateway with ``honorLabels``;
- ``knative/<env>/monitoring.yaml``: a ``PodMonitor`` per scraped workload of that
  environment (the NATS exporter, the OpenMeter forwarder, the tier and lifecycle
  projectors, the usage counter), with the
  job names and the ``environment`` label the alerts and dashboards expect.

The Knative functions push to the Pushgateway (they may live for seconds) and are not
scraped. Validated against the operator's CRD schemas in tests/knative; never applied
to a cluster here.
"""

from __future__ import annotations

from typing import Any

import yaml

from .. import __version__
from . import k8s, profiles, workloads
from .alert_model import (
    COUNTER_JOB,
    FORWARDER_JOB,
    LIFECYCLE_JOB,
    NATS_JOB,
    PROJECTOR_JOB,
    PUSHGATEWAY_JOB,
)
from .alerts import alerts_yaml

API_VERSION = "monitoring.coreos.com/v1"
MONITORING_NAMESPACE = "monitoring"
#: Labels of the Pushgateway's Service as the prometheus-community Helm chart sets them.
PUSHGATEWAY_SELECTOR = {"app.kubernetes.io/name": "prometheus-pushgateway"}
PUSHGATEWAY_PORT = "http"
#: The consumers' command (a Deployment each, or one per count-usage partition) -> the
#: scrape job alerts use.
CONSUMER_JOBS = {
    "forward-openmeter": FORWARDER_JOB,
    "project-tiers": PROJECTOR_JOB,
    "project-lifecycle": LIFECYCLE_JOB,
    "count-usage": COUNTER_JOB,
}
NATS_METRICS_PORT = "prom-metrics"
_LABELS = {
    "app.kubernetes.io/name": "stripe-bridge",
    "app.kubernetes.io/part-of": "stripe-bridge",
    "app.kubernetes.io/version": __version__,
    "app.kubernetes.io/managed-by": k8s.FIELD_MANAGER,
}


def _meta(name: str, namespace: str) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": dict(_LABELS)}


def _set(label: str, value: str) -> dict[str, Any]:
    """A relabeling that sets ``label`` to ``value`` (action replace, no source labels)."""
    return {"targetLabel": label, "replacement": value, "action": "replace"}


def prometheus_rule() -> dict[str, Any]:
    """Every alert of dashboards/alerts.yml, for the operator's rule selector."""
    groups = yaml.safe_load(alerts_yaml())["groups"]
    return {
        "apiVersion": API_VERSION,
        "kind": "PrometheusRule",
        "metadata": _meta("stripe-bridge", MONITORING_NAMESPACE),
        "spec": {"groups": groups},
    }


def pushgateway_monitor() -> dict[str, Any]:
    """The Pushgateway, scraped with honorLabels so pushed job/instance labels survive."""
    endpoint = {
        "port": PUSHGATEWAY_PORT,
        "honorLabels": True,
        "relabelings": [_set("job", PUSHGATEWAY_JOB)],
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "ServiceMonitor",
        "metadata": _meta("stripe-bridge-pushgateway", MONITORING_NAMESPACE),
        "spec": {
            "selector": {"matchLabels": dict(PUSHGATEWAY_SELECTOR)},
            "namespaceSelector": {"matchNames": [MONITORING_NAMESPACE]},
            "endpoints": [endpoint],
        },
    }


def _pod_monitor(
    profile: profiles.Profile, name: str, selector: dict[str, str], port: str, job: str
) -> dict[str, Any]:
    endpoint = {
        "port": port,
        "path": "/metrics",
        "relabelings": [_set("job", job), _set("environment", profile.name)],
    }
    return {
        "apiVersion": API_VERSION,
        "kind": "PodMonitor",
        "metadata": _meta(name, profile.namespace),
        "spec": {
            "selector": {"matchLabels": selector},
            "namespaceSelector": {"matchNames": [profile.namespace]},
            "podMetricsEndpoints": [endpoint],
        },
    }


def pod_monitors(profile: profiles.Profile) -> list[dict[str, Any]]:
    """The NATS exporter and the consumers of ``profile``'s namespace."""
    monitors = [
        _pod_monitor(
            profile, "nats", {"app.kubernetes.io/name": "nats"}, NATS_METRICS_PORT, NATS_JOB
        )
    ]
    for spec in workloads.consumer_specs(profile):
        selector = {"app.kubernetes.io/instance": spec.name}
        monitors.append(
            _pod_monitor(profile, spec.name, selector, "metrics", CONSUMER_JOBS[spec.args[0]])
        )
    return monitors


def render(envs: list[str] | None = None) -> dict[str, str]:
    """The files by path relative to ``knative/`` (the shared one, then per environment)."""
    files = {"monitoring.yaml": k8s.to_yaml(prometheus_rule(), pushgateway_monitor())}
    for env in envs or list(profiles.PROFILES):
        files[f"{env}/monitoring.yaml"] = k8s.to_yaml(*pod_monitors(profiles.PROFILES[env]))
    return files
