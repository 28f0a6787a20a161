"""Where things live in NATS: the buckets and keys the bridge's billing consumers write.

The usage counter (``stripe_bridge.billing.usage_counter``) keeps one count per customer,
meter and window in ``BILLING_USAGE_<WINDOW>`` under ``<customer>.<meter>[.<start>]``; the
tier projector keeps each customer's state in ``BILLING_TIERS`` under the customer id. The
counter imports these; tests/entitlements/test_client.py holds the tier bucket to the
projector's.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime

from .windows import Window, window_start

TIERS_BUCKET = "BILLING_TIERS"
USAGE_SUBJECT_PREFIX = "usage"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def usage_bucket(window: Window) -> str:
    """The KV bucket of one window's counts."""
    return f"BILLING_USAGE_{window.value.upper()}"


def customer_token(customer_id: str) -> str:
    """A KV key token for a customer id: itself if plain (``cus_...``), else ``=`` + base64."""
    if _SAFE.match(customer_id):
        return customer_id
    return "=" + base64.urlsafe_b64encode(customer_id.encode()).decode().rstrip("=")


def count_key(customer_id: str, meter: str, window: Window, when: datetime) -> str:
    """``<customer>.<meter>.<window start>`` (``total`` windows have no start)."""
    return count_key_at(customer_id, meter, window, window_start(window, when))


def count_key_at(customer_id: str, meter: str, window: Window, start: int) -> str:
    """``count_key`` of the window starting at ``start``."""
    key = f"{customer_token(customer_id)}.{meter}"
    return key if window is Window.TOTAL else f"{key}.{start}"
