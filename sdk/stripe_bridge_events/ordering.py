"""Stripe does not deliver events in order: skip one older than what was already applied.

The position of an event is ``(created, *version fields)``: ``created`` first (one-second
resolution), then fields of the Stripe object that only grow (``Translation.version_fields``:
an invoice's ``attempt_count`` and ``amount_paid``, a subscription's period start) to order
events of the same second. Events are compared per object (the CloudEvent ``subject``) and
per schema, so a ``customer.updated`` never hides an entitlement summary of that customer.
"""

from __future__ import annotations

from dataclasses import dataclass

from .events import TypedEvent, UntranslatedEvent

Event = TypedEvent | UntranslatedEvent
Position = tuple[int, ...]


def position(event: Event) -> Position:
    """Where ``event`` stands among the events of its object (greater is newer)."""
    fields = event.translation.version_fields() if isinstance(event, TypedEvent) else ()
    return (event.created, *fields)


def object_key(event: Event) -> str:
    """What events are ordered by: the translation's schema (or type) and the object's id.

    The translation's schema, not ``dataschema``: keys stay the same across message formats.
    """
    return f"{event.translation_schema or event.stripe_type}|{event.subject or event.id}"


@dataclass(frozen=True)
class Applied:
    """The last event applied to one object: keep this in your own store next to the state."""

    event_id: str
    position: Position


def is_stale(event: Event, last: Applied | None) -> bool:
    """True when ``event`` is ``last`` again, or older than it: do not apply it."""
    if last is None:
        return False
    return event.id == last.event_id or position(event) < last.position


class LatestApplied:
    """In-memory guard for one process::

        if not guard.stale(event):
            apply(event)          # if this raises, nothing is recorded: a retry applies it
            guard.record(event)

    A service that keeps state in a database stores ``Applied`` in the same transaction as
    the state and calls ``is_stale`` itself; this class is that, kept in a dict.
    """

    def __init__(self) -> None:
        self._last: dict[str, Applied] = {}

    def stale(self, event: Event) -> bool:
        """Whether ``event`` is already applied, or older than what is (skip it then)."""
        return is_stale(event, self._last.get(object_key(event)))

    def record(self, event: Event) -> None:
        """``event`` was applied: it is now its object's last applied event."""
        self._last[object_key(event)] = Applied(event.id, position(event))
