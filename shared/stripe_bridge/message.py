"""Turn a verified Stripe event into the CloudEvent published on JetStream."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent

from . import registry
from .envelope import StripeEvent

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/cloudevents+json"
#: Header JetStream deduplicates on within the stream's duplicate window.
MSG_ID_HEADER = "Nats-Msg-Id"


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


def _translate(event: StripeEvent) -> tuple[dict[str, Any] | None, str | None, str | None]:
    spec = registry.lookup(event.type)
    if spec is None:
        return None, None, None
    schema = spec.model.dataschema()
    try:
        return spec.translate(event).model_dump(mode="json"), schema, None
    except Exception as exc:  # a translation bug must never lose the event
        reason = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
        log.warning(
            "translation failed; publishing untranslated event_id=%s type=%s error=%s",
            event.id,
            event.type,
            type(exc).__name__,
        )
        return None, schema, reason


def build_message(event: StripeEvent, raw: dict[str, Any], prefix: str) -> OutgoingMessage:
    """The CloudEvents 1.0 structured message for ``event``; ``raw`` is kept whole in data."""
    translation, schema, error = _translate(event)
    attributes: dict[str, Any] = {
        "id": event.id,
        "type": f"com.stripe.{event.type}",
        "source": source_for(event),
        "time": datetime.fromtimestamp(event.created, tz=UTC).isoformat(),
        "datacontenttype": "application/json",
        "stripelivemode": event.livemode,
    }
    if event.primary_object_id:
        attributes["subject"] = event.primary_object_id
    if event.api_version:
        attributes["stripeapiversion"] = event.api_version
    if schema:
        attributes["dataschema"] = schema
    if error:
        attributes["translationerror"] = error
    data = {"translation": translation, "stripe": raw}
    _, body = to_structured(CloudEvent(attributes, data))
    out_headers = {"Content-Type": CONTENT_TYPE, MSG_ID_HEADER: event.id}
    return OutgoingMessage(subject_for(prefix, event), out_headers, body, error)


def parse_message(body: bytes) -> dict[str, Any]:
    """Decode a published message body (structured CloudEvent JSON) into a dict."""
    decoded: dict[str, Any] = json.loads(body)
    return decoded
