"""Move dead letters back to where they are handled again (``stripe-bridge redrive``).

A dead letter says where it goes back to in its ``Stripe-Bridge-Redrive-Subject`` header
(stripe_bridge_events.deadletter); the USAGE_DLQ the OpenMeter forwarder fills predates
that header, so its messages go back from ``usage_dlq.<meter>`` to ``usage.<meter>``.
Each chosen message is published to its target (awaiting the PubAck) and only then
deleted from the dead-letter stream: a crash in between leaves it in both, and running
redrive again publishes it with the same ``Nats-Msg-Id`` (``redrive:<stream>:<seq>``),
which the target stream drops as a duplicate within its duplicate window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from stripe_bridge_events.deadletter import (
    DEAD_LETTER_PREFIX,
    DEAD_LETTER_STREAM,
    REASON_HEADER,
    REDRIVE_SUBJECT_HEADER,
    REDRIVEN_FROM_HEADER,
    SOURCE_HEADER,
)

from ..message import MSG_ID_HEADER
from ..streams import USAGE_DLQ, USAGE_DLQ_SUBJECT_PREFIX, USAGE_SUBJECT_PREFIX
from .backup import iter_stream

#: Headers that describe the dead letter, not the message: dropped when redriven.
_DEAD_LETTER_HEADERS = (REASON_HEADER, SOURCE_HEADER, REDRIVE_SUBJECT_HEADER, MSG_ID_HEADER)


@dataclass(frozen=True)
class DeadLetterStream:
    """A dead-letter stream redrive knows: its dead letters' subjects, a fallback target."""

    name: str
    dead_letters: str
    #: (prefix of the dead letter's subject, prefix of its target) for messages without
    #: the redrive header.
    fallback: tuple[str, str] | None = None


KNOWN = {
    DEAD_LETTER_STREAM: DeadLetterStream(DEAD_LETTER_STREAM, f"{DEAD_LETTER_PREFIX}.dead.>"),
    USAGE_DLQ: DeadLetterStream(
        USAGE_DLQ,
        f"{USAGE_DLQ_SUBJECT_PREFIX}.>",
        (f"{USAGE_DLQ_SUBJECT_PREFIX}.", f"{USAGE_SUBJECT_PREFIX}."),
    ),
}


class Redriven(BaseModel):
    """One chosen dead letter and what happened to it."""

    seq: int
    subject: str
    target: str | None
    reason: str
    #: "redriven", "would_redrive" (dry run), "no_target" or "failed: <error>".
    outcome: str


@dataclass
class Choice:
    """Which dead letters to redrive: all of the stream's, narrowed by each option given."""

    subject: str | None = None
    reason_contains: str | None = None
    sequences: set[int] = field(default_factory=set)

    def wants(self, msg: Any) -> bool:
        """Whether ``msg`` is chosen (the subject filter is applied by the server)."""
        reason = (msg.headers or {}).get(REASON_HEADER, "")
        if self.reason_contains and self.reason_contains.lower() not in reason.lower():
            return False
        return not self.sequences or msg.metadata.sequence.stream in self.sequences


def target_of(stream: DeadLetterStream, subject: str, headers: dict[str, str]) -> str | None:
    """Where a dead letter goes back to, or None if it does not say and no fallback applies."""
    if REDRIVE_SUBJECT_HEADER in headers:
        return headers[REDRIVE_SUBJECT_HEADER]
    if stream.fallback and subject.startswith(stream.fallback[0]):
        return stream.fallback[1] + subject.removeprefix(stream.fallback[0])
    return None


async def redrive(
    js: Any,
    stream: DeadLetterStream,
    choice: Choice,
    dry_run: bool,
    on_message: Callable[[Redriven], None] = lambda _r: None,
) -> list[Redriven]:
    """Redrive every chosen dead letter of ``stream``; report each, in stream order."""
    results = []
    subject = choice.subject or stream.dead_letters
    async with iter_stream(js, stream.name, subject=subject) as messages:
        async for msg in messages:
            if not choice.wants(msg):
                continue
            headers = dict(msg.headers or {})
            seq = msg.metadata.sequence.stream
            target = target_of(stream, msg.subject, headers)
            result = Redriven(
                seq=seq,
                subject=msg.subject,
                target=target,
                reason=headers.get(REASON_HEADER, ""),
                outcome="no_target" if target is None else "would_redrive",
            )
            if target is not None and not dry_run:
                result.outcome = await _move(js, stream.name, msg, target, headers)
            results.append(result)
            on_message(result)
    return results


async def _move(js: Any, stream: str, msg: Any, target: str, headers: dict[str, str]) -> str:
    seq = msg.metadata.sequence.stream
    out = {k: v for k, v in headers.items() if k not in _DEAD_LETTER_HEADERS}
    out[MSG_ID_HEADER] = f"redrive:{stream}:{seq}"
    out[REDRIVEN_FROM_HEADER] = f"{stream}:{seq}"
    try:
        await js.publish(target, msg.data, headers=out)
        await js.delete_msg(stream, seq)
    except Exception as exc:
        return f"failed: {type(exc).__name__}: {exc}".replace("\n", " ")[:300]
    return "redriven"
