"""usage.py alone: what a usage record accepts and the message it becomes (no NATS).

Recording into a real USAGE stream is in tests/billing/test_usage_function.py and
test_forwarder.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from stripe_bridge.billing.usage import MAX_VALUE, UsageRecord, encode, usage_subject
from stripe_bridge.message import MSG_ID_HEADER

WHEN = datetime(2026, 11, 30, 23, 59, tzinfo=UTC)


def record(**fields: Any) -> UsageRecord:
    return UsageRecord.model_validate(
        {"meter": "tokens", "customer_id": "cus_1", "value": 3, **fields}
    )


def test_the_message_is_openmeters_cloudevent_keyed_by_the_record_id() -> None:
    usage = record(id="r-1", time=WHEN, session_id="s1", properties={"model": "m1"})
    subject, body, headers = encode(usage)
    assert subject == usage_subject("tokens") == "usage.tokens"
    assert headers[MSG_ID_HEADER] == "r-1"  # JetStream's dedup key: retries reuse it
    event = json.loads(body)
    assert {k: event[k] for k in ("id", "source", "type", "subject", "time")} == {
        "id": "r-1",
        "source": "stripe-bridge",
        "type": "tokens",
        "subject": "cus_1",
        "time": WHEN.isoformat(),
    }
    assert event["data"] == {"value": 3, "model": "m1", "session_id": "s1"}


def test_an_id_and_a_time_are_given_when_missing() -> None:
    first, second = record(), record()
    assert first.id != second.id
    assert abs(first.time - datetime.now(UTC)) < timedelta(minutes=5)


@pytest.mark.parametrize(
    "fields",
    [
        {"value": "5"},  # a JSON number, not a string
        {"value": True},
        {"value": -1},
        {"value": MAX_VALUE + 2},
        {"value": float("inf")},
        {"meter": "a.b"},  # a subject token
        {"customer_id": "cus\n1"},  # would forge a log line
        {"properties": {"value": "9"}},  # would overwrite the measured value
        {"time": datetime(1970, 1, 1, tzinfo=UTC)},
        {"time": datetime.now(UTC) + timedelta(hours=2)},
        {"time": "2026-11-30T23:59:00"},  # no time zone
        {"source": "has space"},
        {"extra": 1},
    ],
)
def test_what_a_record_refuses(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        record(**fields)
