"""``server``: ``stripe-bridge serve`` as the container runs it, in a real process.

What the server alone promises, beyond the function it serves: a connection that does
not finish its request headers in time is answered 408 and closed (counted and logged
like every refusal), without holding up anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge.server import CoalescingTransport
from stripe_bridge_testing.deliveries import fixture_event, post_event
from stripe_bridge_testing.function_metrics import metric
from stripe_bridge_testing.waiting import wait_until, wait_until_async

from .conftest import FunctionFactory


def _closed_by_peer(sock: socket.socket, received: list[bytes]) -> bool:
    """Whether the server closed ``sock``; what it sent on the way goes to ``received``."""
    try:
        chunk = sock.recv(4096)
    except TimeoutError:
        return False
    received.append(chunk)
    return chunk == b""


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
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    sends: list[bytes] = []
    write = transport.write

    def counted(data: bytes | bytearray | memoryview) -> None:
        sends.append(bytes(data))
        write(data)

    transport.write = counted  # type: ignore[method-assign]
    received = bytearray()

    def everything_received() -> bool:
        with contextlib.suppress(BlockingIOError):
            received.extend(theirs.recv(65536))
        return received.endswith(b"last")

    try:
        joined = CoalescingTransport(transport, loop)
        joined.write(b"HTTP/1.1 200 OK\r\n\r\n")
        joined.write(b"{}")
        assert sends == []  # not before the step ends
        await wait_until_async(lambda: sends != [], 5, "the step's writes sent")
        assert sends == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
        joined.write(b"last")
        joined.close()
        assert sends[-1] == b"last" and transport.is_closing()
        await wait_until_async(everything_received, 5, "all received")
    finally:
        transport.close()
        theirs.close()
