"""Usage records (e.g. tokens an agent used in a session) as CloudEvents on the USAGE stream.

A record is validated once, here, and published to ``usage.<meter>`` with its id as
``Nats-Msg-Id``: a producer that retries after a lost PubAck cannot count usage twice
within the stream's duplicate window, and OpenMeter deduplicates the same id + source
again downstream.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from stripe_bridge_events.deadletter import REASON_HEADER

from ..jetstream import JetStreamPublisher, Stored
from ..message import CONTENT_TYPE, MSG_ID_HEADER
from ..stream import StreamSpec, provision

USAGE_STREAM = "USAGE"
USAGE_SUBJECT_PREFIX = "usage"
#: Where events OpenMeter refused as invalid are kept, with the reason, for a human.
DEAD_LETTER_STREAM = "USAGE_DLQ"
DEAD_LETTER_SUBJECT_PREFIX = "usage_dlq"
#: Header on dead-lettered messages: OpenMeter's problem detail for the refusal (the header
#: every dead letter carries, stripe_bridge_events.deadletter).
DEAD_LETTER_REASON_HEADER = REASON_HEADER
#: CloudEvents ``source`` of usage recorded through this library (OpenMeter dedups id+source).
DEFAULT_SOURCE = "stripe-bridge"

_NAME = r"^[A-Za-z0-9_-]+$"


def _new_id() -> str:
    return str(uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


class UsageRecord(BaseModel):
    """One measurement of usage by one customer; the boundary model of ``record_usage``.

    ``meter`` becomes the CloudEvent ``type`` and the subject token (OpenMeter matches
    meters on the event type); ``customer_id`` becomes the CloudEvent ``subject``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    meter: str = Field(pattern=_NAME, max_length=64, description="Meter, e.g. `tokens`.")
    customer_id: str = Field(min_length=1, max_length=255, description="Who is billed.")
    value: float = Field(ge=0, allow_inf_nan=False, description="Amount used (>= 0).")
    id: str = Field(
        default_factory=_new_id,
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Idempotency key: retries must reuse it.",
    )
    time: AwareDatetime = Field(default_factory=_now, description="When the usage happened.")
    source: str = Field(default=DEFAULT_SOURCE, min_length=1, max_length=255)
    session_id: str | None = Field(default=None, max_length=255)
    properties: dict[str, str] = Field(
        default_factory=dict, description="Group-by dimensions, e.g. model or agent."
    )

    def cloudevent(self) -> dict[str, Any]:
        """The CloudEvent (JSON form) OpenMeter ingests for this record."""
        data: dict[str, Any] = {"value": self.value, **self.properties}
        if self.session_id is not None:
            data["session_id"] = self.session_id
        return {
            "specversion": "1.0",
            "id": self.id,
            "source": self.source,
            "type": self.meter,
            "subject": self.customer_id,
            "time": self.time.isoformat(),
            "datacontenttype": "application/json",
            "data": data,
        }


def usage_subject(meter: str) -> str:
    """``usage.<meter>``."""
    return f"{USAGE_SUBJECT_PREFIX}.{meter}"


def encode(record: UsageRecord) -> tuple[str, bytes, dict[str, str]]:
    """Subject, structured CloudEvent body and headers for ``record``."""
    event = record.cloudevent()
    data = event.pop("data")
    _, body = to_structured(CloudEvent(event, data))
    headers = {"Content-Type": CONTENT_TYPE, MSG_ID_HEADER: record.id}
    return usage_subject(record.meter), body, headers


async def record_usage(publisher: JetStreamPublisher, record: UsageRecord) -> Stored:
    """Publish ``record`` to the USAGE stream and wait for the PubAck.

    ``publisher`` must be bound to the USAGE stream (see ``usage_settings``). Raises
    ``PublishError`` when the record was not durably stored; retrying with the same
    record (same id) is safe.
    """
    subject, body, headers = encode(record)
    return await publisher.publish(subject, body, headers)


@dataclasses.dataclass(frozen=True)
class UsageStreamSpec(StreamSpec):
    """A stream of the billing pipeline; same shape as the STRIPE stream, own description."""

    description: str = "Usage records as CloudEvents for OpenMeter (stripe-bridge)"

    def config(self) -> Any:
        """The nats-py ``StreamConfig``, with this stream's description."""
        return dataclasses.replace(super().config(), description=self.description)


def usage_stream_spec(replicas: int = 1) -> UsageStreamSpec:
    """The USAGE stream: ``usage.>``, deduplicated on ``Nats-Msg-Id`` for two hours."""
    return UsageStreamSpec(USAGE_STREAM, USAGE_SUBJECT_PREFIX, replicas=replicas)


def dead_letter_stream_spec(replicas: int = 1) -> UsageStreamSpec:
    """The dead-letter stream: ``usage_dlq.>``, kept a year for investigation."""
    return UsageStreamSpec(
        DEAD_LETTER_STREAM,
        DEAD_LETTER_SUBJECT_PREFIX,
        replicas=replicas,
        max_age_seconds=365 * 86400,
        description="Usage events OpenMeter refused as invalid (stripe-bridge)",
    )


async def provision_usage_streams(js: Any, replicas: int = 1) -> dict[str, str]:
    """Create or update the USAGE and dead-letter streams; what happened to each."""
    return {
        spec.name: await provision(js, spec)
        for spec in (usage_stream_spec(replicas), dead_letter_stream_spec(replicas))
    }
