"""Who may deploy (the deployer's RBAC) and what the workloads read (the Secrets' shape)."""

from __future__ import annotations

from typing import Any

from .backup_manifests import S3_SECRET, s3_secret_template
from .k8s import (
    BILLING_SECRET,
    OPENMETER_KEY_KEY,
    OPENMETER_SECRET,
    OPENMETER_URL_KEY,
    REDIS_SECRET,
    REDIS_SECRET_KEY,
    STRIPE_KEY_KEY,
    USAGE_TOKEN_KEY,
    WEBHOOK_SECRET,
    common_labels,
)
from .knative import SERVICES_PLURAL, SERVING_GROUP, function_specs
from .profiles import Profile

DEPLOYER_ROLE = "stripe-bridge-deployer"
DEPLOYER_GROUP = "stripe-bridge:deployers"


def rbac(profile: Profile) -> list[dict[str, Any]]:
    """A Role allowing what ``knative apply`` and secret rotation do, bound to a group."""
    labels = {**common_labels(profile), "app.kubernetes.io/component": "deployer"}
    meta = {"name": DEPLOYER_ROLE, "namespace": profile.namespace, "labels": labels}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": meta,
        "rules": [
            {
                "apiGroups": [SERVING_GROUP],
                "resources": [SERVICES_PLURAL],
                "verbs": ["get", "list", "watch", "create", "patch", "update"],
            },
            {
                # The consumers (consumers.yaml), applied by `knative apply` too.
                "apiGroups": ["apps"],
                "resources": ["deployments"],
                "verbs": ["get", "list", "watch", "create", "patch", "update"],
            },
            {
                "apiGroups": ["batch"],
                "resources": ["cronjobs"],
                "verbs": ["get", "create", "patch", "update"],
            },
            {
                # Rotating a webhook secret patches these; creating them is an admin's job.
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": [WEBHOOK_SECRET, REDIS_SECRET, BILLING_SECRET, OPENMETER_SECRET],
                "verbs": ["get", "patch", "update"],
            },
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": meta,
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": DEPLOYER_ROLE,
        },
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": DEPLOYER_GROUP}
        ],
    }
    return [role, binding]


def secrets_template() -> list[dict[str, Any]]:
    """The Secrets the Services and consumers read, with placeholders (the shape, not secrets).

    NATS' ``nats-auth`` Secret is nats/'s (see nats/secret.example.yaml).
    """
    labels = {
        "app.kubernetes.io/name": "stripe-bridge",
        "app.kubernetes.io/part-of": "stripe-bridge",
    }

    def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": labels},
            "type": "Opaque",
            "stringData": data,
        }

    webhook = {
        fn.function_name: f"whsec_REPLACE_with_the_secret_of_the_{fn.service_name}_endpoint"
        for fn in function_specs()
    }
    return [
        secret(WEBHOOK_SECRET, webhook),
        secret(REDIS_SECRET, {REDIS_SECRET_KEY: "redis://:REPLACE_password@redis:6379/0"}),
        secret(
            BILLING_SECRET,
            {
                USAGE_TOKEN_KEY: "REPLACE_with_a_random_token_the_usage_callers_send",
                STRIPE_KEY_KEY: "rk_live_REPLACE_with_a_restricted_key",
            },
        ),
        secret(
            OPENMETER_SECRET,
            {
                OPENMETER_URL_KEY: "https://openmeter.cloud",
                OPENMETER_KEY_KEY: "om_REPLACE_with_the_openmeter_api_token",
            },
        ),
        secret(S3_SECRET, s3_secret_template()),
    ]
