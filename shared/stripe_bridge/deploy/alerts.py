"""Prometheus alerting rules for the bridge, its NATS cluster and the billing consumers.

The rules are data: one keyword-argument ``Alert`` row each (``alert_model``), in tables
per area (the backups' are ``backup_alerts``); ``alerts_yaml`` and ``alerts_test_yaml``
render them as the rule file and its ``promtool test rules`` cases.

The bridge's and the consumers' alerts aggregate ``by (environment)``: staging and
production push to one Pushgateway (``environment`` is in the grouping key) and are scraped
by one Prometheus (``environment`` from the pods' ``stripe-bridge.io/environment`` label,
docs/observability.md), and one environment's traffic must neither hide nor raise the
other's alerts.
"""

from __future__ import annotations

import yaml

from .alert_model import (
    _PROD,
    _STAGING,
    COUNTER_BACKLOG,
    COUNTER_JOB,
    FORWARDER_JOB,
    GENERATED,
    HEALTHZ_STATUS,
    LIFECYCLE_JOB,
    NATS_JOB,
    NO_EVENTS_WINDOW,
    PROD,
    PROJECTOR_JOB,
    PUSHGATEWAY_JOB,
    STORAGE_ALERT_RATIO,
    STORAGE_RATIO,
    STRIPE_EVENTS_BACKLOG,
    USAGE_BACKLOG,
    Alert,
    Scenario,
    no_target_up,
)
from .backup_alerts import backup_alerts
from .entitlements_alerts import entitlements_alerts


def alerts() -> list[Alert]:
    """Every alerting rule: the bridge, the NATS cluster, the billing consumers, degraded
    entitlement answers, backups."""
    return [
        *_bridge_alerts(),
        *_nats_alerts(),
        *_billing_alerts(),
        *_lifecycle_and_counter_alerts(),
        *entitlements_alerts(),
        *backup_alerts(),
    ]


