"""Bad input with a valid signature: the parser, not only the HMAC, gets a deliberate answer.

Each case goes through a real function process and a real nats-server, and is checked as
the contract says: the status and JSON ``error``, nothing stored, one count in
``stripe_bridge_webhooks_total`` and one log line without a traceback, secret or body.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import pytest
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.deliveries import (
    fixture_event,
    last_seq,
    post_event,
    signed_headers,
    stored_ids,
)
from stripe_bridge_testing.function_metrics import metric
from stripe_bridge_testing.processes import FunctionProcess
from stripe_bridge_testing.waiting import wait_until

from ..conftest import FunctionFactory
from .test_http_contract import (
    assert_log_clean,
    encode,
    fresh_invoice,
    new_log,
    rejected_count,
)


def deep_body(depth: int) -> bytes:
    """An invoice event whose metadata holds ``depth`` nested arrays."""
    event = fresh_invoice()
    event["data"]["object"]["metadata"] = {"deep": "PLACEHOLDER"}
    return encode(event).replace(b'"PLACEHOLDER"', b"[" * depth + b"]" * depth)


def with_value(field: str, value: object, raw: bytes | None = None) -> Callable[[], bytes]:
    """A body factory: a fresh invoice event whose top-level ``field`` (or, dotted,
    ``data.object.<field>``) is ``value`` as json.dumps writes it, or the bytes ``raw``.
    """

    def body() -> bytes:
        event = fresh_invoice()
        *path, name = field.split(".")
        target = event
        for part in path:
            target = target[part]
        target[name] = "PLACEHOLDER" if raw is not None else value
        data = encode(event)
        return data.replace(b'"PLACEHOLDER"', raw) if raw is not None else data

    return body


def encoded(encoding: str) -> Callable[[], bytes]:
    return lambda: json.dumps(fresh_invoice()).encode(encoding)


#: (expected error, body factory); every body is signed correctly, so the parser decides.
PARSER_CASES: list[tuple[str, Callable[[], bytes]]] = [
    # Nesting a retry cannot fix: once 503 internal_error (~950) or a bare 500 (>= ~990).
    ("malformed_json", lambda: deep_body(950)),
    ("malformed_json", lambda: deep_body(5000)),
    # The contract says UTF-8; json.loads on bytes also guesses UTF-16/32 and eats a BOM.
    ("malformed_json", encoded("utf-16")),
    ("malformed_json", encoded("utf-32")),
    ("malformed_json", lambda: b"\xef\xbb\xbf" + encode(fresh_invoice())),
    # Not JSON at all (RFC 8259): stored, they made the published message unparseable
    # by strict consumers.
    ("malformed_json", with_value("data.object.amount_due", float("nan"))),
    ("malformed_json", with_value("data.object.amount_due", float("-inf"))),
    ("malformed_json", with_value("data.object.amount_due", None, raw=b"1e400")),
    # Over CPython's 4300-digit int() limit: a ValueError that escaped as a bare 500.
    ("malformed_json", with_value("data.object.amount_due", None, raw=b"9" * 5000)),
    # Ambiguous JSON (RFC 8259 sections 4 and 8.2): parsers disagree on which "id" counts or
    # what an unpaired surrogate is; stored, a consumer could read another event than ours.
    ("ambiguous_json", lambda: encode(fresh_invoice())[:-1] + b', "id": "evt_other"}'),
    ("ambiguous_json", with_value("data.object", None, raw=b'{"id": "in_1", "id": "in_2"}')),
    ("ambiguous_json", with_value("data.object.description", None, raw=b'"a\\ud800"')),
    ("ambiguous_json", with_value("data.object.description", None, raw=b'"\\uDC00a"')),
    # Lax coercion: "false" was published on stripe.test.* while the raw said the string.
    ("not_a_stripe_event", with_value("livemode", "false")),
    ("not_a_stripe_event", with_value("livemode", "yes")),
    ("not_a_stripe_event", with_value("livemode", 0)),
    ("not_a_stripe_event", with_value("created", True)),
    ("not_a_stripe_event", with_value("created", "1700000000")),
    ("not_a_stripe_event", with_value("created", 1700000000.5)),
    ("not_a_stripe_event", with_value("data.object", "in_1")),
]


@pytest.mark.parametrize(
    ("error", "body"), PARSER_CASES, ids=[f"{e}-{i}" for i, (e, _) in enumerate(PARSER_CASES)]
)
async def test_what_stripe_never_sends_gets_400(
    shared_stream: NatsServer,
    catch_all: FunctionProcess,
    error: str,
    body: Callable[[], bytes],
) -> None:
    fn = catch_all
    data = body()
    headers = signed_headers(data)
    seq, count, log_at = await last_seq(shared_stream.url), rejected_count(fn, error), len(fn.log())
    response = httpx.post(fn.url, content=data, headers=headers, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error
    assert await last_seq(shared_stream.url) == seq
    assert rejected_count(fn, error) == count + 1
    wait_until(lambda: f"reason={error}" in new_log(fn, log_at), 30, "log line")
    logged = new_log(fn, log_at)
    assert [line for line in logged.splitlines() if "webhook status=" in line] == [
        line for line in logged.splitlines() if line.strip()
    ]
    assert "status=400 outcome=rejected" in logged
    assert_log_clean(logged, headers["Stripe-Signature"].split("v1=")[1])


async def test_published_messages_are_strict_json(
    shared_stream: NatsServer, catch_all: FunctionProcess
) -> None:
    event = fresh_invoice()
    event["data"]["object"]["amount_due"] = 1.5e300  # finite: Stripe could send it
    assert post_event(catch_all.url, event).json()["status"] == "published"
    (message,) = [m for m in await stored_messages(shared_stream.url) if m[0] == event["id"]]

    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    parsed = json.loads(message[1], parse_constant=refuse)
    assert parsed["data"]["stripe"]["livemode"] is False
    assert parsed["stripelivemode"] is False


async def stored_messages(nats_url: str) -> list[tuple[str, bytes]]:
    from stripe_bridge_testing.deliveries import stream_messages

    return [(m.headers["Nats-Msg-Id"], m.data) for m in await stream_messages(nats_url)]


@pytest.mark.parametrize("path", ["favicon.ico", "anything", "v1/webhooks", "readyz/x"])
async def test_only_the_endpoint_path_takes_deliveries(
    shared_stream: NatsServer, catch_all: FunctionProcess, path: str
) -> None:
    fn = catch_all
    event = fresh_invoice()
    seq, count, log_at = (
        await last_seq(shared_stream.url),
        rejected_count(fn, "not_found"),
        len(fn.log()),
    )
    response = post_event(fn.url + path, event)
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "not_found"
    assert httpx.get(fn.url + path, timeout=10).status_code == 404
    assert await last_seq(shared_stream.url) == seq
    assert rejected_count(fn, "not_found") == count + 2
    wait_until(lambda: new_log(fn, log_at).count("reason=not_found") == 2, 30, "log lines")
    # The endpoint itself (with or without the trailing slash) still takes it.
    assert post_event(fn.url.rstrip("/"), event).json()["status"] == "published"


def big_event(body_size: int) -> tuple[dict[str, Any], bytes]:
    """An invoice event padded so that its JSON body is exactly ``body_size`` bytes."""
    event = fresh_invoice()
    event["data"]["object"]["metadata"] = {"padding": ""}
    pad = body_size - len(encode(event))
    event["data"]["object"]["metadata"]["padding"] = "x" * pad
    body = encode(event)
    assert len(body) == body_size
    return event, body


async def test_an_event_over_max_payload_gets_413_and_disturbs_nothing(
    shared_stream: NatsServer, catch_all: FunctionProcess
) -> None:
    # The test server's max_payload is 1 MiB, as is MAX_BODY_BYTES: a body just under the
    # limit makes a CloudEvent over it, which once closed the function's NATS connection
    # (every in-flight delivery 503 puback_timeout) on every retry.
    fn = catch_all
    event, body = big_event(1024 * 1024 - 300)
    others = [fresh_invoice() for _ in range(12)]
    count, log_at = rejected_count(fn, "event_too_large"), len(fn.log())
    with ThreadPoolExecutor(4) as pool:
        normal = [pool.submit(post_event, fn.url, other) for other in others[:6]]
        big = httpx.post(fn.url, content=body, headers=signed_headers(body), timeout=30)
        normal += [pool.submit(post_event, fn.url, other) for other in others[6:]]
        answers = [future.result() for future in normal]
    assert big.status_code == 413, big.text
    assert big.json()["error"] == "event_too_large"
    assert [a.status_code for a in answers] == [200] * len(others)
    ids = await stored_ids(shared_stream.url)
    assert event["id"] not in ids
    assert all(ids.count(other["id"]) == 1 for other in others)
    assert rejected_count(fn, "event_too_large") == count + 1
    assert metric(fn.url, "stripe_bridge_nats_connected") == 1
    assert httpx.get(fn.url + "readyz", timeout=10).status_code == 200
    wait_until(lambda: "reason=event_too_large" in new_log(fn, log_at), 30, "log line")
    assert "Traceback" not in new_log(fn, log_at)
    # Stripe's retry gets the same permanent answer, and it is not held as in progress.
    again = httpx.post(fn.url, content=body, headers=signed_headers(body), timeout=30)
    assert (again.status_code, again.json()["error"]) == (413, "event_too_large")


@contextmanager
def raw_upload(fn: FunctionProcess, declared: int, sent: bytes) -> Iterator[socket.socket]:
    """A connection that declared ``declared`` body bytes and sent only ``sent``."""
    sock = socket.create_connection(("127.0.0.1", fn.port), timeout=10)
    head = (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Stripe-Signature: t=1,v1=00\r\nContent-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + sent)
    try:
        yield sock
    finally:
        sock.close()


def read_answer(sock: socket.socket) -> str:
    """Everything the function sends before it closes the connection."""
    parts = []
    while chunk := sock.recv(4096):
        parts.append(chunk)
    return b"".join(parts).decode()


def test_a_client_gone_mid_body_is_one_counted_line(catch_all: FunctionProcess) -> None:
    fn = catch_all
    count, log_at = rejected_count(fn, "client_disconnected"), len(fn.log())
    with raw_upload(fn, 10_000, b'{"id": "evt_'):
        wait_until(lambda: metric(fn.url, "stripe_bridge_inflight_requests") == 1, 30, "reading")
    wait_until(lambda: rejected_count(fn, "client_disconnected") == count + 1, 30, "counted")
    logged = new_log(fn, log_at)
    assert logged.count("reason=client_disconnected") == 1
    assert "Traceback" not in logged and "ERROR" not in logged


def test_a_stalled_body_gets_408_and_sigterm_does_not_wait_for_it(
    nats_server: NatsServer, start_function: FunctionFactory
) -> None:
    fn = start_function(NATS_URL=nats_server.url, BODY_READ_TIMEOUT_SECONDS="1")
    with raw_upload(fn, 10_000, b'{"id": "evt_') as sock:
        answer = read_answer(sock)
    assert answer.startswith("HTTP/1.1 408 "), answer
    assert '"error":"body_read_timeout"' in answer.replace(" ", "")
    assert rejected_count(fn, "body_read_timeout") == 1
    assert "status=408 outcome=rejected reason=body_read_timeout" in fn.log()

    # Stalled uploads once held SIGTERM for the whole graceful period (20 s); nor may they
    # hold it until their read timeout (60 s here, far above what a loaded machine adds to
    # the 2 s grace): nothing is claimed yet.
    fn = start_function(NATS_URL=nats_server.url, BODY_READ_TIMEOUT_SECONDS="60")
    with ExitStack() as stack:
        uploads = [stack.enter_context(raw_upload(fn, 10_000, b"{")) for _ in range(20)]
        wait_until(lambda: metric(fn.url, "stripe_bridge_inflight_requests") == 20, 30, "20")
        assert fn.process is not None
        fn.process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        fn.process.wait(60)
        elapsed = time.monotonic() - stopped
        answer = read_answer(uploads[0])
    assert elapsed < 30, f"SIGTERM took {elapsed:.1f} s"
    assert fn.process.returncode == 0
    assert answer.startswith("HTTP/1.1 503 "), answer
    assert '"error":"shutting_down"' in answer.replace(" ", "")
    assert fn.log().count("reason=shutting_down") == 20
    assert "Traceback" not in fn.log()


def test_the_per_type_function_refuses_other_paths_too(invoice_paid_fn: FunctionProcess) -> None:
    response = post_event(invoice_paid_fn.url + "invoice.paid", fixture_event("invoice_paid"))
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
