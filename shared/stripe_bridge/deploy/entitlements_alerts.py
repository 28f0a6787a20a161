"""Alerts on entitlement answers given without knowing: the HTTP function's degraded checks
(pushed) and the in-process client's degraded answers and staleness (scraped from the
application embedding it, under whatever job the application has).

A degraded answer follows the tier file's ``when_unavailable``: ``allow`` over-grants,
``deny`` refuses paying customers. Either way NATS could not be asked.
"""

from __future__ import annotations

from stripe_bridge_entitlements.prometheus import ANSWERS, STALENESS

from .alert_model import _PROD, PROD, Alert, Scenario

#: The HTTP function's counter (billing.entitlements.EntitlementsRuntime), as sampled.
FUNCTION_CHECKS = "stripe_bridge_entitlement_checks_total"
#: Watches of the customers it answers that could not start or ended (billing.watched).
WATCH_FAILURES = "stripe_bridge_entitlement_watch_failures_total"
#: Seconds of client staleness worth a look: past the default ``unavailable_after`` (10 s)
#: answers follow ``when_unavailable``; a reconnect and re-watch take a few seconds.
STALE_SECONDS = 30
_DEGRADED = 'decision=~"degraded_.*"'


def entitlements_alerts() -> list[Alert]:
    """Degraded function checks, its watches failing, degraded client answers, a stale
    client."""
    function = f'{{job="billing_entitlements",{_PROD},meter="tokens",decision="degraded_allowed"}}'
    app = '{job="agent-town",instance="app-0:9000",decision="degraded_denied",kind='
    checks, reserves = f'{ANSWERS}_total{app}"check"}}', f'{ANSWERS}_total{app}"reserve"}}'
    app_only = {"job": "agent-town"}
    stale = '{job="agent-town",instance="app-0:9000"}'
    return [
        Alert(
            name="EntitlementChecksDegraded",
            expr=f"sum by (environment) (rate({FUNCTION_CHECKS}{{{_DEGRADED}}}[5m])) > 0",
            duration="5m",
            severity="warning",
            summary="The entitlements function answers checks without NATS (degraded)",
            description=(
                "POST /v1/check answers by the tier file's when_unavailable in "
                "{{ $labels.environment }}: allow over-grants, deny refuses paying customers."
            ),
            anchor="entitlement-checks-degraded",
            firing=Scenario({f"{FUNCTION_CHECKS}{function}": "0+10x20"}, "15m", (PROD,)),
            # One blip (a leader election retried through would not even count) stays quiet.
            quiet=Scenario({f"{FUNCTION_CHECKS}{function}": "0x5 3x15"}, "15m"),
        ),
        Alert(
            name="EntitlementWatchesFailing",
            expr=f"sum by (environment) (rate({WATCH_FAILURES}[10m])) > 0",
            duration="15m",
            severity="warning",
            summary="The entitlements function cannot keep customers in memory",
            description=(
                "Watches of the customers the entitlements function answers fail to start "
                "or end in {{ $labels.environment }}: its checks read KV instead (correct, "
                "slower, more NATS load)."
            ),
            anchor="entitlement-watches-failing",
            firing=Scenario(
                {f'{WATCH_FAILURES}{{job="billing_entitlements",{_PROD}}}': "0+1x30"},
                "25m",
                (PROD,),
            ),
            # One watch ending (a consumer deleted by hand) is watched again: quiet.
            quiet=Scenario(
                {f'{WATCH_FAILURES}{{job="billing_entitlements",{_PROD}}}': "0x5 1x25"}, "25m"
            ),
        ),
        Alert(
            name="EntitlementsClientDegraded",
            expr=f"sum by (job) (rate({ANSWERS}_total{{{_DEGRADED}}}[5m])) > 0",
            duration="5m",
            severity="warning",
            summary="An application's entitlements client answers without NATS (degraded)",
            description=(
                "The in-process client in {{ $labels.job }} answers checks or reservations "
                "by the tier file's when_unavailable: it has not reached NATS for longer "
                "than unavailable_after."
            ),
            anchor="entitlements-client-degraded",
            # Reservations alone degraded, checks not: still fires.
            firing=Scenario(
                {checks: "0x20", reserves: "0+50x20"},
                "15m",
                (app_only,),
            ),
            quiet=Scenario(
                {checks: "0x20", reserves: "0x20"},
                "15m",
            ),
        ),
        Alert(
            name="EntitlementsClientStale",
            expr=f"max by (job, instance) ({STALENESS}) > {STALE_SECONDS}",
            duration="2m",
            severity="warning",
            summary="An entitlements client's memory is not kept current",
            description=(
                "{{ $labels.job }} {{ $labels.instance }} has not followed KV for over "
                f"{STALE_SECONDS} s: checks answer from old memory, then by when_unavailable."
            ),
            anchor="entitlements-client-stale",
            firing=Scenario(
                {f"{STALENESS}{stale}": "0 0 60+60x10"},
                "10m",
                ({"job": "agent-town", "instance": "app-0:9000"},),
            ),
            # A reconnect: stale for a few seconds, then current again.
            quiet=Scenario({f"{STALENESS}{stale}": "0 0 5 0x10"}, "10m"),
        ),
    ]
