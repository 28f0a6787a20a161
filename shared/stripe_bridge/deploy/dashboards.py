"""Grafana dashboards and Prometheus alert rules, generated from code.

``stripe-bridge generate`` writes them under ``dashboards/``; per-event-type panels and
variables come from ``stripe_bridge.registry``. Every bridge panel's query is proven to
return data from a real Prometheus fed by a real Pushgateway (tests/observability), and the
rules are checked and unit-tested with ``promtool``.

Queries assume Prometheus scrapes the Pushgateway with ``honor_labels: true`` (so ``job``,
``function`` and ``instance`` are the pushing process's) and the NATS servers through
prometheus-nats-exporter (``-varz -routez -jsz=all -prefix=nats``, as nats/base deploys
it) in a scrape job called ``nats``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import registry
from ..push import JOB
from .alert_model import FORWARDER_JOB, HEALTHZ_STATUS, NATS_JOB, PROJECTOR_JOB, STORAGE_RATIO
from .alerts import alerts_test_yaml, alerts_yaml
from .billing_rows import backup_row, usage_row
from .grafana import Dashboard, Panel, Row, dashboard_json, rate

_BRIDGE = '{environment=~"$environment",function=~"$function"}'
_TYPED = '{event_type=~"$event_type",environment=~"$environment",function=~"$function"}'


def _webhooks(matchers: str = "") -> str:
    extra = f",{matchers}" if matchers else ""
    return f"stripe_bridge_webhooks_total{_TYPED[:-1]}{extra}}}"


def _quantiles(histogram: str, selector: str = _BRIDGE) -> list[tuple[str, str]]:
    bucket = rate(f"{histogram}_bucket{selector}")
    return [
        (f"p{int(q * 100)}", f"histogram_quantile({q}, sum by (le) ({bucket}))")
        for q in (0.5, 0.9, 0.99)
    ]


def _custom_variable(name: str, label: str, values: Sequence[str]) -> dict[str, Any]:
    """A multi-value variable over ``values`` whose "All" is the regex ``.*``."""
    return {
        "type": "custom",
        "name": name,
        "label": label,
        "query": ",".join(values),
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
    }


def _environment_variable(source: str) -> dict[str, Any]:
    """The environments found in ``source``'s ``environment`` label (one at a time)."""
    return {
        "type": "query",
        "name": "environment",
        "label": "Environment",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": f"label_values({source}, environment)"},
        "definition": f"label_values({source}, environment)",
        "refresh": 2,
        # One environment at a time by default: staging's traffic must not hide production's.
        "multi": False,
        "includeAll": True,
        "allValue": ".*",
        "options": [],
    }