def _bridge_alerts() -> list[Alert]:
    """The bridge's functions, through the Pushgateway."""
    webhooks = "stripe_bridge_webhooks_total"
    total = f"sum by (environment) (rate({webhooks}[5m]))"
    signature = "sum by (environment) (rate(stripe_bridge_signature_failures_total[5m]))"
    mismatches = f'stripe_bridge_signature_failures_total{{{_PROD},reason="signature_mismatch"}}'
    rejected = f'{webhooks}{{{_PROD},outcome="rejected",reason="signature_mismatch"}}'
    return [
        Alert(
            name="StripeBridgeWebhookErrorRatio",
            expr=(
                f'sum by (environment) (rate({webhooks}{{outcome="failed"}}[5m])) / {total} > 0.05'
            ),
            duration="5m",
            severity="critical",
            summary="More than 5% of Stripe deliveries are answered 5xx",
            description=(
                "Deliveries fail with 503 (NATS, stream or idempotency store unavailable); Stripe "
                "retries them for up to 3 days, then gives up."
            ),
            anchor="webhook-error-ratio",
            # 10% in production; staging's busy healthy traffic would dilute that to
            # under 1% if the environments were summed together.
            firing=Scenario(
                {
                    f'{webhooks}{{{_PROD},outcome="failed",reason="nats_unavailable"}}': "0+1x30",
                    f'{webhooks}{{{_PROD},outcome="published",reason=""}}': "0+9x30",
                    f'{webhooks}{{{_STAGING},outcome="published",reason=""}}': "0+100x30",
                },
                "20m",
                (PROD,),
            ),
            # Healthy production; idle staging (0/0 is no ratio, not an error ratio).
            quiet=Scenario(
                {
                    f'{webhooks}{{{_PROD},outcome="failed",reason="nats_unavailable"}}': "0x30",
                    f'{webhooks}{{{_PROD},outcome="published",reason=""}}': "0+10x30",
                    f'{webhooks}{{{_STAGING},outcome="failed",reason="nats_unavailable"}}': (
                        "0x30"
                    ),
                },
                "20m",
            ),
        ),
        Alert(
            name="StripeBridgeSignatureFailureSpike",
            expr=f"{signature} / {total} > 0.5 and {signature} > 0.01",
            duration="5m",
            severity="critical",
            summary="Most deliveries fail signature verification (wrong secret after rotation?)",
            description=(
                "Deliveries are refused with 400; Stripe retries them, so nothing is lost yet."
            ),
            anchor="signature-failure-spike",
            firing=Scenario(
                {
                    mismatches: "0+6x30",
                    rejected: "0+6x30",
                    f'{webhooks}{{{_PROD},outcome="published",reason=""}}': "0+1x30",
                },
                "20m",
                (PROD,),
            ),
            quiet=Scenario(
                {
                    mismatches: "0+1x30",
                    rejected: "0+1x30",
                    f'{webhooks}{{{_PROD},outcome="published",reason=""}}': "0+20x30",
                },
                "20m",
            ),
        ),
        Alert(
            name="StripeBridgePublishFailures",
            expr=(
                "sum by (environment, reason) (rate(stripe_bridge_publish_failures_total[5m])) > 0"
            ),
            duration="5m",
            severity="critical",
            summary="JetStream publishes fail ({{ $labels.reason }})",
            description=(
                "Events are answered 503 and retried by Stripe; NATS or the stream is unavailable."
            ),
            anchor="publish-failures",
            firing=Scenario(
                {
                    f'stripe_bridge_publish_failures_total{{{_PROD},reason="nats_unavailable"}}': (
                        "0+1x30"
                    )
                },
                "20m",
                ({**PROD, "reason": "nats_unavailable"},),
            ),
            quiet=Scenario(
                {
                    f'stripe_bridge_publish_failures_total{{{_PROD},reason="nats_unavailable"}}': (
                        "0x30"
                    )
                },
                "20m",
            ),
        ),
        Alert(
            name="StripeBridgeEventTooLarge",
            expr=f'sum by (environment) (increase({webhooks}{{reason="event_too_large"}}[1h])) > 0',
            duration="0m",
            severity="warning",
            summary="A Stripe event is too large for NATS max_payload",
            description=(
                "It is refused with 413 and Stripe retries it for 3 days; raise max_payload within "
                "that window or the event is never stored."
            ),
            anchor="event-too-large",
            firing=Scenario(
                {f'{webhooks}{{{_PROD},outcome="rejected",reason="event_too_large"}}': "0+1x30"},
                "20m",
                (PROD,),
            ),
            quiet=Scenario(
                {f'{webhooks}{{{_PROD},outcome="rejected",reason="event_too_large"}}': "0x30"},
                "20m",
            ),
        ),
        Alert(
            name="StripeBridgeClockSkew",
            expr="max by (environment) (abs(stripe_bridge_signature_clock_skew_seconds)) > 60",
            duration="10m",
            severity="warning",
            summary="A function's clock is over a minute off Stripe's",
            description=(
                "Signatures are refused as too old or from the future once the skew passes "
                "STRIPE_SIGNATURE_TOLERANCE; fix NTP on the node."
            ),
            anchor="clock-skew",
            firing=Scenario(
                {f"stripe_bridge_signature_clock_skew_seconds{{{_PROD}}}": "-600x30"},
                "20m",
                (PROD,),
            ),
            quiet=Scenario(
                {f"stripe_bridge_signature_clock_skew_seconds{{{_PROD}}}": "0.4x30"},
                "20m",
            ),
        ),
        Alert(
            name="StripeBridgeNoEvents",
            # ``or on ()``: the 0 only when no environment has the series at all.
            expr=f"(sum by (environment) "
            f'(increase({webhooks}{{outcome=~"published|duplicate"}}[{NO_EVENTS_WINDOW}]))'
            " or on () vector(0)) == 0",
            duration="30m",
            severity="warning",
            summary=f"No Stripe event stored for {NO_EVENTS_WINDOW}",
            description=(
                "Stripe normally sends events every few hours; check the webhook endpoint in the "
                "Stripe dashboard, the ingress and the functions."
            ),
            anchor="no-events",
            # Production silent while staging is busy: fires for production alone.
            firing=Scenario(
                {
                    f'{webhooks}{{{_PROD},outcome="published",reason=""}}': "5x480",
                    f'{webhooks}{{{_STAGING},outcome="published",reason=""}}': "0+1x480",
                },
                "7h",
                (PROD,),
            ),
            quiet=Scenario(
                {f'{webhooks}{{{_PROD},outcome="published",reason=""}}': "0+1x480"}, "7h"
            ),
        ),
        Alert(
            name="StripeBridgePushgatewayDown",
            expr=f'up{{job="{PUSHGATEWAY_JOB}"}} == 0',
            duration="5m",
            severity="warning",
            summary="The Pushgateway is not scraped: the bridge's metrics and alerts are blind",
            description=(
                "Webhooks are unaffected (pushes never block them), but no bridge metric reaches "
                "Prometheus, so the other bridge alerts cannot fire."
            ),
            anchor="pushgateway-down",
            firing=Scenario(
                {f'up{{job="{PUSHGATEWAY_JOB}",instance="pushgateway:9091"}}': "0x10"},
                "8m",
                ({"job": PUSHGATEWAY_JOB, "instance": "pushgateway:9091"},),
            ),
            quiet=Scenario(
                {f'up{{job="{PUSHGATEWAY_JOB}",instance="pushgateway:9091"}}': "1x10"}, "8m"
            ),
        ),
    ]


