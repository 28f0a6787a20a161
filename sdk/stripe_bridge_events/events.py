"""The CloudEvents on the STRIPE stream, and ``parse`` that turns a message into one.

Every message is a structured CloudEvent 1.0 (``application/cloudevents+json``) whose
``data`` holds ``translation`` (the typed model, or null) and ``stripe`` (the Stripe event
exactly as Stripe sent it). See docs/consumers.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny

from .models import MODELS, Translation

#: Prefix of the CloudEvents ``type``: ``com.stripe.invoice.paid``.
TYPE_PREFIX = "com.stripe."


class StripeCloudEvent(BaseModel):
    """The CloudEvents attributes the bridge sets; attributes added later are kept."""

    model_config = ConfigDict(frozen=True, extra="allow")

    specversion: Literal["1.0"]
    id: str = Field(description="The Stripe event id (`evt_...`), also the `Nats-Msg-Id`.")
    type: str = Field(description="`com.stripe.` + the Stripe event type.")
    source: str = Field(description="`urn:stripe:<live|test>` (`:<account>` for Connect).")
    time: datetime = Field(description="The Stripe event's `created`.")
    datacontenttype: Literal["application/json"]
    stripelivemode: bool
    subject: str | None = Field(
        default=None, description="Id of the object the event is about (customer for summaries)."
    )
    stripeapiversion: str | None = None
    dataschema: str | None = Field(
        default=None, description="`urn:stripe-bridge:schema:<name>.v<N>` for translated types."
    )
    translationerror: str | None = Field(
        default=None, description="Why a registered type could not be translated."
    )
    stripe: dict[str, Any] = Field(description="`data.stripe`: the Stripe event, whole.")

    @property
    def stripe_type(self) -> str:
        """The Stripe event type, e.g. ``invoice.paid``."""
        return self.type.removeprefix(TYPE_PREFIX)

    @property
    def created(self) -> int:
        """The Stripe event's ``created`` (seconds since the epoch)."""
        created = self.stripe.get("created")
        return created if isinstance(created, int) else int(self.time.timestamp())


class TypedEvent(StripeCloudEvent):
    """An event with its typed translation (``isinstance`` or ``match`` on ``translation``)."""

    # SerializeAsAny: model_dump writes the concrete model's fields, not the base's none.
    translation: SerializeAsAny[Translation]


class Untranslated(StrEnum):
    """Why an event carries no typed translation."""

    #: The bridge translates no event of this type: read ``stripe`` yourself.
    NOT_TRANSLATED = "not_translated"
    #: The bridge failed to translate it (``translationerror`` says why); ``stripe`` is whole.
    TRANSLATION_FAILED = "translation_failed"
    #: A ``dataschema`` this SDK version does not know (upgrade the SDK); the translation
    #: is in ``translation_data`` as plain JSON.
    UNKNOWN_SCHEMA = "unknown_schema"


class UntranslatedEvent(StripeCloudEvent):
    """An event without a typed translation; ``reason`` says why."""

    reason: Untranslated
    translation_data: dict[str, Any] | None = None


class _HasData(Protocol):
    data: bytes


def _decode(message: bytes | str | Mapping[str, Any] | _HasData) -> dict[str, Any]:
    if isinstance(message, Mapping):
        return dict(message)
    body = message if isinstance(message, bytes | str) else message.data
    decoded = json.loads(body)
    if not isinstance(decoded, dict):
        raise ValueError("a stripe-bridge message is a JSON object (a structured CloudEvent)")
    return decoded


def parse(message: bytes | str | Mapping[str, Any] | _HasData) -> TypedEvent | UntranslatedEvent:
    """The event in ``message``: a NATS message, its body, or the decoded JSON object.

    Raises ``ValueError`` (pydantic's ``ValidationError`` is one) when the body is not a
    CloudEvent the bridge publishes.
    """
    cloudevent = _decode(message)
    data = cloudevent.pop("data", None)
    if not isinstance(data, dict) or not isinstance(data.get("stripe"), dict):
        raise ValueError("data.stripe is missing: not a stripe-bridge CloudEvent")
    attributes = {**cloudevent, "stripe": data["stripe"]}
    translation = data.get("translation")
    model = MODELS.get(str(cloudevent.get("dataschema")))
    if isinstance(translation, dict) and model is not None:
        return TypedEvent.model_validate(
            {**attributes, "translation": model.model_validate(translation)}
        )
    if isinstance(translation, dict):
        reason = Untranslated.UNKNOWN_SCHEMA
    elif cloudevent.get("translationerror"):
        reason = Untranslated.TRANSLATION_FAILED
    else:
        reason = Untranslated.NOT_TRANSLATED
    return UntranslatedEvent.model_validate(
        {**attributes, "reason": reason, "translation_data": translation}
    )