def bridge_dashboard() -> Dashboard:
    """The bridge: traffic, errors, latency, NATS publishing, functions and push health."""
    per_type = [
        Panel(
            t.name,
            [("stored/s", f"sum({rate(_webhooks_for(t.name))})")],
            unit="reqps",
            description=t.summary,
            kind="stat",
            width=6,
        )
        for t in registry.EVENT_TYPES
    ]
    failed = rate(_webhooks('outcome="failed"'))
    rejected = rate(_webhooks('outcome="rejected"'))
    repeated = rate(_webhooks('outcome=~"duplicate|in_progress"'))
    return Dashboard(
        uid="stripe-bridge",
        title="Stripe bridge",
        description="Stripe webhooks to JetStream, pushed by every function instance to the "
        "Pushgateway; see docs/observability.md.",
        variables=[
            # The Pushgateway's ``environment`` grouping-key label.
            _environment_variable("stripe_bridge_webhooks_total"),
            _custom_variable("event_type", "Event type", [t.name for t in registry.EVENT_TYPES]),
            _custom_variable("function", "Function", registry.function_names()),
        ],
        rows=[
            Row(
                "Traffic",
                [
                    Panel(
                        "Deliveries by event type and outcome",
                        [
                            (
                                "{{event_type}} {{outcome}}",
                                f"sum by (event_type, outcome) ({rate(_webhooks())})",
                            )
                        ],
                        unit="reqps",
                    ),
                    Panel(
                        "Error ratio (answered 5xx, Stripe retries)",
                        [("failed", f"sum({failed}) / sum({rate(_webhooks())})")],
                        unit="percentunit",
                    ),
                    Panel(
                        "Rejections by reason (4xx)",
                        [
                            (
                                "{{reason}}",
                                f"sum by (reason) ({rejected})",
                            )
                        ],
                        unit="reqps",
                    ),
                    Panel(
                        "Signature failures by reason",
                        [
                            (
                                "{{reason}}",
                                "sum by (reason) "
                                f"({rate('stripe_bridge_signature_failures_total' + _BRIDGE)})",
                            )
                        ],
                        unit="reqps",
                        description="A jump in signature_mismatch right after a secret "
                        "rotation means the functions run with the wrong secret.",
                    ),
                    Panel(
                        "Duplicates and concurrent deliveries",
                        [
                            (
                                "{{outcome}}",
                                f"sum by (outcome) ({repeated})",
                            )
                        ],
                        unit="reqps",
                    ),
                    Panel(
                        "Translation failures (published untranslated)",
                        [
                            (
                                "{{event_type}}",
                                "sum by (event_type) "
                                f"({rate('stripe_bridge_translation_failures_total' + _TYPED)})",
                            )
                        ],
                        unit="reqps",
                    ),
                ],
            ),
            Row(
                "Latency",
                [
                    Panel(
                        "Webhook answer latency",
                        _quantiles("stripe_bridge_request_duration_seconds"),
                        unit="s",
                    ),
                    Panel(
                        "JetStream PubAck latency",
                        _quantiles("stripe_bridge_publish_duration_seconds"),
                        unit="s",
                    ),
                ],
            ),
            Row(
                "NATS and idempotency",
                [
                    Panel(
                        "Publish failures by reason",
                        [
                            (
                                "{{reason}}",
                                "sum by (reason) "
                                f"({rate('stripe_bridge_publish_failures_total' + _BRIDGE)})",
                            )
                        ],
                        unit="reqps",
                    ),
                    Panel(
                        "Instances connected to NATS",
                        [
                            (
                                "{{function}}",
                                f"sum by (function) (stripe_bridge_nats_connected{_BRIDGE})",
                            )
                        ],
                        description="Counts kept groups of exited instances as 0.",
                    ),
                    Panel(
                        "Idempotency store errors",
                        [
                            (
                                "{{backend}} {{operation}}",
                                "sum by (backend, operation) "
                                f"({rate('stripe_bridge_idempotency_errors_total' + _BRIDGE)})",
                            )
                        ],
                        unit="reqps",
                    ),
                    Panel(
                        "In-flight deliveries",
                        [
                            (
                                "{{function}}",
                                f"sum by (function) (stripe_bridge_inflight_requests{_BRIDGE})",
                            )
                        ],
                    ),
                ],
            ),
            Row(
                "Functions (scale to zero)",
                [
                    Panel(
                        "Cold starts (instances started in the last 15 minutes)",
                        [
                            (
                                "{{function}}",
                                "count by (function) (time() - "
                                f"stripe_bridge_process_start_time_seconds{_BRIDGE} < 900)",
                            )
                        ],
                    ),
                    Panel(
                        "Cold start to first stored event (slowest instance)",
                        [
                            (
                                "{{function}}",
                                f"max by (function) (stripe_bridge_cold_start_seconds{_BRIDGE})",
                            )
                        ],
                        unit="s",
                    ),
                    Panel(
                        "Pushgateway freshness (seconds since the newest push)",
                        [
                            (
                                "{{function}}",
                                "time() - max by (function) "
                                f'(push_time_seconds{{job="{JOB}",{_BRIDGE[1:]})',
                            )
                        ],
                        unit="s",
                        description="Grows while a function is scaled to zero; "
                        "instances re-push at least every minute while alive.",
                    ),
                    Panel(
                        "Metrics push failures",
                        [
                            (
                                "{{reason}}",
                                "sum by (reason) "
                                f"({rate('stripe_bridge_push_failures_total' + _BRIDGE)})",
                            )
                        ],
                        unit="reqps",
                    ),
                ],
            ),
            Row("Stored events per type", per_type),
        ],
    )


def _webhooks_for(event_type: str) -> str:
    return (
        f'stripe_bridge_webhooks_total{{event_type="{event_type}",'
        f'outcome=~"published|duplicate",{_BRIDGE[1:]}'
    )


