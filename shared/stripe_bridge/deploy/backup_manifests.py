"""The scheduled NATS backup per environment: a CronJob and the volume it writes to.

The CronJob runs ``stripe-bridge export --all`` (every stream and KV bucket, see
``stripe_bridge.ops.backup_job``) daily into a PersistentVolumeClaim, keeps ``BACKUP_KEEP``
backups there and, when the ``stripe-bridge-backup-s3`` Secret names a bucket, in
S3-compatible storage; it pushes its metrics to the Pushgateway. The claim is rendered
into ``backup-volume.yaml`` for an administrator to apply once (the deployer's role
does not create storage); the CronJob is in ``consumers.yaml`` with the other workloads.
"""

from __future__ import annotations

from typing import Any

from .k8s import (
    NATS_BACKUP_PASSWORD_KEY,
    NATS_BACKUP_USER,
    command_container,
    common_labels,
    nats_env,
    pod_security,
    secret_env,
    value_env,
)
from .profiles import Profile

NAME = "nats-backup"
CLAIM = "nats-backups"
MOUNT = "/backups"
#: 03:17 UTC: away from the hour marks other jobs pick, after the day's usage windows close.
SCHEDULE = "17 3 * * *"
#: Daily backups kept on the volume and in the bucket: two weeks.
BACKUP_KEEP = 14
#: Optional: where and how to copy backups to S3-compatible storage.
S3_SECRET = "stripe-bridge-backup-s3"
S3_KEYS = {
    "BACKUP_S3_BUCKET": "bucket",
    "BACKUP_S3_ENDPOINT": "endpoint",
    "BACKUP_S3_PREFIX": "prefix",
    "AWS_ACCESS_KEY_ID": "access-key-id",
    "AWS_SECRET_ACCESS_KEY": "secret-access-key",
}
#: Volume size per environment: each backup is the streams' size (STRIPE keeps 30 days).
VOLUME_SIZE = {"staging": "5Gi", "production": "50Gi"}


def _labels(profile: Profile) -> dict[str, str]:
    return {
        **common_labels(profile),
        "app.kubernetes.io/component": "nats-backup",
        "app.kubernetes.io/instance": NAME,
    }


def backup_volume(profile: Profile) -> dict[str, Any]:
    """The PersistentVolumeClaim the backups are written to."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": CLAIM, "namespace": profile.namespace, "labels": _labels(profile)},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": VOLUME_SIZE.get(profile.name, "5Gi")}},
        },
    }


def _optional_secret_env(name: str, key: str) -> dict[str, Any]:
    env = secret_env(name, S3_SECRET, key)
    env["valueFrom"]["secretKeyRef"]["optional"] = True
    return env


def backup_cronjob(profile: Profile, image: str | None = None) -> dict[str, Any]:
    """The batch/v1 CronJob exporting every stream and KV bucket once a day."""
    labels = _labels(profile)
    args = ["export", "--all", "--dir", MOUNT, "--keep", str(BACKUP_KEEP)]
    env = [
        # Export reads every stream (STRIPE, USAGE, the KV buckets) as the read-only user.
        *nats_env(profile, NATS_BACKUP_USER, NATS_BACKUP_PASSWORD_KEY),
        *(_optional_secret_env(name, key) for name, key in S3_KEYS.items()),
        value_env("PUSHGATEWAY_URL", profile.pushgateway_url),
        value_env("ENVIRONMENT", profile.name),
        value_env("LOG_LEVEL", profile.log_level),
    ]
    container = command_container(profile, NAME, args, env, image)
    container["volumeMounts"] = [{"name": "backups", "mountPath": MOUNT}]
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": NAME, "namespace": profile.namespace, "labels": labels},
        "spec": {
            "schedule": SCHEDULE,
            "timeZone": "Etc/UTC",
            # Two runs writing one volume would race for retention: never overlap.
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 2,
                    "activeDeadlineSeconds": 3 * 3600,
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "restartPolicy": "Never",
                            "automountServiceAccountToken": False,
                            "enableServiceLinks": False,
                            "securityContext": {**pod_security(), "fsGroup": 10001},
                            "containers": [container],
                            "volumes": [
                                {"name": "backups", "persistentVolumeClaim": {"claimName": CLAIM}}
                            ],
                        },
                    },
                }
            },
        },
    }


def s3_secret_template() -> dict[str, str]:
    """The optional S3 Secret's keys with placeholders (secrets.template.yaml)."""
    return {
        "bucket": "REPLACE_with_the_bucket (leave the Secret out to keep backups on the volume)",
        "endpoint": "https://s3.REPLACE-region.amazonaws.com",
        "prefix": "stripe-bridge/REPLACE_environment",
        "access-key-id": "REPLACE_with_an_access_key_that_may_put_list_delete_in_the_prefix",
        "secret-access-key": "REPLACE",
    }
