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
from stripe_bridge import registry
from stripe_bridge.billing.catalog import BILLING_FUNCTIONS
from stripe_bridge.billing.usage import provision_usage_streams
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge.server import load_function

from .conftest import provision_stream
from .helpers import REPO_ROOT, SECRET

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


@pytest.fixture(params=FUNCTIONS)
async def client(
    request: pytest.FixtureRequest, nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of one function, configured as its Knative Service would be."""
    for name, value in {
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "NATS_URL": nats.url,
        "MAX_BODY_BYTES": str(LIMIT),
        "STRIPE_API_KEY": "sk_test_not_called",
        "CHECKOUT_SUCCESS_URL": "https://app.example/welcome",
    }.items():
        monkeypatch.setenv(name, value)
    source: Path = REPO_ROOT / "functions" / request.param / "main.py"
    app, function = load_function(source)
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
