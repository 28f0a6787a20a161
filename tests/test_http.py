"""One HTTP contract for every function under functions/, webhook and billing alike.

Each function is loaded by ``stripe-bridge serve``'s loader and called in process:
probes on GET/HEAD (405 ``Allow: GET`` otherwise), POST only elsewhere (405 ``Allow:
POST``), 413 for a body over ``MAX_BODY_BYTES`` whether declared or streamed, and every
refusal counted in ``/metrics`` and logged in one line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import Message
from stripe_bridge import registry
from stripe_bridge.asgi import HttpRequest
from stripe_bridge.billing.catalog import BILLING_FUNCTIONS
from stripe_bridge.billing.usage import provision_usage_streams
from stripe_bridge.http import STOPPING_BODY_GRACE_SECONDS, BodyReader
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge.server import GRACEFUL_SHUTDOWN_SECONDS, load_function
from stripe_bridge_testing.deliveries import SECRET
from stripe_bridge_testing.repo import REPO_ROOT

from .conftest import provision_stream

FUNCTIONS = [*registry.function_names(), *(f.name for f in BILLING_FUNCTIONS)]
LIMIT = 2048


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server with the STRIPE and USAGE streams: every function is ready."""
    import nats as nats_py

    with NatsServer(tmp_path_factory.mktemp("nats")) as server:
        provision_stream(server.url)

        async def usage_streams() -> None:
            nc = await nats_py.connect(server.url)
            try:
                await provision_usage_streams(nc.jetstream())
            finally:
                await nc.close()

        asyncio.run(usage_streams())
        yield server


def configure(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """The environment of a function as its Knative Service sets it, plus ``env``."""
    required = {
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "STRIPE_API_KEY": "sk_test_not_called",
        "CHECKOUT_SUCCESS_URL": "https://app.example/welcome",
    }
    for name, value in (required | env).items():
        monkeypatch.setenv(name, value)


def source_of(function_name: str) -> Path:
    """The file ``stripe-bridge serve`` loads for ``function_name``."""
    return REPO_ROOT / "functions" / function_name / "main.py"


@pytest.fixture(params=FUNCTIONS)
async def client(
    request: pytest.FixtureRequest, nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of one function, configured as its Knative Service would be."""
    configure(monkeypatch, NATS_URL=nats.url, MAX_BODY_BYTES=str(LIMIT))
    app, function = load_function(source_of(request.param))
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fn") as http:
            yield http
    finally:
        await function.runtime.close()


async def test_probes(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz"):
        for method in ("GET", "HEAD"):
            assert (await client.request(method, path)).status_code == 200, (method, path)
    assert (await client.get("/healthz")).json() == {"status": "alive"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    metrics = await client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in metrics.text
    for path in ("/healthz", "/readyz", "/metrics"):
        refused = await client.post(path, content=b"{}")
        assert refused.status_code == 405
        assert refused.headers["Allow"] == "GET"


async def test_refusals_are_counted_and_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="stripe_bridge")
    for method in ("GET", "PUT", "DELETE"):
        refused = await client.request(method, "/")
        assert refused.status_code == 405
        assert refused.headers["Allow"] == "POST"
    declared = await client.post("/", content=b"x" * (LIMIT + 1))

    async def streamed() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x" * LIMIT

    chunked = await client.post("/", content=streamed())
    assert (declared.status_code, chunked.status_code) == (413, 413)
    metrics = (await client.get("/metrics")).text
    assert 'method_not_allowed"} 3.0' in metrics
    assert 'body_too_large"} 2.0' in metrics
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("stripe_bridge")]
    assert sum("status=405" in line for line in lines) == 3
    assert sum("status=413" in line for line in lines) == 2


@pytest.mark.parametrize("function_name", FUNCTIONS)
async def test_the_graceful_shutdown_follows_the_configured_publish_timeout_and_body_grace(
    function_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The window was the defaults' 7 s whatever PUBLISH_TIMEOUT said: a delivery still
    # waiting for a 15 s PubAck was cut without an answer after SIGTERM.
    configure(monkeypatch, PUBLISH_TIMEOUT="15", STOPPING_BODY_GRACE_SECONDS="30")
    _app, function = load_function(source_of(function_name))
    try:
        assert function.reader.stopping_grace == 30
        assert function.graceful_shutdown_seconds() == 45
    finally:
        await function.runtime.close()


@pytest.mark.parametrize("function_name", FUNCTIONS)
async def test_by_default_a_body_gets_2_s_after_sigterm_and_requests_7_s(
    function_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch)
    _app, function = load_function(source_of(function_name))
    try:
        assert function.reader.stopping_grace == STOPPING_BODY_GRACE_SECONDS == 2
        assert function.graceful_shutdown_seconds() == GRACEFUL_SHUTDOWN_SECONDS == 7
    finally:
        await function.runtime.close()


async def test_after_sigterm_a_stalled_body_gets_the_configured_grace_not_its_read_timeout() -> (
    None
):
    reader = BodyReader(LIMIT, timeout=600, stopping_grace=0.2)

    async def receive() -> Message:
        await asyncio.Event().wait()  # a client that sent its headers and then nothing
        raise AssertionError("unreachable")

    request = HttpRequest({"type": "http", "method": "POST", "path": "/", "headers": []}, receive)
    reading = asyncio.create_task(reader.read(request))
    reader.begin_shutdown()
    done, _ = await asyncio.wait([reading], timeout=60)
    assert done, "the read outlived the grace"
    assert isinstance(reading.exception(), TimeoutError)
