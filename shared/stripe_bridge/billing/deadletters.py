"""Dead letters of the billing consumers: one mechanism for every message one cannot use.

The SDK's convention (``stripe_bridge_events.deadletter``, docs/consumers.md): the message
is copied to ``STRIPE_DLQ`` under ``stripe_dlq.dead.<durable>.<original subject>`` with
the reason, awaited, and only then terminated where it came from; if the copy fails the
message is handed back (nak) and tried again, never dropped. ``stripe-bridge redrive``
moves a dead letter to ``stripe_dlq.redrive.<durable>.<original subject>``, which the
consumer reads through a second durable (``redriven``) and handles like any message.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError
from stripe_bridge_events.deadletter import (
    DEAD_LETTER_STREAM,
    REASON_HEADER,
    dead_letter,
    redrive_filter,
)

from ..stream import dead_letter_spec

log = logging.getLogger(__name__)

#: What a redriven message's durable is called, beside the consumer's own.
REDRIVE_DURABLE_SUFFIX = "-redrive"


def dead_letter_counter(registry: CollectorRegistry) -> Counter:
    """The counter every billing consumer reports its dead letters on (one alert reads it)."""
    return Counter(
        "stripe_bridge_consumer_dead_letters",
        "Messages a billing consumer could not use, moved to STRIPE_DLQ with the reason "
        "(stripe-bridge redrive brings them back), by consumer (durable) and event type.",
        ["consumer", "event_type"],
        registry=registry,
    )


def reason_of(exc: Exception) -> str:
    """The one-line reason of a dead letter: the error without the payload's values."""
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        return f"ValidationError: {problems}"
    return f"{type(exc).__name__}: {exc}"


async def open_dead_letters(js: Any, replicas: int = 1) -> None:
    """Create ``STRIPE_DLQ`` if it is missing (``provision --dead-letters`` makes it too)."""
    from nats.js.errors import NotFoundError

    try:
        await js.stream_info(DEAD_LETTER_STREAM)
    except NotFoundError:
        await js.add_stream(dead_letter_spec(replicas).config())


async def redriven(js: Any, durable: str, ack_wait: float = 30) -> Any:
    """The pull subscription on what ``redrive`` hands back to ``durable``."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    name = durable + REDRIVE_DURABLE_SUFFIX
    config = ConsumerConfig(
        durable_name=name,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_deliver=-1,
        filter_subject=redrive_filter(durable),
    )
    return await js.pull_subscribe(
        redrive_filter(durable), durable=name, stream=DEAD_LETTER_STREAM, config=config
    )


class DeadLetters:
    """Parks messages ``durable`` cannot use in ``STRIPE_DLQ``, counted on ``counter``."""

    def __init__(self, js: Any, durable: str, counter: Counter) -> None:
        self.js = js
        self.durable = durable
        self.counter = counter

    async def park(self, msg: Any, event_type: str, reason: str) -> bool:
        """Copy ``msg`` to the dead letters (awaiting the PubAck); False if that failed.

        The caller terminates the original only on True, so a dead letter is never lost
        between the two: on False it naks, and the next delivery tries again.
        """
        from nats import errors as nats_errors

        meta = msg.metadata
        subject, headers = dead_letter(
            msg.subject, msg.headers, self.durable, reason, meta.stream, meta.sequence.stream
        )
        try:
            await self.js.publish(subject, msg.data, headers=headers)
        except (nats_errors.Error, TimeoutError) as exc:
            log.error(
                "%s could not dead-letter %s:%s: %s",
                self.durable,
                meta.stream,
                meta.sequence.stream,
                type(exc).__name__,
            )
            return False
        log.warning(
            "%s dead-lettered %s:%s (%s): %s",
            self.durable,
            meta.stream,
            meta.sequence.stream,
            event_type,
            headers[REASON_HEADER],
        )
        self.counter.labels(self.durable, event_type).inc()
        return True
