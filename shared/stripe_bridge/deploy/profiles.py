"""The environments (staging, production): what differs between them, in one table.

Every renderer (``knative``, ``workloads``, ``access``, ``backup_manifests``,
``promoperator``) takes a ``Profile``; ``stripe-bridge knative render`` renders each one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from .. import __version__
from .natsconf import SIZING, Sizing


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
    #: The NATS pods and storage chain (nats/overlays/<name>/sizing.yaml, the USAGE limit).
    nats: Sizing
    #: CPU requests of the webhook Services that take the largest share of the events
    #: (Stripe event type -> request); the others get ``cpu_request``.
    function_cpu_requests: Mapping[str, str] = field(default_factory=dict)
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
    #: Events per OpenMeter request (forward-openmeter ``--batch-size``; OpenMeter takes 1-1000).
    forwarder_batch_size: int = 100
    #: project-tiers replicas (they share the durable consumer; writes are compare-and-set).
    tiers_replicas: int = 1
    #: count-usage partitions (``--partitions``), a Deployment each (``count-usage-<i>``);
    #: 1: the single ``count-usage``. Changing it is an operator step (docs/runbook.md).
    counter_partitions: int = 1
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

#: The Services taking the largest share of a month-end burst (docs/deploy.md, Sizing): a
#: pod at 500m handles ~250-300 events/s (1.7-2.0 ms each on the staging stack).
BURST_CPU_REQUESTS = {"invoice.paid": "500m", "customer.subscription.updated": "500m"}

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
        nats=SIZING["staging"],
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
        # 10 Stripe events/s sustained (docs/deploy.md, Sizing): the smallest row, and the
        # reservations NATS holds while idle grow with the row. The month-end burst (up to
        # 1,000/s) needs more CPU on the two Services that take half the events; it is
        # requested only while their pods run.
        nats=SIZING["production"],
        function_cpu_requests=BURST_CPU_REQUESTS,
        forwarder_replicas=2,
        # nats/ runs three servers: keep billing data on all of them, like STRIPE.
        stream_replicas=3,
        consumer_cpu_request="100m",
        consumer_memory_request="128Mi",
        consumer_cpu_limit="1",
    ),
}


#: The other columns of the sizing table (docs/deploy.md, Sizing) by the Stripe events/s
#: they are sized for, as production overrides: to run one, end this file with
#: ``PROFILES["production"] = OVERRIDES[1000]`` and render (``stripe-bridge knative
#: render``, ``stripe-bridge nats generate``).
OVERRIDES: dict[int, Profile] = {
    # Only the storage grows: the rest of production keeps up with 100 events/s.
    100: replace(
        PROFILES["production"],
        nats=replace(
            SIZING["production"],
            volume="3Ti",
            max_file_store="2850G",
            stripe_max_bytes="2500G",
            usage_max_bytes="2500G",
        ),
    ),
    1000: replace(
        PROFILES["production"],
        # 2.7-6.1 ms per event: 3-6 cores of projecting.
        tiers_replicas=4,
        # 11,200 events/s to OpenMeter: 112 requests/s of 100, at most 20/s per replica.
        forwarder_replicas=6,
        # 10,000 usage records/s at 0.2 ms each: 2 cores of counting, plus each partition
        # reading (and skipping, 50 us each) the others' records: 3 would be exactly at
        # their ceiling, with no room for a customer heavier than its share; 4 keep up with
        # ~1,140 events/s (sizing.counter_ceiling).
        counter_partitions=4,
        # ~3.7 ms per node per event: with 2 CPUs NATS bounds the intake.
        nats=replace(
            SIZING["production"],
            cpu="4",
            volume="30Ti",
            max_file_store="28500G",
            stripe_max_bytes="25000G",
            usage_max_bytes="25000G",
        ),
    ),
}
