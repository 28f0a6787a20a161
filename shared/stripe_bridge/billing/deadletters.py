"""Dead letters of the billing consumers: one mechanism for every message one cannot use.

A message a consumer cannot use is copied to its stream's dead letters with the reason,
the copy awaited (PubAck), counted on ``stripe_bridge_consumer_dead_letters_total``, and
only then let go where it came from; if the copy fails the message is not let go (nak,
or a restart from the checkpoint) and is tried again, never dropped.

- STRIPE consumers (project-tiers, project-lifecycle) follow the SDK's convention
  (``stripe_bridge_events.deadletter``, docs/consumers.md): ``STRIPE_DLQ``, subject
  ``stripe_dlq.dead.<durable>.<original subject>``; ``stripe-bridge redrive`` moves it to
  ``stripe_dlq.redrive.<durable>.<original subject>``, which the consumer reads through a
  second durable (``redriven``) and handles like any message.
- USAGE consumers (count-usage) use USAGE's dead letters as forward-openmeter does:
  ``usage_dlq.<meter>``, marked with who refused it (``usage_dead_letter``);
  ``redrive --from USAGE_DLQ`` hands it back to ``usage.<meter>`` for every USAGE consumer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError
from stripe_bridge_events.deadletter import (
    DEAD_LETTER_STREAM,
    REASON_HEADER,
    REDRIVE_SUBJECT_HEADER,
    REDRIVEN_FROM_HEADER,
    dead_letter,
    redrive_filter,
)

from ..message import MSG_ID_HEADER
from ..streams import USAGE_DLQ_SUBJECT_PREFIX as DEAD_LETTER_SUBJECT_PREFIX
from ..streams import USAGE_SUBJECT_PREFIX, dead_letter_spec

log = logging.getLogger(__name__)

#: On a USAGE dead letter (and the record redrive hands back): the consumer that refused it.
DEAD_LETTERED_BY_HEADER = "Stripe-Bridge-Dead-Lettered-By"
#: What a redriven message's durable is called, beside the consumer's own.
REDRIVE_DURABLE_SUFFIX = "-redrive"


def dead_letter_counter(registry: CollectorRegistry) -> Counter:
    """The counter every billing consumer reports its dead letters on (one alert reads it)."""
    return Counter(
        "stripe_bridge_consumer_dead_letters",
        "Messages a billing consumer could not use, moved to STRIPE_DLQ or USAGE_DLQ with "
        "the reason (stripe-bridge redrive brings them back), by consumer and event type.",
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


#: (message, durable, reason) -> the dead letter's subject and headers.
Address = Callable[[Any, str, str], tuple[str, dict[str, str]]]


def stripe_dead_letter(msg: Any, durable: str, reason: str) -> tuple[str, dict[str, str]]:
    """Where a STRIPE consumer's dead letter goes: the SDK's convention, in ``STRIPE_DLQ``."""
    meta = msg.metadata
    return dead_letter(msg.subject, msg.headers, durable, reason, meta.stream, meta.sequence.stream)


def usage_dead_letter(msg: Any, durable: str, reason: str) -> tuple[str, dict[str, str]]:
    """Where a USAGE consumer's dead letter goes: ``usage_dlq.<meter>``, as the forwarder's.

    ``redrive --from USAGE_DLQ`` sends it back to ``usage.<meter>``, where every USAGE
    consumer reads it again: the forwarder's repeat is deduplicated by OpenMeter (id +
    source), and ``DEAD_LETTERED_BY_HEADER`` (kept by redrive) tells a counter the copy is
    its own to count, not a repeat of a record it counted before (``redriven_for``).
    """
    meter = msg.subject.removeprefix(USAGE_SUBJECT_PREFIX + ".")
    headers = {k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-")}
    # Once per stored record: a re-read after a restart stores nothing new.
    headers[MSG_ID_HEADER] = f"dead:{durable}:{msg.metadata.stream}:{msg.metadata.sequence.stream}"
    headers[REASON_HEADER] = " ".join(f"{durable}: {reason}".split())[:500]
    headers[REDRIVE_SUBJECT_HEADER] = msg.subject
    headers[DEAD_LETTERED_BY_HEADER] = durable
    return f"{DEAD_LETTER_SUBJECT_PREFIX}.{meter}", headers


def redriven_for(headers: dict[str, str] | None, durable: str) -> bool | None:
    """None for a record that was never redriven; else whether ``durable`` dead-lettered it."""
    if not headers or REDRIVEN_FROM_HEADER not in headers:
        return None
    return headers.get(DEAD_LETTERED_BY_HEADER) == durable


class DeadLetterFailed(Exception):
    """The dead letter was not stored: the message must not be let go."""


class DeadLetters:
    """Parks messages ``durable`` cannot use at ``address``, counted on ``counter``."""

    def __init__(
        self, js: Any, durable: str, counter: Counter, address: Address = stripe_dead_letter
    ) -> None:
        self.js = js
        self.durable = durable
        self.counter = counter
        self.address = address

    async def park(self, msg: Any, event_type: str, reason: str) -> bool:
        """Copy ``msg`` to the dead letters (awaiting the PubAck); False if that failed.

        The caller lets the original go only on True, so nothing is lost between the two:
        on False it keeps it (nak, or a restart from the checkpoint) and tries again.
        """
        from nats import errors as nats_errors

        meta = msg.metadata
        subject, headers = self.address(msg, self.durable, reason)
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