def nats_dashboard() -> Dashboard:
    """The NATS JetStream cluster, from prometheus-nats-exporter's metric names."""
    # Each environment runs its own cluster (the scrape job sets ``environment``).
    env = '{environment=~"$environment"}'
    job = f'{{job="{NATS_JOB}",{env[1:]}'
    leader = f'{env[:-1]},is_stream_leader="true",stream_name=~"$stream"}}'
    consumer = f'{env[:-1]},is_consumer_leader="true",stream_name=~"$stream"}}'
    return Dashboard(
        uid="stripe-bridge-nats",
        title="Stripe bridge: NATS JetStream cluster",
        description="prometheus-nats-exporter (-varz -routez -jsz=all -prefix=nats) beside "
        "every NATS server.",
        variables=[
            _environment_variable(f'up{{job="{NATS_JOB}"}}'),
            _custom_variable("stream", "Stream", ["STRIPE"]),
        ],
        rows=[
            Row(
                "Cluster health",
                [
                    Panel(
                        "Servers up",
                        [
                            ("scraped", f"sum(up{job})"),
                            (
                                "healthy",
                                # count() of nothing is no data, not 0: the stat would go
                                # blank exactly when every server is unhealthy.
                                f"count(max by (instance) ({HEALTHZ_STATUS}{job}) == 0)"
                                " or vector(0)",
                            ),
                        ],
                        kind="stat",
                        width=6,
                        description="Exporters scraped, and servers whose /healthz is ok: the "
                        "exporter is a sidecar and stays up when only the nats container dies.",
                    ),
                    Panel(
                        "JetStream cluster size",
                        [("peers", f"max(nats_varz_jetstream_meta_cluster_size{env})")],
                        kind="stat",
                        width=6,
                    ),
                    Panel(
                        "Servers that see a meta leader",
                        [
                            (
                                "{{meta_leader}}",
                                "count by (meta_leader) (nats_server_total_streams"
                                f'{env[:-1]},meta_leader!=""}})',
                            )
                        ],
                        kind="stat",
                        width=6,
                    ),
                    Panel(
                        "Routes per server",
                        [("{{server_id}}", f"sum by (server_id) (nats_varz_routes{env})")],
                        width=6,
                    ),
                    Panel(
                        "Client connections",
                        [("{{server_id}}", f"sum by (server_id) (nats_varz_connections{env})")],
                    ),
                    Panel(
                        "Slow consumers",
                        [
                            (
                                "{{server_id}}",
                                "sum by (server_id) "
                                f"(rate(nats_varz_slow_consumers{env}[$__rate_interval]))",
                            )
                        ],
                    ),
                ],
            ),
            Row(
                "JetStream storage",
                [
                    Panel(
                        "File storage used, reserved and max",
                        [
                            ("used {{server_id}}", f"nats_varz_jetstream_stats_storage{env}"),
                            (
                                "reserved {{server_id}}",
                                f"nats_varz_jetstream_stats_reserved_storage{env}",
                            ),
                            ("max {{server_id}}", f"nats_varz_jetstream_config_max_storage{env}"),
                        ],
                        unit="bytes",
                    ),
                    Panel(
                        "File storage used (share of max)",
                        [("{{server_id}}", STORAGE_RATIO)],
                        unit="percentunit",
                    ),
                ],
            ),
            Row(
                "Streams and consumers",
                [
                    Panel(
                        "Stream messages",
                        [
                            (
                                "{{stream_name}}",
                                f"max by (stream_name) (nats_stream_total_messages{leader})",
                            )
                        ],
                    ),
                    Panel(
                        "Stream bytes",
                        [
                            (
                                "{{stream_name}}",
                                f"max by (stream_name) (nats_stream_total_bytes{leader})",
                            )
                        ],
                        unit="bytes",
                    ),
                    Panel(
                        "Consumer lag (messages not yet delivered)",
                        [
                            (
                                "{{stream_name}}/{{consumer_name}}",
                                "max by (stream_name, consumer_name) "
                                f"(nats_consumer_num_pending{consumer})",
                            )
                        ],
                    ),
                    Panel(
                        "Consumer acks pending and redeliveries",
                        [
                            (
                                "ack pending {{consumer_name}}",
                                "max by (stream_name, consumer_name) "
                                f"(nats_consumer_num_ack_pending{consumer})",
                            ),
                            (
                                "redelivered {{consumer_name}}",
                                "max by (stream_name, consumer_name) "
                                f"(nats_consumer_num_redelivered{consumer})",
                            ),
                        ],
                    ),
                ],
            ),
        ],
    )


