"""The Stripe event envelope: the boundary model every webhook body must satisfy."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Stripe API versions from this date on moved subscription periods onto items and
#: invoice -> subscription links under ``parent`` (the "basil" release).
BASIL_API_VERSION = "2025-03-31"


class StripeEventData(BaseModel):
    """``event.data``: the object as it is now, and what changed for ``*.updated``."""

    model_config = ConfigDict(extra="allow")

    object: dict[str, Any]
    previous_attributes: dict[str, Any] | None = None


class StripeEvent(BaseModel):
    """A Stripe webhook event (``"object": "event"``); unknown fields are kept."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(pattern=r"^evt_[A-Za-z0-9_]+$", max_length=255)
    object: Literal["event"]
    type: str = Field(pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)+$", max_length=200)
    # Up to year 9999: a later ``created`` is no Stripe event and cannot become a timestamp.
    created: int = Field(ge=0, le=253402300799)
    livemode: bool
    api_version: str | None = None
    account: str | None = None
    data: StripeEventData

    @property
    def mode(self) -> Literal["live", "test"]:
        """``live`` or ``test``: the second token of the NATS subject."""
        return "live" if self.livemode else "test"

    @property
    def is_basil_or_newer(self) -> bool:
        """Whether the payload uses the 2025-03-31.basil (or newer) object shapes."""
        return (self.api_version or "") >= BASIL_API_VERSION

    @property
    def primary_object_id(self) -> str | None:
        """The id of the object the event is about (customer for entitlement summaries)."""
        obj = self.data.object
        object_id = obj.get("id")
        if isinstance(object_id, str):
            return object_id
        customer = obj.get("customer")
        return customer if isinstance(customer, str) else None
