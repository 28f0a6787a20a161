"""What the bridge creates before an in-process entitlements client can serve a customer."""

from __future__ import annotations

from typing import Any

from stripe_bridge.billing.projector import tiers_bucket
from stripe_bridge.billing.usage import provision_usage_streams
from stripe_bridge.billing.usage_counter import usage_buckets
from stripe_bridge_entitlements.reservations import publish_tier_file, reservations_bucket
from stripe_bridge_entitlements.windows import Window


async def provision_for_clients(js: Any, tier_file: bytes) -> dict[Window, Any]:
    """USAGE, the count, tiers and reservations buckets, and ``tier_file`` where the
    entitlements function publishes it; the count buckets by window."""
    await provision_usage_streams(js)
    counts = await usage_buckets(js)
    await tiers_bucket(js)
    await reservations_bucket(js)
    await publish_tier_file(js, tier_file)
    return counts