def billing_dashboard() -> Dashboard:
    """The billing consumers: usage flowing to OpenMeter, and the tier projector."""

    # Scraped with ``environment`` from the pods' label (docs/observability.md).
    env = '{environment=~"$environment"}'

    def rate_sum(metric: str, by: str = "") -> str:
        grouping = f" by ({by})" if by else ""
        return f"sum{grouping} ({rate(metric + env)})"

    om = "stripe_bridge_openmeter_"
    return Dashboard(
        uid="stripe-bridge-billing",
        title="Stripe bridge: billing",
        description="forward-openmeter (usage to OpenMeter) and project-tiers (tiers KV), "
        "scraped on their --metrics-port; see docs/billing.md.",
        variables=[_environment_variable(f'up{{job="{FORWARDER_JOB}"}}')],
        rows=[
            Row(
                "Usage to OpenMeter",
                [
                    Panel(
                        "Forwarders up",
                        [("up", f'sum(up{{job="{FORWARDER_JOB}",{env[1:]})')],
                        kind="stat",
                        width=6,
                    ),
                    Panel(
                        "Breaker state",
                        [("{{instance}}", f"max by (instance) ({om}breaker_state{env})")],
                        kind="stat",
                        width=6,
                        description="0 closed, 1 half-open (one trial request), 2 open "
                        "(nothing is sent until the reset timeout).",
                    ),
                    Panel(
                        "Waiting usage events",
                        [
                            ("not yet delivered", f"max({om}consumer_lag{env})"),
                            ("delivered, not acked", f"max({om}ack_pending{env})"),
                        ],
                        description="Consumer-wide figures: every replica reports the same.",
                    ),
                    Panel(
                        "Usage events sent/s",
                        [("accepted", rate_sum(f"{om}events_sent_total"))],
                        unit="ops",
                    ),
                    Panel(
                        "Retried",
                        [("{{reason}}", rate_sum(f"{om}events_retried_total", "reason"))],
                        unit="ops",
                    ),
                    Panel(
                        "Dead-lettered",
                        [("to USAGE_DLQ", rate_sum(f"{om}events_dead_lettered_total"))],
                        unit="ops",
                        description="Refused by OpenMeter as invalid; see the runbook.",
                    ),
                    Panel(
                        "Ingest requests by verdict",
                        [("{{verdict}}", rate_sum(f"{om}requests_total", "verdict"))],
                        unit="reqps",
                    ),
                    Panel(
                        "OpenMeter answer latency",
                        _quantiles(f"{om}request_duration_seconds", env),
                        unit="s",
                    ),
                    Panel(
                        "Breaker transitions",
                        [("{{state}}", rate_sum(f"{om}breaker_transitions_total", "state"))],
                    ),
                    Panel(
                        "Fetch and ack errors",
                        [
                            ("fetch", rate_sum(f"{om}fetch_errors_total")),
                            ("ack", rate_sum(f"{om}ack_errors_total")),
                        ],
                        description="NATS unavailable: pulls are retried, unacked events "
                        "are redelivered and sent again with the same id.",
                    ),
                ],
            ),
            Row(
                "Tier projector",
                [
                    Panel(
                        "Projectors up",
                        [("up", f'sum(up{{job="{PROJECTOR_JOB}",{env[1:]})')],
                        kind="stat",
                        width=6,
                    ),
                    Panel(
                        "Tier projector lag",
                        [("not yet delivered", f"max(stripe_bridge_tiers_consumer_lag{env})")],
                        width=6,
                    ),
                    Panel(
                        "Projected events by outcome",
                        [
                            (
                                "{{outcome}}",
                                rate_sum("stripe_bridge_tiers_events_total", "outcome"),
                            )
                        ],
                        unit="ops",
                    ),
                    Panel(
                        "Compare-and-set conflicts",
                        [("retried", rate_sum("stripe_bridge_tiers_cas_conflicts_total"))],
                        unit="ops",
                        description="Writes that lost to another writer of the same customer.",
                    ),
                ],
            ),
            usage_row(),
            backup_row(),
        ],
    )


def dashboard_files(root: Path) -> dict[Path, str]:
    """Every file under ``dashboards/`` that ``generate`` writes."""
    folder = root / "dashboards"
    return {
        folder / "stripe-bridge.json": dashboard_json(bridge_dashboard()),
        folder / "nats-cluster.json": dashboard_json(nats_dashboard()),
        folder / "billing.json": dashboard_json(billing_dashboard()),
        folder / "alerts.yml": alerts_yaml(),
        folder / "alerts_test.yml": alerts_test_yaml(),
    }
