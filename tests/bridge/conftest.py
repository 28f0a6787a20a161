"""Fixtures of the bridge tests: servers shared by a module where no test stops them.

Tests that stop or restart a server (NATS or Redis outages) use the function-scoped
fixtures of tests/conftest.py instead, so a shared server is never left broken.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.processes import FunctionProcess

from ..conftest import function_process, provision_stream


@pytest.fixture(scope="module")
def shared_stream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """A nats-server with the STRIPE stream, shared by the tests of one module.

    Tests on it use fresh event ids and compare the stream before and after, so they do
    not depend on each other.
    """
    server = NatsServer(tmp_path_factory.mktemp("nats"))
    server.start()
    try:
        provision_stream(server.url)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def catch_all(
    shared_stream: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FunctionProcess]:
    """The catch-all ``stripe_event`` function on ``shared_stream`` (memory idempotency)."""
    process = function_process(
        "stripe_event", tmp_path_factory.mktemp("fn"), NATS_URL=shared_stream.url
    )
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def invoice_paid_fn(
    shared_stream: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FunctionProcess]:
    """The per-type ``invoice_paid`` function on ``shared_stream``, with a small body limit."""
    process = function_process(
        "invoice_paid",
        tmp_path_factory.mktemp("fn"),
        NATS_URL=shared_stream.url,
        MAX_BODY_BYTES="16384",
    )
    try:
        yield process
    finally:
        process.stop()
