"""``server``: ``stripe-bridge serve`` as the container runs it, in a real process.

What the server alone promises, beyond the function it serves: a connection that does
not finish its request headers in time is answered 408 and closed (counted and logged
like every refusal), without holding up anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import uvicorn
from stripe_bridge.asgi import HttpRequest, json_answer
from stripe_bridge.http import BodyReader
from stripe_bridge.ops.natsserver import NatsServer, free_port
from stripe_bridge.server import (
    SERVING_GC_THRESHOLD,
    CoalescingTransport,
    header_timeout_protocol,
    settle_heap,
)
from stripe_bridge_testing.deliveries import fixture_event, post_event
from stripe_bridge_testing.function_metrics import metric
from stripe_bridge_testing.waiting import wait_until, wait_until_async

from .conftest import FunctionFactory

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send


def _closed_by_peer(sock: socket.socket, received: list[bytes]) -> bool:
    """Whether the server closed ``sock``; what it sent on the way goes to ``received``."""
    try:
        chunk = sock.recv(4096)
    except TimeoutError:
        return False
    received.append(chunk)
    return chunk == b""


@contextlib.contextmanager
def _serving(app: ASGIApp) -> Iterator[int]:
    """``app`` under uvicorn with the functions' protocol, in a thread; yields its port."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", http=header_timeout_protocol(5)
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 30, "uvicorn serving")
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


