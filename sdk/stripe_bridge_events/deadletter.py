"""The dead-letter convention of STRIPE consumers (a poison message must not block the rest).

A consumer that cannot handle a message after its last allowed delivery copies it to the
``STRIPE_DLQ`` stream under ``stripe_dlq.dead.<durable>.<original subject>`` with the
headers below, then terminates it (``msg.term()``): the STRIPE stream keeps every event
exactly once, other consumers are not affected. After a fix, ``stripe-bridge redrive``
moves chosen dead letters to ``stripe_dlq.redrive.<durable>.<original subject>``, which the
same consumer reads through a second durable on ``STRIPE_DLQ`` (docs/consumers.md).
"""

from __future__ import annotations

from collections.abc import Mapping

DEAD_LETTER_STREAM = "STRIPE_DLQ"
DEAD_LETTER_PREFIX = "stripe_dlq"
#: Why the message was dead-lettered (one line, no secrets, at most 500 characters).
REASON_HEADER = "Stripe-Bridge-Dead-Letter-Reason"
#: ``<stream>:<sequence>`` of the original message.
SOURCE_HEADER = "Stripe-Bridge-Dead-Letter-Source"
#: The subject ``redrive`` publishes the message to.
REDRIVE_SUBJECT_HEADER = "Stripe-Bridge-Redrive-Subject"
#: On redriven messages: ``<dead-letter stream>:<seq>`` they came from.
REDRIVEN_FROM_HEADER = "Stripe-Bridge-Redriven-From"
MSG_ID_HEADER = "Nats-Msg-Id"
_MAX_REASON = 500


def dead_letter_subject(durable: str, subject: str) -> str:
    """Where ``durable`` dead-letters a message it read on ``subject``."""
    return f"{DEAD_LETTER_PREFIX}.dead.{durable}.{subject}"


def redrive_filter(durable: str) -> str:
    """The subjects ``durable``'s redriven messages arrive on (its second subscription)."""
    return f"{DEAD_LETTER_PREFIX}.redrive.{durable}.>"


def dead_letter(
    subject: str,
    headers: Mapping[str, str] | None,
    durable: str,
    reason: str,
    stream: str,
    sequence: int,
) -> tuple[str, dict[str, str]]:
    """The subject and headers to publish a dead letter with (the body stays as it was).

    ``Nats-Msg-Id`` names the original message, so dead-lettering it twice (a crash before
    ``term``) stores it once within the dead-letter stream's duplicate window.
    """
    original = subject.split(".", 3)[3] if subject.startswith(DEAD_LETTER_PREFIX + ".") else subject
    out = {k: v for k, v in (headers or {}).items() if not k.startswith("Nats-Expected-")}
    out[MSG_ID_HEADER] = f"dead:{durable}:{stream}:{sequence}"
    out[REASON_HEADER] = " ".join(reason.split())[:_MAX_REASON]
    out[SOURCE_HEADER] = f"{stream}:{sequence}"
    out[REDRIVE_SUBJECT_HEADER] = f"{DEAD_LETTER_PREFIX}.redrive.{durable}.{original}"
    return dead_letter_subject(durable, original), out
