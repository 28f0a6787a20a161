"""OpenMeter meter definitions for every event type this project sends to OpenMeter.

One source each: the usage meters are ``limits.DEFAULT_METERS`` (the shipped tier file's
meters, each a ``usage.<meter>`` event with ``data.value``), the lifecycle events are
``lifecycle.Lifecycle``. ``stripe-bridge generate`` writes them to ``openmeter/meters.json``
as OpenMeter ``MeterCreate`` objects (openmeterio/openmeter ``api/openapi.cloud.yaml``):
POST each to ``/api/v1/meters``, or list them under ``meters:`` of a self-hosted
OpenMeter's ``config.yaml``. Without a meter an event type is stored but counted nowhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .lifecycle import Lifecycle
from .limits import DEFAULT_METERS

METERS_FILE = Path("openmeter") / "meters.json"

#: What usage events are grouped by in OpenMeter (``UsageRecord.cloudevent`` writes them).
USAGE_GROUP_BY = {"session_id": "$.session_id", "agent_id": "$.agent_id"}
#: What lifecycle events are grouped by (``lifecycle._subscription_data``/``_invoice_data``).
LIFECYCLE_GROUP_BY: dict[Lifecycle, dict[str, str]] = {
    Lifecycle.STARTED: {"plan": "$.plan", "status": "$.status"},
    Lifecycle.UPDATED: {"plan": "$.plan", "status": "$.status"},
    Lifecycle.ENDED: {"plan": "$.plan", "status": "$.status"},
    Lifecycle.PAYMENT_SUCCESS: {"currency": "$.currency", "billing_reason": "$.billing_reason"},
    Lifecycle.PAYMENT_FAILED: {"currency": "$.currency", "billing_reason": "$.billing_reason"},
}


def lifecycle_slug(kind: Lifecycle) -> str:
    """A lifecycle type's meter slug: ``subscription.started`` -> ``subscription_started``."""
    return kind.value.replace(".", "_")


def meter_definitions() -> list[dict[str, Any]]:
    """A ``MeterCreate`` per usage meter (SUM of ``data.value``) and lifecycle type (COUNT)."""
    usage = [
        {
            "slug": meter,
            "name": meter.replace("_", " ").capitalize(),
            "description": f"stripe-bridge usage: sum of the {meter} records' values "
            f"(tier limit window: {window.value}).",
            "aggregation": "SUM",
            "eventType": meter,
            "valueProperty": "$.value",
            "groupBy": dict(USAGE_GROUP_BY),
        }
        for meter, window in DEFAULT_METERS.items()
    ]
    lifecycle = [
        {
            "slug": lifecycle_slug(kind),
            "name": kind.value.replace(".", " ").capitalize(),
            "description": f"stripe-bridge lifecycle: count of {kind.value} events.",
            "aggregation": "COUNT",
            "eventType": kind.value,
            "groupBy": dict(LIFECYCLE_GROUP_BY[kind]),
        }
        for kind in Lifecycle
    ]
    return usage + lifecycle


def meter_files(root: Path) -> dict[Path, str]:
    """``openmeter/meters.json`` under the repository ``root``."""
    return {root / METERS_FILE: json.dumps(meter_definitions(), indent=2) + "\n"}
