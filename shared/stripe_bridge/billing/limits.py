"""Metering windows and the limits a tier sets on them (read from the tier file).

The windows themselves (``Window``, ``window_start``, ``reset_at``) are defined once in the
entitlements core, which the in-process client shares (``stripe_bridge_entitlements``).
"""

from __future__ import annotations

from enum import StrEnum

from stripe_bridge_entitlements.windows import Window, reset_at, window_start

#: A meter's name: OpenMeter's meter slug (MeterCreate.slug, openmeterio/openmeter
#: ``api/openapi.cloud.yaml``). It is also the usage event's type and a NATS subject token,
#: which this pattern keeps free of dots and wildcards.
METER_PATTERN = r"^[a-z0-9]+(?:_[a-z0-9]+)*$"


__all__ = [
    "DEFAULT_METERS",
    "METER_PATTERN",
    "UnknownCustomer",
    "WhenUnavailable",
    "Window",
    "reset_at",
    "window_start",
]


class WhenUnavailable(StrEnum):
    """What ``/v1/check`` answers when NATS cannot be reached (per tier)."""

    ALLOW = "allow"
    DENY = "deny"


class UnknownCustomer(StrEnum):
    """What a customer the tier projector never saw is treated as."""

    DEFAULT_TIER = "default_tier"
    DENY = "deny"


#: The meters of the shipped tier file and their windows (docs/billing.md).
DEFAULT_METERS: dict[str, Window] = {
    "api_calls": Window.DAY,
    "tokens": Window.MONTH,
    "requests": Window.MINUTE,
    "members": Window.TOTAL,
    "citizens": Window.TOTAL,
    # Agent Town: counted (per agent_id/session_id in OpenMeter), no limit by default.
    "citizen_interactions": Window.MONTH,
    "sessions": Window.MONTH,
}
