"""Turn a verified Stripe event into the CloudEvent published on JetStream.

The structured CloudEvents JSON is written directly, not through the CloudEvents SDK: on
the webhook path the signed body goes into ``data.stripe`` byte for byte instead of being
parsed into a dict and serialised again (the SDK's own work cost more than the JSON). A test
parses what is published with the SDK (tests/test_message.py). The format is the consumer
SDK's ``stripe_bridge_events.events.CloudEventMessage`` (format 2: ``dataschema`` names the
JSON Schema of ``data``); tests/test_message.py validates every published body against it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from stripe_bridge_events.events import TYPE_PREFIX, data_schema

from . import registry
from .envelope import StripeEvent

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/cloudevents+json"
#: Header JetStream deduplicates on within the stream's duplicate window.
MSG_ID_HEADER = "Nats-Msg-Id"
#: Compact UTF-8 JSON of the attributes and extensions (a tenth of ``json.dumps``'s time).
_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class OutgoingMessage:
    """What goes onto the wire: subject, headers and the structured CloudEvent body."""

    subject: str
    headers: dict[str, str]
    body: bytes
    translation_error: str | None


def subject_for(prefix: str, event: StripeEvent) -> str:
    """``<prefix>.<live|test>.<event type>``, e.g. ``stripe.live.invoice.paid``."""
    return f"{prefix}.{event.mode}.{event.type}"


def source_for(event: StripeEvent) -> str:
    """CloudEvents ``source``: Stripe, its mode, and the Connect account when there is one."""
    base = f"urn:stripe:{event.mode}"
    return f"{base}:{event.account}" if event.account else base


def _translate(event: StripeEvent) -> tuple[bytes, str, str | None]:
    """The translation as JSON (``null`` without one), the data's schema, the error if any."""
    spec = registry.lookup(event.type)
    if spec is None:
        return b"null", data_schema(None), None
    schema = data_schema(spec.model)
    try:
        return spec.translate(event).model_dump_json().encode(), schema, None
    except Exception as exc:  # a translation bug must never lose the event
        reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
        log.warning(
            "translation failed; publishing untranslated event_id=%s type=%s error=%s",
            event.id,
            event.type,
            type(exc).__name__,
        )
        return b"null", schema, reason


def build_message(event: StripeEvent, raw: dict[str, Any] | bytes, prefix: str) -> OutgoingMessage:
    """The CloudEvents 1.0 structured message for ``event``; ``raw`` is kept whole in data.

    ``raw`` is the event as a dict, or the webhook's body as it was signed, already checked
    to be strict JSON (``envelope.parse_body``), which is then published unchanged.
    """
    translation, schema, error = _translate(event)
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": event.id,
        "source": source_for(event),
        "type": TYPE_PREFIX + event.type,
        "datacontenttype": "application/json",
        "dataschema": schema,
    }
    if event.primary_object_id:
        attributes["subject"] = event.primary_object_id
    attributes["time"] = datetime.fromtimestamp(event.created, tz=UTC).isoformat()
    extensions: dict[str, Any] = {"stripelivemode": event.livemode}
    if event.api_version:
        extensions["stripeapiversion"] = event.api_version
    if error:
        extensions["translationerror"] = error
    stripe = raw if isinstance(raw, bytes) else json.dumps(raw).encode()
    # {<attributes>,"data":{"translation":...,"stripe":...},<extensions>}
    body = b"".join(
        (
            _encode(attributes)[:-1],
            b',"data":{"translation":',
            translation,
            b',"stripe":',
            stripe,
            b"},",
            _encode(extensions)[1:],
        )
    )
    out_headers = {"Content-Type": CONTENT_TYPE, MSG_ID_HEADER: event.id}
    return OutgoingMessage(subject_for(prefix, event), out_headers, body, error)


def parse_message(body: bytes) -> dict[str, Any]:
    """Decode a published message body (structured CloudEvent JSON) into a dict."""
    decoded: dict[str, Any] = json.loads(body)
    return decoded