def _nats_alerts() -> list[Alert]:
    """The NATS cluster, through prometheus-nats-exporter."""
    up = f'up{{job="{NATS_JOB}"}}'
    healthz = f'{HEALTHZ_STATUS}{{job="{NATS_JOB}"}}'

    # Each environment runs its own NATS cluster; the scrape job labels its series.
    def target(n: int, env: str = _PROD) -> str:
        return f'up{{job="{NATS_JOB}",{env},instance="nats-{n}:7777"}}'

    def health(n: int, env: str = _PROD) -> str:
        return f'{HEALTHZ_STATUS}{{job="{NATS_JOB}",{env},instance="nats-{n}:7777"}}'

    def cluster_size(env: str = _PROD) -> str:
        return f'nats_varz_jetstream_meta_cluster_size{{{env},server_id="n0"}}'

    size = "max by (environment) (max_over_time(nats_varz_jetstream_meta_cluster_size[1h]))"
    pending = (
        f'nats_consumer_num_pending{{{_PROD},is_consumer_leader="true",'
        'stream_name="STRIPE",consumer_name="billing"}'
    )
    return [
        Alert(
            name="NatsJetStreamStorageNearlyFull",
            expr=f"{STORAGE_RATIO} > {STORAGE_ALERT_RATIO}",
            duration="10m",
            severity="warning",
            summary="JetStream file storage on {{ $labels.server_id }} is over 80% full",
            description="At 100% publishes fail and the bridge answers 503.",
            anchor="jetstream-storage",
            firing=Scenario(
                {
                    'nats_varz_jetstream_stats_storage{server_id="n1"}': "900x30",
                    'nats_varz_jetstream_config_max_storage{server_id="n1"}': "1000x30",
                },
                "20m",
                ({"server_id": "n1"},),
            ),
            quiet=Scenario(
                {
                    'nats_varz_jetstream_stats_storage{server_id="n1"}': "500x30",
                    'nats_varz_jetstream_config_max_storage{server_id="n1"}': "1000x30",
                },
                "20m",
            ),
        ),
        Alert(
            name="NatsServerDown",
            expr=f"{up} == 0",
            duration="2m",
            severity="warning",
            summary="NATS server {{ $labels.instance }} is not scraped",
            description=(
                "The pod or its exporter is down. One server down keeps quorum in a 3-node "
                "cluster; a second one loses it."
            ),
            anchor="nats-server-down",
            firing=Scenario(
                {target(1): "0x10"},
                "5m",
                ({"job": NATS_JOB, **PROD, "instance": "nats-1:7777"},),
            ),
            quiet=Scenario({target(1): "1x10"}, "5m"),
        ),
        Alert(
            name="NatsServerUnhealthy",
            # The exporter is a sidecar: ``up`` stays 1 when only the nats container died.
            # Depending on its version it then reports /healthz as failing or drops the
            # series, so both count.
            expr=f"max by (environment, instance) ({healthz}) > 0"
            f" or max by (environment, instance) "
            f"({up} == 1 unless on (environment, instance) {healthz})",
            duration="2m",
            severity="warning",
            summary="NATS server {{ $labels.instance }} is unhealthy while its exporter answers",
            description=(
                "The nats container is down, restarting, or its JetStream is not current. One "
                "server out keeps quorum in a 3-node cluster; a second one loses it."
            ),
            anchor="nats-server-unhealthy",
            firing=Scenario(
                {
                    target(1): "1x10",
                    target(2): "1x10",
                    health(1): "1x10",
                },
                "5m",
                ({**PROD, "instance": "nats-1:7777"}, {**PROD, "instance": "nats-2:7777"}),
            ),
            quiet=Scenario(
                {
                    target(1): "1x10",
                    target(2): "1x10",
                    health(1): "0x10",
                    health(2): "0x10",
                },
                "5m",
            ),
        ),
        Alert(
            name="NatsClusterNoQuorum",
            # Healthy servers, not scraped exporters (see NatsServerUnhealthy), per
            # environment; ``0 * size`` is the count of an environment with none healthy.
            expr=f"(count by (environment) (max by (environment, instance) ({healthz}) == 0)"
            f" or on (environment) 0 * {size}) < on (environment) floor({size} / 2) + 1",
            duration="1m",
            severity="critical",
            summary="The JetStream cluster lost quorum",
            description=(
                "Fewer than a majority of JetStream servers are healthy: no stream accepts writes "
                "and every delivery is answered 503."
            ),
            anchor="nats-no-quorum",
            # Production has 1 of 3 healthy (nats-1's exporter still answers, its server
            # does not); staging's 3 healthy servers must not make up for it.
            firing=Scenario(
                {
                    health(0): "0x10",
                    health(1): "1x10",
                    cluster_size(): "3x10",
                    **{health(n, _STAGING): "0x10" for n in range(3)},
                    cluster_size(_STAGING): "3x10",
                },
                "5m",
                (PROD,),
            ),
            quiet=Scenario(
                {
                    health(0): "0x10",
                    health(1): "0x10",
                    health(2): "1x10",
                    cluster_size(): "3x10",
                },
                "5m",
            ),
        ),
        Alert(
            name="NatsServerWithoutRoutes",
            expr=(
                "nats_varz_routes == 0 and on (server_id) nats_varz_jetstream_meta_cluster_size > 1"
            ),
            duration="5m",
            severity="warning",
            summary="NATS server {{ $labels.server_id }} has no route to its cluster",
            description="It is partitioned from its peers; its stream replicas fall behind.",
            anchor="nats-routes",
            firing=Scenario(
                {
                    'nats_varz_routes{server_id="n1"}': "0x20",
                    'nats_varz_jetstream_meta_cluster_size{server_id="n1"}': "3x20",
                },
                "10m",
                ({"server_id": "n1"},),
            ),
            quiet=Scenario(
                {
                    'nats_varz_routes{server_id="n1"}': "2x20",
                    'nats_varz_jetstream_meta_cluster_size{server_id="n1"}': "3x20",
                },
                "10m",
            ),
        ),
        Alert(
            name="NatsConsumerLag",
            expr=(
                "max by (environment, stream_name, consumer_name) "
                '(nats_consumer_num_pending{is_consumer_leader="true"}) > 1000'
            ),
            duration="15m",
            severity="warning",
            summary="Consumer {{ $labels.consumer_name }} on {{ $labels.stream_name }} lags",
            description=(
                "More than 1000 messages are not yet delivered to it; downstream billing state is "
                "stale."
            ),
            anchor="consumer-lag",
            firing=Scenario(
                {pending: "5000x40"},
                "30m",
                ({**PROD, "stream_name": "STRIPE", "consumer_name": "billing"},),
            ),
            quiet=Scenario({pending: "10x40"}, "30m"),
        ),
    ]


