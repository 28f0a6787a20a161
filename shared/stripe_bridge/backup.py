"""Back up the stream to JSON Lines and restore it, idempotently (export / import).

Each line is one stored message: subject, headers (``Nats-Msg-Id`` among them), data,
the original sequence and store time. Import publishes every message again with its
original headers, skipping ids the stream already holds; JetStream's duplicate window on
``Nats-Msg-Id`` covers what the skip cannot see (two imports running at once). So a
repeated or interrupted import adds duplicates to the count, never copies to the stream.
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel

from .message import MSG_ID_HEADER

#: Headers that are publish preconditions, not data: never replayed on import.
_PRECONDITION_PREFIX = "Nats-Expected-"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: Messages fetched per pull request while exporting.
_BATCH = 256


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``24h``, ``7d`` -> timedelta; ValueError otherwise."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 24h, 7d)")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


class ExportedMessage(BaseModel):
    """One line of an export file."""

    seq: int
    time: datetime
    subject: str
    headers: dict[str, str]
    data: str
    encoding: Literal["utf-8", "base64"] = "utf-8"

    @classmethod
    def from_msg(cls, msg: Any) -> ExportedMessage:
        """From a nats-py JetStream message."""
        try:
            data, encoding = msg.data.decode(), "utf-8"
        except UnicodeDecodeError:
            data, encoding = base64.b64encode(msg.data).decode(), "base64"
        return cls(
            seq=msg.metadata.sequence.stream,
            time=msg.metadata.timestamp,
            subject=msg.subject,
            headers=dict(msg.headers or {}),
            data=data,
            encoding=encoding,
        )

    def payload(self) -> bytes:
        """The message body as stored."""
        return base64.b64decode(self.data) if self.encoding == "base64" else self.data.encode()

    def publish_headers(self) -> dict[str, str]:
        """The headers to publish again with (``Nats-Msg-Id`` kept, preconditions dropped)."""
        return {k: v for k, v in self.headers.items() if not k.startswith(_PRECONDITION_PREFIX)}


async def iter_stream(
    js: Any, stream: str, since: datetime | None = None, subject: str | None = None
) -> AsyncIterator[Any]:
    """Every message of ``stream`` stored at or after ``since`` (all when None), in order.

    ``subject`` filters (wildcards allowed); None reads every subject.

    An ephemeral pull consumer without acks reads in batches; it ends at the message the
    server reports nothing pending after, and is removed when the iteration ends.
    """
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    from nats import errors as nats_errors

    info = await js.stream_info(stream)
    if info.state.messages == 0:
        return
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.BY_START_TIME if since else DeliverPolicy.ALL,
        opt_start_time=since.astimezone(UTC) if since else None,
        filter_subject=subject,
        inactive_threshold=60.0,
        mem_storage=True,
    )
    name = (await js.add_consumer(stream, config)).name
    subscription = await js.pull_subscribe_bind(consumer=name, stream=stream)
    try:
        while True:
            try:
                batch = await subscription.fetch(_BATCH, timeout=1.0)
            except (TimeoutError, nats_errors.TimeoutError):
                consumer = await subscription.consumer_info()
                if consumer.num_pending == 0:
                    return
                continue
            for msg in batch:
                yield msg
            if batch and batch[-1].metadata.num_pending == 0:
                return
    finally:
        await subscription.unsubscribe()
        # Best effort: inactive_threshold removes the consumer anyway if this fails.
        with contextlib.suppress(Exception):
            await js.delete_consumer(stream, name)


async def stored_ids(js: Any, stream: str, since: datetime | None = None) -> set[str]:
    """``Nats-Msg-Id`` of every message stored in ``stream`` (since ``since``)."""
    ids = set()
    async for msg in iter_stream(js, stream, since):
        if msg.headers and MSG_ID_HEADER in msg.headers:
            ids.add(msg.headers[MSG_ID_HEADER])
    return ids


async def export_stream(
    js: Any,
    stream: str,
    write: Callable[[str], object],
    since: datetime | None = None,
) -> int:
    """Write ``stream`` (from ``since``) as JSON Lines through ``write``; return the count."""
    count = 0
    async for msg in iter_stream(js, stream, since):
        write(ExportedMessage.from_msg(msg).model_dump_json() + "\n")
        count += 1
    return count


@dataclass
class ImportCounts:
    """What an import did."""

    published: int = 0
    duplicate: int = 0


async def import_messages(
    js: Any,
    stream: str,
    messages: Iterable[ExportedMessage],
    on_message: Callable[[ImportCounts], None] = lambda _counts: None,
) -> ImportCounts:
    """Publish ``messages`` into ``stream`` with their original headers, awaiting each PubAck.

    Messages whose ``Nats-Msg-Id`` the stream already holds are skipped (counted as
    duplicates), so importing twice adds nothing even after the duplicate window.
    """
    counts = ImportCounts()
    present = await stored_ids(js, stream)
    for message in messages:
        if message.headers.get(MSG_ID_HEADER) in present:
            counts.duplicate += 1
            on_message(counts)
            continue
        ack = await js.publish(
            message.subject, message.payload(), stream=stream, headers=message.publish_headers()
        )
        if ack.duplicate:
            counts.duplicate += 1
        else:
            counts.published += 1
        on_message(counts)
    return counts


def since_time(duration: str | None) -> datetime | None:
    """The moment ``duration`` ago (UTC), or None for no limit."""
    return datetime.now(UTC) - parse_duration(duration) if duration else None
