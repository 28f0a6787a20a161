"""Every HTTP path of the contract, through real function processes and a real nats-server.

Each refusal is checked four ways: the status and JSON ``error``, nothing in the stream,
the ``stripe_bridge_webhooks_total`` counter, and one log line without secrets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.deliveries import (
    SECRET,
    fixture_event,
    last_seq,
    now,
    post_event,
    signed_headers,
    stored_ids,
)
from stripe_bridge_testing.function_metrics import metric
from stripe_bridge_testing.processes import FunctionProcess, RedisServer
from stripe_bridge_testing.repo import REPO_ROOT
from stripe_bridge_testing.waiting import wait_until

from ..conftest import FunctionFactory, provision_stream

OTHER_SECRET = "whsec_not_the_configured_one_0123456789"


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def fresh_invoice() -> dict[str, Any]:
    return fixture_event("invoice_paid", fresh_id=True)


def post_with(client: httpx.Client, url: str, event: dict[str, Any]) -> httpx.Response:
    body = encode(event)
    return client.post(url, content=body, headers=signed_headers(body))


def rejected_count(fn: FunctionProcess, reason: str) -> float:
    return metric(fn.url, "stripe_bridge_webhooks_total", outcome="rejected", reason=reason)


def new_log(fn: FunctionProcess, since: int) -> str:
    return fn.log()[since:]


def assert_log_clean(text: str, *secrets: str) -> None:
    """No secret, signature or whole Stripe-Signature header value in the log."""
    for secret in (SECRET, OTHER_SECRET, *secrets):
        assert secret not in text


#: Requests are made when their test runs: signed at collection time, they could be stale
#: by then in a long suite. Each maker returns (body, headers).
RequestMaker = Callable[[], tuple[bytes, dict[str, str]]]


def invoice_body() -> bytes:
    return encode(fresh_invoice())


def signed(
    body: Callable[[], bytes] = invoice_body, secret: str = SECRET, skew: int = 0
) -> RequestMaker:
    """A maker of ``body()`` signed with ``secret``, ``skew`` seconds off the clock."""

    def make() -> tuple[bytes, dict[str, str]]:
        data = body()
        return data, signed_headers(data, secret, now() + skew)

    return make


def with_signature(header: Callable[[bytes], str | None]) -> RequestMaker:
    """A maker of an invoice whose Stripe-Signature is ``header(body)`` (None: absent)."""

    def make() -> tuple[bytes, dict[str, str]]:
        data = invoice_body()
        value = header(data)
        return data, {} if value is None else {"Stripe-Signature": value}

    return make


def v0_only(body: bytes) -> str:
    return signed_headers(body)["Stripe-Signature"].replace("v1=", "v0=")


def damaged(change: Callable[[dict[str, Any]], object]) -> Callable[[], bytes]:
    """A body factory: a fresh invoice event after ``change``."""

    def body() -> bytes:
        event = fresh_invoice()
        change(event)
        return encode(event)

    return body


BAD_REQUESTS: list[tuple[str, RequestMaker]] = [
    ("missing_signature", with_signature(lambda _body: None)),
    ("malformed_signature", with_signature(lambda _body: "not a stripe signature")),
    ("no_v1_signature", with_signature(v0_only)),
    ("signature_mismatch", signed(secret=OTHER_SECRET)),
    ("timestamp_too_old", signed(skew=-3600)),
    ("timestamp_in_future", signed(skew=3600)),
    ("malformed_json", signed(lambda: b'{"id": "evt_1", ')),
    ("malformed_json", signed(lambda: b"\xff\xfe\x00 not utf-8")),
    ("not_a_stripe_event", signed(lambda: encode({"id": "ch_1", "object": "charge"}))),
    ("not_a_stripe_event", signed(damaged(lambda event: event.pop("data")))),
    ("not_a_stripe_event", signed(damaged(lambda event: event.update(object="invoice")))),
    # No date can hold it: once a bare 500 that also left the event claimed.
    ("not_a_stripe_event", signed(damaged(lambda event: event.update(created=10**13)))),
    (
        "unsupported_event_type",
        signed(lambda: encode(fixture_event("subscription_updated", fresh_id=True))),
    ),
]


@pytest.mark.parametrize(
    ("error", "make"), BAD_REQUESTS, ids=[f"{e}-{i}" for i, (e, _) in enumerate(BAD_REQUESTS)]
)
async def test_bad_requests_get_400_naming_the_reason(
    shared_stream: NatsServer, invoice_paid_fn: FunctionProcess, error: str, make: RequestMaker
) -> None:
    fn = invoice_paid_fn
    body, headers = make()
    seq, count, log_at = await last_seq(shared_stream.url), rejected_count(fn, error), len(fn.log())
    response = httpx.post(fn.url, content=body, headers=headers, timeout=10)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == error
    assert await last_seq(shared_stream.url) == seq
    assert rejected_count(fn, error) == count + 1
    wait_until(lambda: f"reason={error}" in new_log(fn, log_at), 30, "log line")
    lines = [line for line in new_log(fn, log_at).splitlines() if "webhook status=" in line]
    assert len(lines) == 1
    assert "status=400 outcome=rejected" in lines[0]
    signature = headers.get("Stripe-Signature", "")
    assert_log_clean(new_log(fn, log_at), *(signature.split(",")[1:] if signature else []))


async def test_signature_failures_are_counted_by_reason(
    shared_stream: NatsServer, invoice_paid_fn: FunctionProcess
) -> None:
    fn = invoice_paid_fn
    body = encode(fresh_invoice())
    name = "stripe_bridge_signature_failures_total"
    before = metric(fn.url, name, reason="signature_mismatch")
    response = httpx.post(fn.url, content=body, headers=signed_headers(body, OTHER_SECRET))
    assert response.status_code == 400
    assert metric(fn.url, name, reason="signature_mismatch") == before + 1


async def test_published_with_stream_seq_then_duplicate(
    shared_stream: NatsServer, invoice_paid_fn: FunctionProcess
) -> None:
    fn = invoice_paid_fn
    event = fresh_invoice()
    published_before = metric(
        fn.url, "stripe_bridge_webhooks_total", event_type="invoice.paid", outcome="published"
    )
    first = post_event(fn.url, event)
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer == {
        "status": "published",
        "id": event["id"],
        "stream": "STRIPE",
        "seq": await last_seq(shared_stream.url),
    }
    # Stripe redelivers the same event with a new timestamp and signature.
    again = post_event(fn.url, event)
    assert again.status_code == 200
    assert again.json() == {"status": "duplicate", "id": event["id"]}
    assert (await stored_ids(shared_stream.url)).count(event["id"]) == 1
    assert (
        metric(
            fn.url, "stripe_bridge_webhooks_total", event_type="invoice.paid", outcome="published"
        )
        == published_before + 1
    )
    assert metric(fn.url, "stripe_bridge_webhooks_total", outcome="duplicate") >= 1
    assert metric(fn.url, "stripe_bridge_publish_duration_seconds_count") >= 1
    assert metric(fn.url, "stripe_bridge_nats_connected") == 1
    assert metric(fn.url, "stripe_bridge_cold_start_seconds") > 0


def chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_body_over_the_limit_gets_413(
    shared_stream: NatsServer, invoice_paid_fn: FunctionProcess, chunked: bool
) -> None:
    fn = invoice_paid_fn
    event = fresh_invoice()
    event["data"]["object"]["metadata"] = {"padding": "x" * 20_000}  # limit is 16 KiB here
    body = encode(event)
    headers = signed_headers(body)
    seq, count = await last_seq(shared_stream.url), rejected_count(fn, "body_too_large")
    log_at = len(fn.log())
    content: bytes | Iterator[bytes] = chunks(body) if chunked else body
    with httpx.Client(timeout=10) as client:
        response = client.post(fn.url, content=content, headers=headers)
        # The unread rest of the body must not be taken for the next request.
        after = fresh_invoice()
        assert post_with(client, fn.url, after).json()["status"] == "published"
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    assert await last_seq(shared_stream.url) == seq + 1  # only the delivery after it
    assert rejected_count(fn, "body_too_large") == count + 1
    logged = new_log(fn, log_at)
    assert "status=413 outcome=rejected reason=body_too_large" in logged
    assert_log_clean(logged, headers["Stripe-Signature"])


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_get_405_with_allow(invoice_paid_fn: FunctionProcess, method: str) -> None:
    fn = invoice_paid_fn
    count, log_at = rejected_count(fn, "method_not_allowed"), len(fn.log())
    response = httpx.request(method, fn.url, timeout=10)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.json()["error"] == "method_not_allowed"
    assert rejected_count(fn, "method_not_allowed") == count + 1
    assert "status=405 outcome=rejected reason=method_not_allowed" in new_log(fn, log_at)


@pytest.mark.parametrize("path", ["healthz", "readyz", "metrics"])
def test_probes_only_answer_get(invoice_paid_fn: FunctionProcess, path: str) -> None:
    response = httpx.post(invoice_paid_fn.url + path, timeout=10)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"


def test_health_readiness_and_metrics(invoice_paid_fn: FunctionProcess) -> None:
    fn = invoice_paid_fn
    health = httpx.get(fn.url + "healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "alive"}
    ready = httpx.get(fn.url + "readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}
    metrics = httpx.get(fn.url + "metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE stripe_bridge_webhooks_total counter" in metrics.text
    assert metric(fn.url, "stripe_bridge_process_start_time_seconds") > 0


def test_readyz_needs_the_stream_and_nats(
    nats_server: NatsServer, start_function: FunctionFactory
) -> None:
    fn = start_function("invoice_paid", NATS_URL=nats_server.url)

    def ready_status() -> int:
        return httpx.get(fn.url + "readyz", timeout=10).status_code

    assert ready_status() == 503  # connected, but there is no stream yet
    no_stream = post_event(fn.url, fresh_invoice())
    assert no_stream.status_code == 503
    assert no_stream.json()["error"] == "no_stream"
    assert int(no_stream.headers["Retry-After"]) > 0
    assert metric(fn.url, "stripe_bridge_publish_failures_total", reason="no_stream") == 1
    assert "status=503 outcome=failed reason=no_stream" in fn.log()
    provision_stream(nats_server.url)
    wait_until(lambda: ready_status() == 200, 30, "readyz 200 once the stream exists")
    nats_server.stop()
    wait_until(lambda: ready_status() == 503, 30, "readyz 503 while NATS is down")
    assert httpx.get(fn.url + "healthz").status_code == 200  # alive all the same


async def test_nats_down_gives_503_and_the_retry_succeeds(
    stream: NatsServer, start_function: FunctionFactory
) -> None:
    fn = start_function("invoice_paid", NATS_URL=stream.url)
    warm = post_event(fn.url, fresh_invoice())
    assert warm.json()["status"] == "published"
    stream.stop()
    wait_until(lambda: metric(fn.url, "stripe_bridge_nats_connected") == 0, 30, "disconnect")
    event = fresh_invoice()
    body = encode(event)
    headers = signed_headers(body)  # Stripe's retry resends the very same delivery
    log_at = len(fn.log())
    down = httpx.post(fn.url, content=body, headers=headers, timeout=30)
    assert down.status_code == 503
    assert down.json() == {"error": "nats_unavailable"}
    assert int(down.headers["Retry-After"]) > 0
    failures = metric(fn.url, "stripe_bridge_publish_failures_total", reason="nats_unavailable")
    assert failures >= 1
    assert "status=503 outcome=failed reason=nats_unavailable" in new_log(fn, log_at)
    assert_log_clean(new_log(fn, log_at), headers["Stripe-Signature"])

    stream.start()  # same port, same store dir: the stream and its messages are back
    wait_until(lambda: httpx.get(fn.url + "readyz").status_code == 200, 60, "reconnect")
    retried = httpx.post(fn.url, content=body, headers=headers, timeout=30)
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "published"  # the 503 did not mark it done
    ids = await stored_ids(stream.url)
    assert ids.count(event["id"]) == 1
    assert ids.count(warm.json()["id"]) == 1


@pytest.fixture
def redis_function(
    stream: NatsServer, redis_server: RedisServer, start_function: FunctionFactory
) -> FunctionProcess:
    return start_function(
        "invoice_paid",
        NATS_URL=stream.url,
        IDEMPOTENCY_BACKEND="redis",
        REDIS_URL=redis_server.url,
    )


def redis_cli(server: RedisServer, *args: str) -> str:
    command = ["redis-cli", "-p", str(server.port), *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


async def test_claim_held_elsewhere_gives_409_in_progress(
    stream: NatsServer, redis_server: RedisServer, redis_function: FunctionProcess
) -> None:
    fn = redis_function
    event = fresh_invoice()
    key = f"stripe-bridge:STRIPE:event:{event['id']}"
    # Another replica holds the lease: it is publishing this event right now.
    redis_cli(redis_server, "SET", key, "claimed:another-replica", "PX", "30000")
    log_at = len(fn.log())
    held = post_event(fn.url, event)
    assert held.status_code == 409
    assert "status=409 outcome=in_progress" in new_log(fn, log_at)
    assert held.json()["error"] == "in_progress"
    assert int(held.headers["Retry-After"]) > 0
    assert event["id"] not in await stored_ids(stream.url)
    assert metric(fn.url, "stripe_bridge_webhooks_total", outcome="in_progress") == 1
    # That replica died without finishing: its lease expires, Stripe's retry stores it.
    redis_cli(redis_server, "DEL", key)
    retried = post_event(fn.url, event)
    assert retried.json()["status"] == "published"
    assert redis_cli(redis_server, "GET", key) == "done"
    ttl_ms = int(redis_cli(redis_server, "PTTL", key))
    assert ttl_ms > 3 * 86400 * 1000  # remembered longer than Stripe's retry window


async def test_redis_down_gives_503_idempotency_unavailable(
    stream: NatsServer, redis_server: RedisServer, redis_function: FunctionProcess
) -> None:
    fn = redis_function
    assert post_event(fn.url, fresh_invoice()).json()["status"] == "published"
    seq = await last_seq(stream.url)
    redis_server.stop()
    event = fresh_invoice()
    body = encode(event)
    headers = signed_headers(body)
    log_at = len(fn.log())
    down = httpx.post(fn.url, content=body, headers=headers, timeout=10)
    assert down.status_code == 503
    assert down.json()["error"] == "idempotency_unavailable"
    assert int(down.headers["Retry-After"]) > 0
    assert await last_seq(stream.url) == seq
    assert (
        metric(fn.url, "stripe_bridge_idempotency_errors_total", backend="redis", operation="claim")
        == 1
    )
    assert "status=503 outcome=failed reason=idempotency_unavailable" in new_log(fn, log_at)
    assert_log_clean(new_log(fn, log_at), headers["Stripe-Signature"])
    # Redis is back (empty: it kept nothing): Stripe's retry of the same delivery is stored.
    redis_server.start()
    retried = httpx.post(fn.url, content=body, headers=headers, timeout=10)
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "published"
    assert (await stored_ids(stream.url)).count(event["id"]) == 1


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"STRIPE_SIGNATURE_TOLERANCE": "abc"}, "STRIPE_SIGNATURE_TOLERANCE"),
        ({"IDEMPOTENCY_BACKEND": "redis"}, "REDIS_URL"),
        ({"IDEMPOTENCY_BACKEND": "postgres"}, "IDEMPOTENCY_BACKEND"),
        ({"STRIPE_WEBHOOK_SECRET": "sk_live_not_a_webhook_secret"}, "whsec_"),
        ({"NATS_URL": "http://127.0.0.1:4222"}, "NATS_URL"),
        ({"MAX_BODY_BYTES": "-5"}, "MAX_BODY_BYTES"),
        ({"IDEMPOTENCY_LEASE_SECONDS": "5", "PUBLISH_TIMEOUT": "5"}, "IDEMPOTENCY_LEASE_SECONDS"),
        ({"STRIPE_WEBHOOK_SECRET": ""}, "STRIPE_WEBHOOK_SECRET is not set"),
    ],
)
def test_invalid_configuration_stops_the_function_with_one_line(
    env: dict[str, str], names: str
) -> None:
    source = REPO_ROOT / "functions" / "invoice_paid" / "main.py"
    full_env = {
        "PATH": "/usr/bin:/bin",
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "PORT": "1",  # never bound: the process must stop before serving
        **env,
    }
    result = subprocess.run(
        [sys.executable, "-m", "stripe_bridge.cli", "serve", "--source", str(source)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("stripe-bridge invoice_paid: invalid configuration:")
    assert names in lines[0]
    assert "sk_live_not_a_webhook_secret" not in lines[0]


def test_the_whole_log_never_shows_secrets_or_signatures(invoice_paid_fn: FunctionProcess) -> None:
    # Runs after the module's other requests (and makes its own): the process's entire
    # output, start-up included, must not contain a secret or any signature it received.
    fn = invoice_paid_fn
    signatures = []
    for secret in (SECRET, OTHER_SECRET):
        body = encode(fresh_invoice())
        headers = signed_headers(body, secret)
        signatures.append(headers["Stripe-Signature"].split("v1=")[1])
        httpx.post(fn.url, content=body, headers=headers, timeout=10)
    log = fn.log()
    assert "webhook status=200" in log
    assert "webhook status=400" in log
    assert_log_clean(log, *signatures)
    assert "whsec_" not in log