def _billing_alerts() -> list[Alert]:
    """The billing consumers, scraped on their ``--metrics-port``."""
    breaker = "stripe_bridge_openmeter_breaker_state"
    sent = "stripe_bridge_openmeter_events_sent_total"
    dead = "stripe_bridge_openmeter_events_dead_lettered_total"
    lag = "stripe_bridge_openmeter_consumer_lag"
    ack_pending = "stripe_bridge_openmeter_ack_pending"
    tiers_lag = "stripe_bridge_tiers_consumer_lag"
    consumer_dead = "stripe_bridge_consumer_dead_letters_total"
    lifecycle = (
        f'{{job="{LIFECYCLE_JOB}",{_PROD},instance="lifecycle-0:9464",'
        'consumer="lifecycle",event_type="invoice.payment_failed"}'
    )
    fwd = f'{{job="{FORWARDER_JOB}",{_PROD},instance="fwd-0:9464"}}'
    proj = f'{{job="{PROJECTOR_JOB}",{_PROD},instance="tiers-0:9464"}}'
    # Replicas sharing a durable all report the consumer's numbers: take the max, not the sum.
    waiting = f"max by (environment) ({lag}) + max by (environment) ({ack_pending})"
    return [
        Alert(
            name="OpenMeterBreakerOpen",
            expr=f"max by (environment, instance) ({breaker}) > 0",
            duration="10m",
            severity="warning",
            summary="The OpenMeter breaker of {{ $labels.instance }} has not closed for 10 minutes",
            description=(
                "OpenMeter keeps failing (5xx, timeouts, connection errors): usage waits in the "
                "USAGE stream (30 days) and invoices fall behind."
            ),
            anchor="openmeter-breaker-open",
            # Open (2) with half-open trials (1) that fail: never back to closed (0).
            firing=Scenario(
                {f"{breaker}{fwd}": "0 0 2 2 2 1 2 2 2 1 2 2 2 1 2 2 2 1 2 2"},
                "18m",
                ({**PROD, "instance": "fwd-0:9464"},),
            ),
            quiet=Scenario({f"{breaker}{fwd}": "0 0 2 2 2 1 0 0 2 2 2 1 0 0 2 2 2 1 0 0"}, "18m"),
        ),
        Alert(
            name="OpenMeterDeadLetters",
            expr=f"sum by (environment) (increase({dead}[15m])) > 0",
            duration="0m",
            severity="warning",
            summary="OpenMeter refused usage events (invalid, or 412); they are in USAGE_DLQ",
            description="Those events are not billed until a producer fix republishes them.",
            anchor="openmeter-dead-letters",
            firing=Scenario({f"{dead}{fwd}": "0 0 0 0 0 3 3 3 3 3"}, "8m", (PROD,)),
            quiet=Scenario({f"{dead}{fwd}": "3x40"}, "30m"),
        ),
        Alert(
            name="BillingConsumerDeadLetters",
            expr=f"sum by (environment, consumer) (increase({consumer_dead}[15m])) > 0",
            duration="0m",
            severity="warning",
            summary="{{ $labels.consumer }} dead-lettered messages it could not use",
            description=(
                "Those Stripe events or usage records changed no tier, lifecycle event or count; "
                "they wait in STRIPE_DLQ or USAGE_DLQ with the reason until a fix and a redrive."
            ),
            anchor="billing-consumer-dead-letters",
            firing=Scenario(
                {f"{consumer_dead}{lifecycle}": "0 0 0 0 0 1 1 1 1 1"},
                "8m",
                ({**PROD, "consumer": "lifecycle"},),
            ),
            quiet=Scenario({f"{consumer_dead}{lifecycle}": "1x40"}, "30m"),
        ),
        Alert(
            name="OpenMeterUsageStalled",
            # ``unless``: also when the environment has no sent series at all.
            expr=(
                f"{waiting} > 0 unless on (environment)"
                f" sum by (environment) (rate({sent}[10m])) > 0"
            ),
            duration="10m",
            severity="critical",
            summary="Usage events wait and none reached OpenMeter for 20 minutes",
            description=(
                "The forwarder is stuck, refused, or OpenMeter is down: usage is safe in the USAGE "
                "stream but is not metered, so invoices will be short."
            ),
            anchor="openmeter-usage-stalled",
            firing=Scenario(
                {
                    f"{sent}{fwd}": "500x40",
                    f"{lag}{fwd}": "0+10x40",
                    f"{ack_pending}{fwd}": "100x40",
                },
                "30m",
                (PROD,),
            ),
            quiet=Scenario(
                {
                    f"{sent}{fwd}": "0+100x40",
                    f"{lag}{fwd}": "50x40",
                    f"{ack_pending}{fwd}": "100x40",
                },
                "30m",
            ),
        ),
        Alert(
            name="OpenMeterUsageBacklog",
            expr=f"max by (environment) ({lag}) > {USAGE_BACKLOG}"
            f" and on (environment) max by (environment) (deriv({lag}[15m])) > 0",
            duration="15m",
            severity="warning",
            summary=f"More than {USAGE_BACKLOG} usage events wait for the forwarder, and growing",
            description=(
                "Usage arrives faster than the forwarder delivers it to OpenMeter (rate limit, "
                "slow OpenMeter, too few replicas); metering falls behind."
            ),
            anchor="openmeter-usage-backlog",
            firing=Scenario({f"{lag}{fwd}": "5000+500x60"}, "50m", (PROD,)),
            # A large backlog that shrinks (catching up after an outage) is fine.
            quiet=Scenario({f"{lag}{fwd}": "40000-500x60"}, "50m"),
        ),
        Alert(
            name="OpenMeterForwarderDown",
            expr=no_target_up(FORWARDER_JOB),
            duration="5m",
            severity="critical",
            summary="No OpenMeter forwarder is running (no scrape target up)",
            description="Usage events pile up in the USAGE stream and nothing is metered.",
            anchor="openmeter-forwarder-down",
            firing=Scenario({f"up{fwd}": "1 1 0 0 0 0 0 0 0 0 0 0"}, "10m", (PROD,)),
            quiet=Scenario({f"up{fwd}": "1x12"}, "10m"),
        ),
        Alert(
            name="TierProjectorLag",
            expr=f"max by (environment) ({tiers_lag}) > {STRIPE_EVENTS_BACKLOG}",
            duration="15m",
            severity="warning",
            summary=f"More than {STRIPE_EVENTS_BACKLOG} Stripe events wait for the tier projector",
            description=(
                "Customers' tiers and entitlements in BILLING_TIERS are stale: upgrades and "
                "cancellations are not seen by the apps yet."
            ),
            anchor="tier-projector-lag",
            firing=Scenario({f"{tiers_lag}{proj}": "500x30"}, "20m", (PROD,)),
            quiet=Scenario({f"{tiers_lag}{proj}": "3x30"}, "20m"),
        ),
        Alert(
            name="TierProjectorDown",
            expr=no_target_up(PROJECTOR_JOB),
            duration="5m",
            severity="critical",
            summary="No tier projector is running (no scrape target up)",
            description=(
                "Subscription and entitlement changes are not projected: the apps read stale tiers."
            ),
            anchor="tier-projector-down",
            # Never scraped at all (not deployed, or crash-looping before it serves /metrics).
            firing=Scenario({f'up{{job="{FORWARDER_JOB}"}}': "1x12"}, "10m", ({},)),
            quiet=Scenario({f"up{proj}": "1x12"}, "10m"),
        ),
    ]