@contextlib.asynccontextmanager
async def _recorded_transport() -> AsyncIterator[
    tuple[asyncio.Transport, socket.socket, list[bytes]]
]:
    """A socket transport whose writes are recorded, its peer socket, and the record."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    sends: list[bytes] = []
    write = transport.write

    def recorded(data: bytes | bytearray | memoryview) -> None:
        sends.append(bytes(data))
        write(data)

    transport.write = recorded  # type: ignore[method-assign]
    try:
        yield transport, theirs, sends
    finally:
        transport.close()
        theirs.close()


def test_half_sent_headers_get_408_and_the_connection_closed(
    stream: NatsServer, start_function: FunctionFactory
) -> None:
    fn = start_function("invoice_paid", NATS_URL=stream.url, HEADER_READ_TIMEOUT_SECONDS="1")
    with socket.create_connection(("127.0.0.1", fn.port), timeout=10) as stalled:
        stalled.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")
        opened = time.monotonic()
        # Another client meanwhile is served as usual.
        answer = post_event(fn.url, fixture_event("invoice_paid", fresh_id=True))
        assert answer.status_code == 200, answer.text
        stalled.settimeout(0.2)
        received: list[bytes] = []
        wait_until(lambda: _closed_by_peer(stalled, received), 30, "the stalled connection closed")
        held = time.monotonic() - opened
    reply = b"".join(received).decode()
    assert reply.startswith("HTTP/1.1 408 "), reply
    assert "connection: close" in reply.lower()
    assert '"error": "header_read_timeout"' in reply or '"error":"header_read_timeout"' in reply
    assert held < 20
    labels = {"event_type": "unknown", "outcome": "rejected", "reason": "header_read_timeout"}
    assert metric(fn.url, "stripe_bridge_webhooks_total", **labels) == 1
    wait_until(lambda: "reason=header_read_timeout" in fn.log(), 30, "the log line")
    assert "status=408" in fn.log()


def test_a_connection_that_sends_nothing_is_closed_silently(
    stream: NatsServer, start_function: FunctionFactory
) -> None:
    fn = start_function("invoice_paid", NATS_URL=stream.url, HEADER_READ_TIMEOUT_SECONDS="1")
    with socket.create_connection(("127.0.0.1", fn.port), timeout=10) as idle:
        idle.settimeout(0.2)
        received: list[bytes] = []
        wait_until(lambda: _closed_by_peer(idle, received), 30, "the idle connection closed")
    # No request began: nothing to answer, nothing counted as a refusal.
    assert b"".join(received) == b""
    labels = {"event_type": "unknown", "outcome": "rejected", "reason": "header_read_timeout"}
    assert metric(fn.url, "stripe_bridge_webhooks_total", **labels) == 0


def test_keep_alive_requests_are_unaffected(
    stream: NatsServer, start_function: FunctionFactory
) -> None:
    # The timer covers each request's headers, not the connection's life: a kept-alive
    # connection serves requests spread over more than the header timeout.
    import httpx

    fn = start_function("invoice_paid", NATS_URL=stream.url, HEADER_READ_TIMEOUT_SECONDS="1")
    with httpx.Client(timeout=10) as client:
        started = time.monotonic()
        count = 0
        while time.monotonic() - started < 2.5:
            assert client.get(fn.url + "healthz").status_code == 200
            count += 1
        assert count > 1


async def test_coalescing_transport_sends_one_steps_writes_at_once_and_closes_after() -> None:
    # Uvicorn writes an answer's head and body apart; the function's protocol joins them
    # (server.CoalescingTransport): one system call per answer instead of two.
    received = bytearray()
    async with _recorded_transport() as (transport, theirs, sends):

        def everything_received() -> bool:
            with contextlib.suppress(BlockingIOError):
                received.extend(theirs.recv(65536))
            return received.endswith(b"last")

        joined = CoalescingTransport(transport, asyncio.get_running_loop())
        joined.write(b"HTTP/1.1 200 OK\r\n\r\n")
        joined.write(b"{}")
        assert sends == []  # not before the step ends
        await wait_until_async(lambda: sends != [], 5, "the step's writes sent")
        assert sends == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
        joined.write(b"last")
        joined.close()
        assert sends[-1] == b"last" and transport.is_closing()
        await wait_until_async(everything_received, 5, "all received")


def test_the_protocol_tells_the_function_when_the_body_is_all_here() -> None:
    # A body already buffered when the function starts is read without arming a timer
    # (asgi.BODY_RECEIVED); one still on its way is read within BodyReader's timeout.
    seen: list[tuple[bool, bytes]] = []
    started = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = HttpRequest(scope, receive)
        received = request.body_received()
        started.set()
        body = await BodyReader(1000, timeout=30).read(request)
        seen.append((received, body or b""))
        await json_answer(200, {"ok": True}).send(send)

    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
    with _serving(app) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(head + b"whole")
        assert client.recv(4096).startswith(b"HTTP/1.1 200 ")
        started.clear()
        client.sendall(head)
        wait_until(started.is_set, 30, "the function started before its body came")
        client.sendall(b"later")
        assert client.recv(4096).startswith(b"HTTP/1.1 200 ")
    assert seen == [(True, b"whole"), (False, b"later")]


def test_serving_keeps_what_was_loaded_out_of_the_collectors_scans() -> None:
    # Issue #20: the collector ran every ~20 webhooks with 32 in flight and its full
    # collections rescanned the whole loaded program (bench/README.md).
    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (SERVING_GC_THRESHOLD, *before[1:])
        cycle: list[object] = []  # cyclic garbage made while serving is still collected
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_an_answer_written_as_the_client_half_closes_is_still_sent() -> None:
    # The client sends its request and shuts its sending side (HTTP/1.0 style, or a proxy);
    # the answer is written in the same loop pass as the EOF is read. The EOF closes the
    # socket (uvicorn keeps no half-open connections): the joined writes must leave first.
    blocking, client_done = threading.Event(), threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await receive()
        blocking.set()
        client_done.wait(30)  # the loop is busy (as with CPU work) while the EOF arrives
        # Written in this step; the next loop pass reads the EOF before the joined writes'
        # flush runs (uvloop polls I/O before its ready callbacks).
        await json_answer(200, {"ok": True}).send(send)

    received: list[bytes] = []
    with _serving(app) as port:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
                client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                wait_until(blocking.is_set, 30, "the function is answering")
                client.shutdown(socket.SHUT_WR)
                client_done.set()
                wait_until(lambda: _closed_by_peer(client, received), 30, "closed")
        finally:
            client_done.set()  # before the server stops: a failed wait leaves the app blocked
    assert b"".join(received).startswith(b"HTTP/1.1 200 "), received


async def test_coalescing_transport_sends_at_once_above_a_bound() -> None:
    # A streaming answer written in one step must reach the socket's transport as it grows,
    # whose flow control (pause_writing) then holds the writer back; joined, it would not.
    async with _recorded_transport() as (transport, _theirs, sends):
        joined = CoalescingTransport(transport, asyncio.get_running_loop())
        for _ in range(16):
            joined.write(b"x" * 16384)
        sent = [len(data) for data in sends]
        assert sent and max(sent) <= 2 * CoalescingTransport.BOUND, sent
        assert sum(sent) >= 16 * 16384 - CoalescingTransport.BOUND
