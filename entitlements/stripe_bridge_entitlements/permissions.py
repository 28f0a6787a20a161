"""The NATS permissions the in-process client needs: nothing more (docs/entitlements.md).

Read-mostly: it watches and reads the billing buckets, writes only the reservation bucket
(compare-and-set on ledgers, hold keys of callers' ids, take-back markers of made ids) and
publishes usage records for the meters it is given. It never writes counts, tiers or the
tier file.
"""

from __future__ import annotations

#: Buckets the client watches (ordered consumers) and binds.
WATCHED = [
    "BILLING_TIERS",
    "BILLING_USAGE_MINUTE",
    "BILLING_USAGE_DAY",
    "BILLING_USAGE_MONTH",
    "BILLING_USAGE_TOTAL",
    "BILLING_RESERVATIONS",
    "BILLING_LIMITS",
]
#: Buckets ``reserve``/``release``/``record_usage`` read entries of directly.
READ = ["BILLING_USAGE_MINUTE", "BILLING_USAGE_DAY", "BILLING_USAGE_MONTH", "BILLING_USAGE_TOTAL"]


def publish_allow(meters: list[str]) -> list[str]:
    """The subjects the client's user may publish to, recording usage of ``meters``."""
    allow = []
    for bucket in WATCHED:
        stream = f"KV_{bucket}"
        allow += [
            f"$JS.API.STREAM.INFO.{stream}",  # binding the bucket
            f"$JS.API.CONSUMER.CREATE.{stream}",  # a watch of one key
            f"$JS.API.CONSUMER.CREATE.{stream}.>",  # a watch of a filter
            f"$JS.API.CONSUMER.INFO.{stream}.*",  # the watch's pending count
            # Flow control of a watch that falls behind (a large initial replay); the
            # test's small watches never need it.
            f"$JS.FC.{stream}.>",
        ]
    for bucket in [*READ, "BILLING_RESERVATIONS"]:
        # Direct get where the bucket allows it (nats-py's buckets do), else message get.
        allow += [f"$JS.API.DIRECT.GET.KV_{bucket}.>", f"$JS.API.STREAM.MSG.GET.KV_{bucket}"]
    allow.append("$KV.BILLING_RESERVATIONS.>")
    return allow + [f"usage.{meter}" for meter in meters]


def subscribe_allow(inbox_prefix: str) -> list[str]:
    """The subjects the client's user may subscribe to: its own inbox only."""
    return [f"{inbox_prefix}.>"]