def _lifecycle_and_counter_alerts() -> list[Alert]:
    """``project-lifecycle`` and ``count-usage``: lag (their gauges) and down (scrape targets)."""
    lifecycle_lag = "stripe_bridge_lifecycle_consumer_lag"
    counter_lag = "stripe_bridge_usage_counter_lag"
    lifecycle = f'{{job="{LIFECYCLE_JOB}",{_PROD},instance="lifecycle-0:9090"}}'
    counter_partitions = "stripe_bridge_usage_counter_partitions"
    # Two count-usage partitions (--partitions 2), each its own scrape target.
    part = [
        f'{{job="{COUNTER_JOB}",{_PROD},instance="counter-{i}:9090",partition="{i}"}}'
        for i in (0, 1)
    ]
    pod = [f'{{job="{COUNTER_JOB}",{_PROD},instance="counter-{i}:9090"}}' for i in (0, 1)]
    # A partition's lag series per partition counted, against how many there should be: a
    # partition down leaves the others up (its customers are not counted).
    job = f'{{job="{COUNTER_JOB}"}}'
    partition_missing = (
        f"count by (environment) (count by (environment, partition) ({counter_lag}{job})) "
        f"< max by (environment) ({counter_partitions}{job})"
    )
    return [
        Alert(
            name="LifecycleProjectorLag",
            expr=f"max by (environment) ({lifecycle_lag}) > {STRIPE_EVENTS_BACKLOG}",
            duration="15m",
            severity="warning",
            summary=(
                f"More than {STRIPE_EVENTS_BACKLOG} Stripe events wait for the lifecycle projector"
            ),
            description=(
                "Subscription started/updated/ended and payment events reach OpenMeter late: "
                "entitlements and invoices there lag behind Stripe."
            ),
            anchor="lifecycle-projector-lag",
            firing=Scenario({f"{lifecycle_lag}{lifecycle}": "500x30"}, "20m", (PROD,)),
            quiet=Scenario({f"{lifecycle_lag}{lifecycle}": "3x30"}, "20m"),
        ),
        Alert(
            name="LifecycleProjectorDown",
            expr=no_target_up(LIFECYCLE_JOB),
            duration="5m",
            severity="critical",
            summary="No lifecycle projector is running (no scrape target up)",
            description=(
                "Subscription and payment lifecycle events wait in STRIPE and none reaches "
                "OpenMeter."
            ),
            anchor="lifecycle-projector-down",
            firing=Scenario({f"up{lifecycle}": "1 1 0 0 0 0 0 0 0 0 0 0"}, "10m", (PROD,)),
            quiet=Scenario({f"up{lifecycle}": "1x12"}, "10m"),
        ),
        Alert(
            name="UsageCounterLag",
            expr=f"max by (environment, partition) ({counter_lag}) > {COUNTER_BACKLOG}",
            duration="10m",
            severity="warning",
            summary=(
                f"More than {COUNTER_BACKLOG} usage records wait for usage counter partition "
                "{{ $labels.partition }}"
            ),
            description=(
                "Usage counts in the BILLING_USAGE_* buckets are behind: limit checks "
                "(POST /v1/check) miss the latest usage and let customers past their limits."
            ),
            anchor="usage-counter-lag",
            # A burst the counter works off within minutes is quiet.
            firing=Scenario(
                {f"{counter_lag}{part[0]}": "5000x30"},
                "20m",
                ({**PROD, "partition": "0"},),
            ),
            quiet=Scenario(
                {
                    f"{counter_lag}{part[0]}": "5000 4000 3000 2000 1000 0x25",
                    f"{counter_lag}{part[1]}": "5000 4000 3000 2000 1000 0x25",
                },
                "20m",
            ),
            # One partition of two lagging fires, naming it, while the other keeps up.
            also_firing=(
                Scenario(
                    {f"{counter_lag}{part[0]}": "0x30", f"{counter_lag}{part[1]}": "5000x30"},
                    "20m",
                    ({**PROD, "partition": "1"},),
                ),
            ),
        ),
        Alert(
            name="UsageCounterDown",
            expr=f"{no_target_up(COUNTER_JOB)} or {partition_missing}",
            duration="5m",
            severity="critical",
            summary="A usage counter partition is not running (or none is)",
            description=(
                "Usage is not counted: limit checks read counts that miss every record since, "
                "so customers can exceed their tier's limits."
            ),
            anchor="usage-counter-down",
            firing=Scenario({f"up{pod[0]}": "1 1 0 0 0 0 0 0 0 0 0 0"}, "10m", (PROD,)),
            quiet=Scenario(
                {
                    **{f"up{p}": "1x12" for p in pod},
                    **{f"{counter_lag}{p}": "0x12" for p in part},
                    **{f"{counter_partitions}{p}": "2x12" for p in pod},
                },
                "10m",
            ),
            # Partition 1 of 2 stops (its series go stale) while partition 0 runs on.
            also_firing=(
                Scenario(
                    {
                        f"up{pod[0]}": "1x12",
                        f"up{pod[1]}": "1 1 0x10",
                        f"{counter_lag}{part[0]}": "0x12",
                        f"{counter_lag}{part[1]}": "0 0 stale",
                        f"{counter_partitions}{pod[0]}": "2x12",
                        f"{counter_partitions}{pod[1]}": "2 2 stale",
                    },
                    "10m",
                    (PROD,),
                ),
            ),
        ),
    ]


