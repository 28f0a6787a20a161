"""The long-running and scheduled workloads: consumer Deployments and CronJobs.

The billing consumers (docs/billing.md) run as Deployments, the Pushgateway clean-up and
the NATS backup (``backup_manifests``) as CronJobs; ``consumers`` is ``consumers.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .backup_manifests import backup_cronjob
from .k8s import (
    LABEL_NATS_CLIENT,
    NATS_BILLING_PASSWORD_KEY,
    NATS_BILLING_USER,
    OPENMETER_KEY_KEY,
    OPENMETER_SECRET,
    OPENMETER_URL_KEY,
    command_container,
    common_labels,
    nats_env,
    pod_security,
    scrape_annotations,
    secret_env,
    value_env,
    with_nats_creds,
)
from .profiles import Profile

#: Where the long-running consumers serve Prometheus /metrics (also their probe target).
METRICS_PORT = 9090


@dataclass(frozen=True)
class ConsumerSpec:
    """A long-running pull consumer: its Deployment name and ``stripe-bridge`` arguments."""

    name: str
    args: tuple[str, ...]
    replicas: int
    env: tuple[dict[str, Any], ...]


def consumer_specs(profile: Profile) -> list[ConsumerSpec]:
    """The billing consumers (docs/billing.md), as ``profile`` runs them."""
    nats = tuple(nats_env(profile, NATS_BILLING_USER, NATS_BILLING_PASSWORD_KEY))
    metrics = ("--metrics-port", str(METRICS_PORT))
    replicas = ("--replicas", str(profile.stream_replicas))
    # Every consumer that may create USAGE creates it with the same limit, so none of them
    # sets it back when it starts (natsconf.Sizing: below max_file_store, above the alert).
    usage = (*replicas, "--usage-max-bytes", profile.nats.usage_max_bytes)
    batch = ("--batch-size", str(profile.forwarder_batch_size))
    return [
        ConsumerSpec(
            "forward-openmeter",
            ("forward-openmeter", *metrics, *usage, *batch),
            profile.forwarder_replicas,
            (
                *nats,
                secret_env("OPENMETER_URL", OPENMETER_SECRET, OPENMETER_URL_KEY),
                secret_env("OPENMETER_API_KEY", OPENMETER_SECRET, OPENMETER_KEY_KEY),
                value_env("LOG_LEVEL", profile.log_level),
            ),
        ),
        # Replicas share the durable consumer; writes are compare-and-set and a fact
        # replaces the stored one only when newer, so order across replicas does not matter
        # (a conflict is retried). More than one only at a rate one cannot keep up with.
        ConsumerSpec(
            "project-tiers",
            ("project-tiers", *metrics, *replicas),
            profile.tiers_replicas,
            (
                *nats_env(profile, NATS_BILLING_USER, NATS_BILLING_PASSWORD_KEY, stream="STRIPE"),
                value_env("LOG_LEVEL", profile.log_level),
            ),
        ),
        # One replica each: compare-and-set makes a rolling update's overlap safe.
        ConsumerSpec(
            "project-lifecycle",
            ("project-lifecycle", *metrics, *usage),
            1,
            (
                *nats_env(profile, NATS_BILLING_USER, NATS_BILLING_PASSWORD_KEY, stream="STRIPE"),
                value_env("LOG_LEVEL", profile.log_level),
            ),
        ),
        *counter_specs(
            profile, (*metrics, *usage), (*nats, value_env("LOG_LEVEL", profile.log_level))
        ),
    ]


def counter_specs(
    profile: Profile, args: tuple[str, ...], env: tuple[dict[str, Any], ...]
) -> list[ConsumerSpec]:
    """count-usage: one Deployment per partition (``count-usage-<i>``), or the single
    ``count-usage`` when there is one, so an unpartitioned profile renders as before.

    Each reads USAGE with one ordered consumer: it scales out by partitions of the
    customers, never by replicas (one replica each; compare-and-set makes a rolling
    update's overlap safe).
    """
    count = profile.counter_partitions
    if count == 1:
        return [ConsumerSpec("count-usage", ("count-usage", *args), 1, env)]
    return [
        ConsumerSpec(
            f"count-usage-{i}",
            ("count-usage", *args, "--partitions", str(count), "--partition", str(i)),
            1,
            env,
        )
        for i in range(count)
    ]


def deployment(profile: Profile, spec: ConsumerSpec, image: str | None = None) -> dict[str, Any]:
    """The apps/v1 Deployment running consumer ``spec`` continuously."""
    labels = {
        **common_labels(profile),
        "app.kubernetes.io/component": "billing-consumer",
        "app.kubernetes.io/instance": spec.name,
        LABEL_NATS_CLIENT: "true",
    }
    selector = {"app.kubernetes.io/name": "stripe-bridge", "app.kubernetes.io/instance": spec.name}
    container = command_container(profile, spec.name, list(spec.args), list(spec.env), image)
    container["ports"] = [{"name": "metrics", "containerPort": METRICS_PORT}]
    # The metrics server starts once NATS is connected and the consumer bound (the commands
    # pass it as run()'s on_bound), so it is the readiness signal; it answers while the
    # process lives (a dead process restarts).
    probe = {"httpGet": {"path": "/metrics", "port": "metrics"}, "timeoutSeconds": 2}
    container["readinessProbe"] = {**probe, "periodSeconds": 10}
    container["livenessProbe"] = {**probe, "periodSeconds": 20, "failureThreshold": 3}
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security(),
        # SIGTERM: in-flight OpenMeter requests (10 s timeout) finish, NATS drains.
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
    }
    with_nats_creds(profile, pod_spec, [container])
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": spec.name, "namespace": profile.namespace, "labels": labels},
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels, "annotations": scrape_annotations(METRICS_PORT)},
                "spec": pod_spec,
            },
        },
    }


#: Pushgateway groups of instances gone for longer than this are deleted (docs/observability.md).
PUSHGATEWAY_GC_OLDER_THAN = "1h"
PUSHGATEWAY_GC_SCHEDULE = "*/15 * * * *"


def pushgateway_gc_cronjob(profile: Profile, image: str | None = None) -> dict[str, Any]:
    """The batch/v1 CronJob deleting stale Pushgateway groups every 15 minutes."""
    name = "pushgateway-gc"
    labels = {
        **common_labels(profile),
        "app.kubernetes.io/component": "pushgateway-gc",
        "app.kubernetes.io/instance": name,
    }
    # Staging and production share the Pushgateway: each deletes only its own groups.
    args = [
        "pushgateway-gc",
        "--older-than",
        PUSHGATEWAY_GC_OLDER_THAN,
        "--environment",
        profile.name,
    ]
    env = [value_env("PUSHGATEWAY_URL", profile.pushgateway_url)]
    container = command_container(profile, name, args, env, image)
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "namespace": profile.namespace, "labels": labels},
        "spec": {
            "schedule": PUSHGATEWAY_GC_SCHEDULE,
            # A slow run must not overlap the next one deleting the same groups.
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 2,
                    "activeDeadlineSeconds": 300,
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "restartPolicy": "Never",
                            "automountServiceAccountToken": False,
                            "enableServiceLinks": False,
                            "securityContext": pod_security(),
                            "containers": [container],
                        },
                    },
                }
            },
        },
    }


def consumers(profile: Profile, image: str | None = None) -> list[dict[str, Any]]:
    """The consumers' Deployments, the Pushgateway clean-up and the backup CronJobs."""
    return [deployment(profile, spec, image) for spec in consumer_specs(profile)] + [
        pushgateway_gc_cronjob(profile, image),
        backup_cronjob(profile, image),
    ]
