"""Knative Serving Services for every function, derived from the event-type registry.

One ``serving.knative.dev/v1`` Service per registered event type plus the catch-all and
one per billing function (``billing.catalog.BILLING_FUNCTIONS``). The other objects are
rendered by ``workloads`` (Deployments, CronJobs) and ``access`` (RBAC, Secrets);
``manifests.render`` writes them all under ``knative/``, and applying them is
``stripe_bridge.deploy.kubeapply``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .. import registry
from ..billing.catalog import BILLING_FUNCTIONS, BillingFunction, Need
from ..jetstream import DRAIN_TIMEOUT_SECONDS
from ..push import PUSH_TIMEOUT_SECONDS
from ..server import GRACEFUL_SHUTDOWN_SECONDS
from .k8s import (
    ANNOTATION_EVENT_TYPE,
    BILLING_SECRET,
    CONTAINER_SECURITY,
    LABEL_FUNCTION,
    LABEL_NATS_CLIENT,
    LABEL_VISIBILITY,
    NATS_BILLING_PASSWORD_KEY,
    NATS_BILLING_USER,
    NATS_PASSWORD_KEY,
    NATS_USAGE_PASSWORD_KEY,
    NATS_USAGE_USER,
    NATS_USER,
    REDIS_SECRET,
    REDIS_SECRET_KEY,
    STRIPE_KEY_KEY,
    USAGE_TOKEN_KEY,
    WEBHOOK_SECRET,
    common_labels,
    nats_env,
    push_env,
    resources,
    secret_env,
    value_env,
    with_nats_creds,
)
from .profiles import Profile

SERVING_GROUP = "serving.knative.dev"
SERVING_VERSION = "v1"
SERVICES_PLURAL = "services"

#: Where the Containerfile puts ``functions/``.
FUNCTIONS_DIR = "/app/functions"
CONTAINER_PORT = 8080
#: Stripe gives up on a delivery after about 30 s; answer (or fail) well before that. The
#: answer is one JSON body, so its first byte is the whole response: Knative's
#: responseStartTimeoutSeconds bounds it.
REQUEST_TIMEOUT_SECONDS = 25
#: knative/serving pkg/queue/sharedmain/main.go ``drainSleepDuration``: on termination
#: queue-proxy keeps serving until 30 s pass without a request, and the user container's
#: preStop hook (``/wait-for-drain``) holds its SIGTERM back until then.
QUEUE_PROXY_DRAIN_SECONDS = 30
#: What ``stripe-bridge serve`` needs after SIGTERM: uvicorn's graceful shutdown, the NATS
#: drain, the final metrics push (httpx's timeout applies per phase: connect, send, answer).
APP_SHUTDOWN_SECONDS = GRACEFUL_SHUTDOWN_SECONDS + DRAIN_TIMEOUT_SECONDS + 3 * PUSH_TIMEOUT_SECONDS
#: Knative sets the pod's terminationGracePeriodSeconds to timeoutSeconds
#: (pkg/reconciler/revision/resources/deploy.go ``BuildPodSpec``), so timeoutSeconds is the
#: termination budget: queue-proxy's drain, then the app's shutdown, then 1 s of margin.
#: With 25 s (the old value) the grace ran out inside the drain and the app got the
#: kubelet's 2 s extension after SIGTERM. docs/deploy.md shows the sum.
TIMEOUT_SECONDS = math.ceil(QUEUE_PROXY_DRAIN_SECONDS + APP_SHUTDOWN_SECONDS) + 1

#: The catch-all endpoint subscribes to every event type.
ALL_EVENTS = "*"


@dataclass(frozen=True)
class FunctionSpec:
    """One deployable function: its folder, Knative Service name and subscribed event type."""

    function_name: str
    service_name: str
    #: The Stripe event type its webhook endpoint subscribes to; ``*`` for the catch-all.
    event_type: str


def function_specs() -> list[FunctionSpec]:
    """Every function, in registry order, then the catch-all."""
    specs = [FunctionSpec(t.function_name, t.service_name, t.name) for t in registry.EVENT_TYPES]
    specs.append(FunctionSpec(registry.CATCH_ALL, registry.CATCH_ALL.replace("_", "-"), ALL_EVENTS))
    return specs


def _function_env(profile: Profile, function_name: str) -> list[dict[str, Any]]:
    # PORT is not here: Knative sets it and rejects a user-defined PORT.
    return [
        value_env("FUNCTION_SOURCE", f"{FUNCTIONS_DIR}/{function_name}/main.py"),
        value_env("FUNCTION_TARGET", "handle"),
        value_env("FUNCTION_NAME", function_name),
    ]


def _env(profile: Profile, fn: FunctionSpec) -> list[dict[str, Any]]:
    return [
        *_function_env(profile, fn.function_name),
        secret_env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET, fn.function_name),
        *nats_env(profile, NATS_USER, NATS_PASSWORD_KEY, stream="STRIPE"),
        value_env("IDEMPOTENCY_BACKEND", "redis"),
        secret_env("REDIS_URL", REDIS_SECRET, REDIS_SECRET_KEY),
        *push_env(profile),
        value_env("LOG_LEVEL", profile.log_level),
    ]


def _billing_env(profile: Profile, fn: BillingFunction) -> list[dict[str, Any]]:
    env = _function_env(profile, fn.name)
    if Need.NATS in fn.needs:
        # The usage function publishes usage.>, which only the usage user may.
        env += nats_env(profile, NATS_USAGE_USER, NATS_USAGE_PASSWORD_KEY)
    if Need.KV in fn.needs:
        # Tiers and usage counts live in the billing KV buckets, the billing user's.
        env += nats_env(profile, NATS_BILLING_USER, NATS_BILLING_PASSWORD_KEY)
    if Need.USAGE_TOKEN in fn.needs:
        env.append(secret_env("USAGE_API_TOKEN", BILLING_SECRET, USAGE_TOKEN_KEY))
    if Need.STRIPE in fn.needs:
        env += [
            secret_env("STRIPE_API_KEY", BILLING_SECRET, STRIPE_KEY_KEY),
            value_env("CHECKOUT_SUCCESS_URL", profile.checkout_success_url),
            value_env("CHECKOUT_CANCEL_URL", profile.checkout_cancel_url),
            value_env("PORTAL_RETURN_URL", profile.portal_return_url),
        ]
        if profile.stripe_api_base:
            env.append(value_env("STRIPE_API_BASE", profile.stripe_api_base))
    return env + push_env(profile) + [value_env("LOG_LEVEL", profile.log_level)]


def _knative_service(
    profile: Profile,
    name: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    env: list[dict[str, Any]],
    readiness_path: str,
    image: str | None,
    cpu_request: str | None = None,
) -> dict[str, Any]:
    """A scale-to-zero Knative Service running one function of the image.

    ``cpu_request`` overrides the profile's, for the Services a burst weighs on most.
    """
    autoscaling = {
        "autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev",
        "autoscaling.knative.dev/metric": "concurrency",
        "autoscaling.knative.dev/target": str(profile.target_concurrency),
        "autoscaling.knative.dev/min-scale": str(profile.min_scale),
        "autoscaling.knative.dev/max-scale": str(profile.max_scale),
        "autoscaling.knative.dev/scale-down-delay": profile.scale_down_delay,
    }
    container = {
        "name": "function",
        "image": image or profile.image,
        "ports": [{"name": "http1", "containerPort": CONTAINER_PORT}],
        "env": env,
        # Path only, as knative/func renders them (pkg/knative/deployer.go): without
        # periodSeconds queue-proxy probes aggressively (milliseconds apart) during a cold
        # start, which Knative allows only without timeoutSeconds and failureThreshold; the
        # port is the serving port (Knative rejects any other).
        "readinessProbe": {"httpGet": {"path": readiness_path}},
        "livenessProbe": {"httpGet": {"path": "/healthz"}},
        "resources": resources(
            cpu_request or profile.cpu_request,
            profile.memory_request,
            profile.cpu_limit,
            profile.memory_limit,
        ),
        "securityContext": CONTAINER_SECURITY,
    }
    pod_spec: dict[str, Any] = {
        "containerConcurrency": profile.container_concurrency,
        "timeoutSeconds": TIMEOUT_SECONDS,
        "responseStartTimeoutSeconds": REQUEST_TIMEOUT_SECONDS,
        # The functions never call the Kubernetes API, nor need a variable per Service.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "containers": [container],
    }
    with_nats_creds(profile, pod_spec, [container])
    metadata = {"name": name, "namespace": profile.namespace, "labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": f"{SERVING_GROUP}/{SERVING_VERSION}",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {**annotations, **autoscaling},
                },
                "spec": pod_spec,
            }
        },
    }


def service(profile: Profile, fn: FunctionSpec, image: str | None = None) -> dict[str, Any]:
    """The Knative Service running webhook function ``fn`` in ``profile``'s environment."""
    labels = {
        **common_labels(profile),
        "app.kubernetes.io/component": "webhook-function",
        "app.kubernetes.io/instance": fn.service_name,
        LABEL_FUNCTION: fn.function_name,
        LABEL_NATS_CLIENT: "true",
    }
    # Event types contain dots and ``*``: an annotation, not a label value. /readyz answers
    # 200 only with NATS connected and the stream present: a cold pod takes webhooks only
    # once it can store them.
    annotations = {ANNOTATION_EVENT_TYPE: fn.event_type}
    return _knative_service(
        profile,
        fn.service_name,
        labels,
        annotations,
        _env(profile, fn),
        "/readyz",
        image,
        profile.function_cpu_requests.get(fn.event_type),
    )