def alerts_yaml() -> str:
    """The Prometheus rule file with every alert."""
    rules = [
        {
            "alert": a.name,
            "expr": a.expr,
            "for": a.duration,
            "labels": a.rule_labels(),
            "annotations": a.annotations(),
        }
        for a in alerts()
    ]
    body = {"groups": [{"name": "stripe-bridge", "rules": rules}]}
    return GENERATED + yaml.safe_dump(body, sort_keys=False, width=100)


def _test_case(alert: Alert, scenario: Scenario, verb: str) -> dict[str, object]:
    return {
        "name": f"{alert.name} {verb}",
        "interval": "1m",
        "input_series": [
            {"series": series, "values": values} for series, values in scenario.series.items()
        ],
        "alert_rule_test": [
            {
                "eval_time": scenario.eval_time,
                "alertname": alert.name,
                "exp_alerts": [
                    {
                        "exp_labels": {**alert.rule_labels(), **labels},
                        "exp_annotations": alert.annotations(labels),
                    }
                    for labels in scenario.fires
                ],
            }
        ],
    }


def alerts_test_yaml() -> str:
    """``promtool test rules`` cases: every alert firing, and staying quiet."""
    tests = []
    for alert in alerts():
        tests.append(_test_case(alert, alert.firing, "fires"))
        for n, scenario in enumerate(alert.also_firing, start=2):
            tests.append(_test_case(alert, scenario, f"fires ({n})"))
        tests.append(_test_case(alert, alert.quiet, "stays quiet"))
    body = {"rule_files": ["alerts.yml"], "evaluation_interval": "1m", "tests": tests}
    return GENERATED + yaml.safe_dump(body, sort_keys=False, width=100)
