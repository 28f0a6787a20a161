"""The environments (staging, production): what differs between them, in one table.

Every renderer (``knative``, ``workloads``, ``access``, ``backup_manifests``,
``promoperator``) takes a ``Profile``; ``stripe-bridge knative render`` renders each one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .. import __version__


@dataclass(frozen=True)
class Profile:
    """What differs between environments: scale, resources and where the dependencies are."""

    name: str
    namespace: str
    image: str
    max_scale: int
    #: Soft per-pod concurrency the autoscaler aims for (well below the hard limit).
    target_concurrency: int
    container_concurrency: int
    #: Keep pods this long after traffic stops: trades idle cost for cold starts.
    scale_down_delay: str
    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str
    nats_url: str
    pushgateway_url: str
    log_level: str = "INFO"
    #: "password" (nats/'s NATS) or "creds" (a mounted .creds file, for JWT-based NATS).
    nats_auth: Literal["password", "creds"] = "password"
    #: Scale to zero when idle; every environment does (the point of one function per type).
    min_scale: int = 0
    #: Where Checkout and the Customer Portal send the customer back (the billing functions).
    checkout_success_url: str = "https://app.example.com/billing/success"
    checkout_cancel_url: str = "https://app.example.com/billing/cancel"
    portal_return_url: str = "https://app.example.com/billing"
    #: Stripe API base for the checkout/portal functions; None: Stripe's (e.g. stripe-mock
    #: in a test cluster).
    stripe_api_base: str | None = None
    #: forward-openmeter replicas (they share the durable consumer; JetStream spreads batches).
    forwarder_replicas: int = 1
    #: Replicas of the USAGE/USAGE_DLQ streams and the BILLING_TIERS bucket the consumers create.
    stream_replicas: int = 1
    consumer_cpu_request: str = "50m"
    consumer_memory_request: str = "96Mi"
    consumer_cpu_limit: str = "500m"
    consumer_memory_limit: str = "256Mi"


_IMAGE = f"registry.example.com/stripe-bridge:{__version__}"
#: nats/ runs NATS in the functions' namespace, behind the Service ``nats``.
_NATS_URL = "nats://nats:4222"
_PUSHGATEWAY_URL = "http://prometheus-pushgateway.monitoring.svc.cluster.local:9091"

PROFILES: dict[str, Profile] = {
    "staging": Profile(
        name="staging",
        namespace="stripe-bridge-staging",
        image=_IMAGE,
        max_scale=3,
        target_concurrency=20,
        container_concurrency=50,
        scale_down_delay="0s",
        cpu_request="50m",
        memory_request="96Mi",
        cpu_limit="500m",
        memory_limit="256Mi",
        nats_url=_NATS_URL,
        pushgateway_url=_PUSHGATEWAY_URL,
        log_level="DEBUG",
    ),
    "production": Profile(
        name="production",
        namespace="stripe-bridge",
        image=_IMAGE,
        # Month-end renewals arrive as a burst of invoice.* events.
        max_scale=20,
        target_concurrency=20,
        container_concurrency=50,
        scale_down_delay="10m",
        cpu_request="100m",
        memory_request="128Mi",
        cpu_limit="1",
        memory_limit="256Mi",
        nats_url=_NATS_URL,
        pushgateway_url=_PUSHGATEWAY_URL,
        forwarder_replicas=2,
        # nats/ runs three servers: keep billing data on all of them, like STRIPE.
        stream_replicas=3,
        consumer_cpu_request="100m",
        consumer_memory_request="128Mi",
        consumer_cpu_limit="1",
    ),
}
