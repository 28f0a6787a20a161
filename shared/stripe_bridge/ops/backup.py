"""Back up the stream to JSON Lines and restore it, idempotently (export / import).

Each line is one stored message: subject, headers (``Nats-Msg-Id`` among them), data,
the original sequence and store time. Import publishes every message again with its
original headers, skipping ids the stream already holds; JetStream's duplicate window on
``Nats-Msg-Id`` covers what the skip cannot see (two imports running at once). So a
repeated or interrupted import adds duplicates to the count, never copies to the stream.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal

from pydantic import BaseModel

from ..message import MSG_ID_HEADER
from .natsfaults import RETRY_PAUSE_SECONDS, is_transient, retrying

log = logging.getLogger(__name__)

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


#: How long a reader keeps retrying without reading anything before it fails loudly: a
#: leader election takes seconds; a stream without quorum this long is an outage.
READ_RETRY_SECONDS = 60.0
#: Empty fetches in a row, with messages pending, after which the consumer is recreated.
_STALLED_FETCHES = 5
#: JetStream error code of "consumer not found" (nats-server server/errors.json): an
#: ephemeral consumer lives on one node and is gone when that node is.
_CONSUMER_NOT_FOUND = 10014


class StreamReader:
    """Every message of ``stream`` stored at or after ``since`` (all when None), in order,
    each exactly once, across leader changes: ``async with iter_stream(...) as messages``.

    ``subject`` filters (wildcards allowed); None reads every subject. It ends with the
    stream's last message at the start (or earlier, when the server reports nothing
    pending). An ephemeral pull consumer without acks reads in batches; a transient failure
    (no leader, 503, timeout, the consumer gone with its node) recreates it after the last
    message read, for up to ``retry_seconds`` without progress, then raises.

    Leaving the ``async with`` block (or ``aclose()``) deletes the consumer at once; a full
    ``async for`` does too.
    """

    def __init__(
        self,
        js: Any,
        stream: str,
        since: datetime | None = None,
        subject: str | None = None,
        retry_seconds: float | None = None,
    ) -> None:
        self.js = js
        self.stream = stream
        self.since = since
        self.subject = subject
        self.retry_seconds = READ_RETRY_SECONDS if retry_seconds is None else retry_seconds
        #: Consumers created: 1 without faults, one more per resume.
        self.consumers = 0
        self._messages = self._read()

    def __aiter__(self) -> StreamReader:
        return self

    async def __anext__(self) -> Any:
        return await self._messages.__anext__()

    async def aclose(self) -> None:
        """Stop reading and delete the consumer."""
        await self._messages.aclose()

    async def __aenter__(self) -> StreamReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _read(self) -> AsyncGenerator[Any, None]:
        last = 0  # stream sequence of the last message yielded
        end: int | None = None  # the stream's last sequence when reading began
        progress_at = time.monotonic()
        while True:
            try:
                if end is None:
                    info = await self.js.stream_info(self.stream)
                    if info.state.messages == 0:
                        return
                    end = info.state.last_seq
                async with (
                    self._consumer(last) as subscription,
                    contextlib.aclosing(self._fetch(subscription)) as fetched,
                ):
                    async for msg in fetched:
                        seq = msg.metadata.sequence.stream
                        if seq <= last:
                            continue  # never twice, whatever a consumer delivers again
                        last, progress_at = seq, time.monotonic()
                        yield msg
                        if seq >= end:
                            return
                    return
            except Exception as exc:
                if not _recoverable(exc) or time.monotonic() - progress_at > self.retry_seconds:
                    raise
                log.info(
                    "reading %s: resuming after seq %d (%s)", self.stream, last, type(exc).__name__
                )
                await asyncio.sleep(RETRY_PAUSE_SECONDS)

    @contextlib.asynccontextmanager
    async def _consumer(self, last: int) -> AsyncIterator[Any]:
        """A pull subscription on a new ephemeral consumer starting after ``last``."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        start: dict[str, Any]
        if last:
            start = {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": last + 1}
        elif self.since:
            start = {
                "deliver_policy": DeliverPolicy.BY_START_TIME,
                "opt_start_time": self.since.astimezone(UTC),
            }
        else:
            start = {"deliver_policy": DeliverPolicy.ALL}
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            filter_subject=self.subject,
            inactive_threshold=60.0,
            mem_storage=True,
            **start,
        )
        name = (await self.js.add_consumer(self.stream, config)).name
        self.consumers += 1
        try:
            subscription = await self.js.pull_subscribe_bind(consumer=name, stream=self.stream)
            try:
                yield subscription
            finally:
                await subscription.unsubscribe()
        finally:
            # Best effort: inactive_threshold removes the consumer anyway if this fails.
            with contextlib.suppress(Exception):
                await self.js.delete_consumer(self.stream, name)

    @staticmethod
    async def _fetch(subscription: Any) -> AsyncGenerator[Any, None]:
        """Batches until the server reports nothing pending."""
        empty = 0
        while True:
            try:
                batch = await subscription.fetch(_BATCH, timeout=1.0)
            except TimeoutError:  # nats-py raises asyncio's or its own subclass
                consumer = await subscription.consumer_info()
                if consumer.num_pending == 0:
                    return
                empty += 1
                if empty >= _STALLED_FETCHES:
                    raise
                continue
            empty = 0
            for msg in batch:
                yield msg
            if batch and batch[-1].metadata.num_pending == 0:
                return


def _recoverable(exc: BaseException) -> bool:
    """A failure a new consumer after the last message read gets past."""
    from nats.js.errors import NotFoundError

    consumer_gone = isinstance(exc, NotFoundError) and exc.err_code == _CONSUMER_NOT_FOUND
    return consumer_gone or is_transient(exc)


def iter_stream(
    js: Any,
    stream: str,
    since: datetime | None = None,
    subject: str | None = None,
    retry_seconds: float | None = None,
) -> StreamReader:
    """A StreamReader of ``stream``: use it in ``async with`` when the loop may stop early."""
    return StreamReader(js, stream, since, subject, retry_seconds)


async def stored_ids(js: Any, stream: str, since: datetime | None = None) -> set[str]:
    """``Nats-Msg-Id`` of every message stored in ``stream`` (since ``since``)."""
    ids = set()
    async for msg in iter_stream(js, stream, since):  # read to the end: closes itself
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
    async with iter_stream(js, stream, since) as messages:
        async for msg in messages:
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
        # Again after a transient failure: a stored first try comes back as a duplicate
        # (Nats-Msg-Id), or as the same value again for a KV message.
        publish = partial(
            js.publish,
            message.subject,
            message.payload(),
            stream=stream,
            headers=message.publish_headers(),
        )
        ack = await retrying(publish, READ_RETRY_SECONDS)
        if ack.duplicate:
            counts.duplicate += 1
        else:
            counts.published += 1
        on_message(counts)
    return counts


def since_time(duration: str | None) -> datetime | None:
    """The moment ``duration`` ago (UTC), or None for no limit."""
    return datetime.now(UTC) - parse_duration(duration) if duration else None
