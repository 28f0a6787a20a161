"""Rows appended to the billing dashboard: limits (one panel per meter) and NATS backups."""

from __future__ import annotations

from stripe_bridge_entitlements.prometheus import ANSWERS, STALENESS

from ..billing.tiers import DEFAULT_TIERS
from .backup_alerts import LAST_SUCCESS, SIZE, SUCCESS, USED
from .entitlements_alerts import FUNCTION_CHECKS, WATCH_FAILURES
from .grafana import Panel, Row, rate

#: The billing dashboard's environment filter (its ``environment`` variable).
_ENV = '{environment=~"$environment"}'


def _meter(metric: str, meter: str) -> str:
    """``metric`` for one meter, in the selected environments."""
    return metric + '{meter="' + meter + '",' + _ENV[1:]


def usage_row() -> Row:
    """Usage counted per meter (one panel each, the shipped tier file's meters) and checks."""
    quantity = "stripe_bridge_usage_counted_quantity_total"
    panels = [
        Panel(
            f"Usage: {meter} (per {window.value} limits)",
            [("counted/s", f"sum ({rate(_meter(quantity, meter))})")],
            description=f"What count-usage added to customers' {meter} counts "
            f"(window: {window.value}); Agent Town records carry agent_id and session_id.",
            width=6,
        )
        for meter, window in DEFAULT_TIERS.meters.items()
    ]
    panels.append(
        Panel(
            "Limit checks by decision",
            [
                (
                    "{{decision}}",
                    f"sum by (decision) ({rate(FUNCTION_CHECKS + _ENV)})",
                )
            ],
            unit="reqps",
            description="POST /v1/check answers; degraded_* while NATS is unreachable.",
        )
    )
    degraded = '{decision=~"degraded_.*"}'
    panels.append(
        Panel(
            "Entitlement answers without NATS (degraded)",
            [
                # 0 rather than no data while nothing is degraded (the usual case).
                (
                    "function {{decision}}",
                    f"sum by (decision) ({rate(FUNCTION_CHECKS + degraded[:-1] + ',' + _ENV[1:])})"
                    " or on () vector(0)",
                ),
                # The applications' own scrape jobs carry no environment label.
                (
                    "client {{job}}",
                    f"sum by (job) ({rate(ANSWERS + '_total' + degraded)}) or on () vector(0)",
                ),
            ],
            unit="reqps",
            description="Answers by when_unavailable: the function's checks and the in-process "
            "clients' (scraped from the applications; alerts: EntitlementChecksDegraded, "
            "EntitlementsClientDegraded).",
        )
    )
    answers = "stripe_bridge_entitlement_answers_total"
    panels.append(
        Panel(
            "Entitlement function: answers from memory",
            [
                ("{{source}}", f"sum by (source) ({rate(answers + _ENV)})"),
                ("watch failures", f"sum ({rate(WATCH_FAILURES + _ENV)}) or on () vector(0)"),
            ],
            unit="reqps",
            description="Non-reserving checks and views answered from memory (watched "
            "customers) or KV (a customer's first answer, memory not current). Mostly kv "
            "with watch failures: alert EntitlementWatchesFailing.",
        )
    )
    panels.append(
        Panel(
            "Entitlements client staleness",
            [("{{job}} {{instance}}", f"max by (job, instance) ({STALENESS})")],
            unit="s",
            description="Seconds since a client's memory stopped following KV; answers follow "
            "when_unavailable past unavailable_after (10 s). Alert: EntitlementsClientStale.",
        )
    )
    panels.append(
        Panel(
            "Usage counter and lifecycle lag",
            [
                ("count-usage", f"max(stripe_bridge_usage_counter_lag{_ENV})"),
                ("project-lifecycle", f"max(stripe_bridge_lifecycle_consumer_lag{_ENV})"),
            ],
        )
    )
    return Row("Limits and lifecycle", panels)


def backup_row() -> Row:
    """Backup age, success, size, duration and the volume's fill."""
    return Row(
        "NATS backups",
        [
            Panel(
                "Backup age",
                [("{{environment}}", f"time() - max by (environment) ({LAST_SUCCESS}{_ENV})")],
                unit="s",
                kind="stat",
                width=6,
                description="Since the last successful backup; alerts at 25 h and 48 h.",
            ),
            Panel(
                "Backup success rate (7 days)",
                [("{{environment}}", f"avg by (environment) (avg_over_time({SUCCESS}{_ENV}[7d]))")],
                unit="percentunit",
                kind="stat",
                width=6,
                description="Share of the time the last run had succeeded.",
            ),
            Panel(
                "Backup size",
                [("bytes", f"max by (environment) (stripe_bridge_backup_bytes{_ENV})")],
                unit="bytes",
                width=6,
            ),
            Panel(
                "Backup duration",
                [
                    (
                        "seconds",
                        f"max by (environment) (stripe_bridge_backup_duration_seconds{_ENV})",
                    )
                ],
                unit="s",
                width=6,
            ),
            Panel(
                "Backup volume used",
                [("{{environment}}", f"max by (environment) ({USED}{_ENV} / {SIZE}{_ENV})")],
                unit="percentunit",
                description="Alerts at 80% and 95%.",
            ),
        ],
    )
