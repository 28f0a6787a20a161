"""Usage records (e.g. tokens an agent used in a session) as CloudEvents on the USAGE stream.

A record is validated once, here, and published to ``usage.<meter>`` with its id as
``Nats-Msg-Id``: a producer that retries after a lost PubAck cannot count usage twice
within the stream's duplicate window, and OpenMeter (with dedupe enabled, docs/billing.md)
deduplicates the same id + source again downstream.

Validation is OpenMeter's Event schema (openmeterio/openmeter ``api/openapi.cloud.yaml``
at 7e57a394, ``Event``: ``source`` is a URI-reference) and MeterCreate's slug rule, so that
nothing stored in USAGE is refused or misread by OpenMeter later, where only a dead letter
could take it.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from stripe_bridge_events.deadletter import REASON_HEADER

from ..jetstream import JetStreamPublisher, Stored
from ..message import CONTENT_TYPE, MSG_ID_HEADER
from ..streams import (
    USAGE_DLQ,
    USAGE_DLQ_SUBJECT_PREFIX,
    USAGE_STREAM,
    USAGE_SUBJECT_PREFIX,
    StreamSpec,
    provision,
)
from .limits import METER_PATTERN
from .uri import is_uri_reference

#: Header on dead-lettered messages: OpenMeter's problem detail for the refusal (the header
#: every dead letter carries, stripe_bridge_events.deadletter).
DEAD_LETTER_REASON_HEADER = REASON_HEADER
#: CloudEvents ``source`` of usage recorded through this library (OpenMeter dedups id+source).
DEFAULT_SOURCE = "stripe-bridge"

#: Keys of the event's ``data`` this module writes; a property of the same name would
#: overwrite the measured value or a dimension OpenMeter meters group by.
RESERVED_PROPERTIES = frozenset({"value", "session_id", "agent_id"})
#: Largest value: every integer up to it is exact in a float64, OpenMeter's and JSON's number.
MAX_VALUE = float(2**53 - 1)
#: Usage from before this is a mistake (a zero or unset clock), not a backfill.
EARLIEST_TIME = datetime(2000, 1, 1, tzinfo=UTC)
#: How far ahead of our clock a producer's clock may be.
MAX_CLOCK_SKEW = timedelta(hours=1)
#: Text without control characters (NUL, newline, tab...): they forge log lines and keys.
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"

#: A customer id, session, agent or property value: 1..255 printable characters.
Text = Annotated[str, Field(min_length=1, max_length=255, pattern=_PRINTABLE)]


def _new_id() -> str:
    return str(uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


def _uri_reference(value: str) -> str:
    if not is_uri_reference(value):
        raise ValueError("must be a URI-reference (RFC 3986), e.g. `agent-town`")
    return value


class UsageRecord(BaseModel):
    """One measurement of usage by one customer; the boundary model of ``record_usage``.

    ``meter`` becomes the CloudEvent ``type`` and the subject token (OpenMeter matches
    meters on the event type); ``customer_id`` becomes the CloudEvent ``subject``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    meter: str = Field(
        pattern=METER_PATTERN,
        max_length=64,
        description="Meter (an OpenMeter slug), e.g. `tokens`.",
    )
    customer_id: Text = Field(description="Who is billed.")
    value: float = Field(
        ge=0,
        le=MAX_VALUE,
        strict=True,
        allow_inf_nan=False,
        description='Amount used: a JSON number, 0 to 2**53-1 (`"5"` or `true` are refused).',
    )
    id: str = Field(
        default_factory=_new_id,
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Idempotency key: retries must reuse it.",
    )
    time: AwareDatetime = Field(
        default_factory=_now, description="When the usage happened (2000 to now + 1 hour)."
    )
    source: Annotated[str, AfterValidator(_uri_reference)] = Field(
        default=DEFAULT_SOURCE,
        min_length=1,
        max_length=255,
        description="CloudEvents source, a URI-reference (RFC 3986), e.g. `agent-town`.",
    )
    session_id: Text | None = None
    agent_id: Text | None = Field(
        default=None, description="Agent Town: the agent (citizen) that used it."
    )
    properties: dict[Text, Text] = Field(
        default_factory=dict,
        max_length=32,
        description="Group-by dimensions, e.g. model; `value`, `session_id`, `agent_id` are taken.",
    )

    @field_validator("time")
    @classmethod
    def _plausible_time(cls, when: datetime) -> datetime:
        if when < EARLIEST_TIME:
            raise ValueError(f"must not be before {EARLIEST_TIME.date().isoformat()}")
        if when > _now() + MAX_CLOCK_SKEW:
            raise ValueError("must not be more than an hour in the future")
        return when

    @field_validator("properties")
    @classmethod
    def _no_reserved_keys(cls, properties: dict[str, str]) -> dict[str, str]:
        taken = sorted(RESERVED_PROPERTIES & properties.keys())
        if taken:
            raise ValueError(f"reserved names {taken}: pass them as fields of the record")
        return properties

    def cloudevent(self) -> dict[str, Any]:
        """The CloudEvent (JSON form) OpenMeter ingests for this record."""
        data: dict[str, Any] = {"value": self.value, **self.properties}
        if self.session_id is not None:
            data["session_id"] = self.session_id
        if self.agent_id is not None:
            data["agent_id"] = self.agent_id
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
    # Here: the usage function's cold start (/readyz) does not need the CloudEvents SDK.
    from cloudevents.conversion import to_structured
    from cloudevents.http import CloudEvent

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


def usage_stream_spec(replicas: int = 1, max_bytes: int = -1) -> UsageStreamSpec:
    """The USAGE stream: ``usage.>``, deduplicated on ``Nats-Msg-Id`` for two hours.

    With ``max_bytes`` a full USAGE refuses new records (discard new) instead of taking
    the room STRIPE needs in the shared store (docs/deploy.md, Sizing).
    """
    return UsageStreamSpec(
        USAGE_STREAM, USAGE_SUBJECT_PREFIX, replicas=replicas, max_bytes=max_bytes
    )


def dead_letter_stream_spec(replicas: int = 1) -> UsageStreamSpec:
    """The dead-letter stream: ``usage_dlq.>``, kept a year for investigation."""
    return UsageStreamSpec(
        USAGE_DLQ,
        USAGE_DLQ_SUBJECT_PREFIX,
        replicas=replicas,
        max_age_seconds=365 * 86400,
        description="Usage events OpenMeter refused as invalid (stripe-bridge)",
    )


async def provision_usage_streams(
    js: Any, replicas: int = 1, max_bytes: int = -1
) -> dict[str, str]:
    """Create or update the USAGE and dead-letter streams; what happened to each."""
    return {
        spec.name: await provision(js, spec)
        for spec in (usage_stream_spec(replicas, max_bytes), dead_letter_stream_spec(replicas))
    }