def billing_service(
    profile: Profile, fn: BillingFunction, image: str | None = None
) -> dict[str, Any]:
    """The Knative Service running billing function ``fn`` (usage, checkout, portal)."""
    labels = {
        **common_labels(profile),
        "app.kubernetes.io/component": "billing-function",
        "app.kubernetes.io/instance": fn.service_name,
        LABEL_FUNCTION: fn.name,
    }
    if Need.NATS in fn.needs or Need.KV in fn.needs:
        labels[LABEL_NATS_CLIENT] = "true"
    # They push metrics like the webhook functions. Readiness is /healthz, not /readyz:
    # while NATS is down the usage function answers 503 with Retry-After itself, whereas
    # unready usage pods would leave the route and hold callers in Knative's activator
    # until their timeout; the other billing functions' /readyz is /healthz (ready once
    # serving), and one path for all keeps that true if a /readyz changes.
    manifest = _knative_service(
        profile, fn.service_name, labels, {}, _billing_env(profile, fn), "/healthz", image
    )
    if Need.STRIPE in fn.needs or Need.CLUSTER_LOCAL in fn.needs:
        # Checkout/Portal have no caller authentication of their own (anyone reaching them
        # gets a session for any customer id), nor has entitlements (it reveals and
        # reserves any customer's usage): only callers inside the cluster may.
        metadata = manifest["metadata"]
        metadata["labels"] = {**metadata["labels"], LABEL_VISIBILITY: "cluster-local"}
    return manifest


def services(profile: Profile, image: str | None = None) -> list[dict[str, Any]]:
    """Every Knative Service for ``profile``: webhook functions, then billing functions."""
    return [service(profile, fn, image) for fn in function_specs()] + [
        billing_service(profile, fn, image) for fn in BILLING_FUNCTIONS
    ]
