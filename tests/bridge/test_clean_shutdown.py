"""A clean SIGTERM (Knative scaling to zero) is no news: nothing logged above INFO."""

from __future__ import annotations

from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.deliveries import fixture_event, post_event

from ..conftest import FunctionFactory


def test_sigterm_after_publishing_logs_no_warning(
    stream: NatsServer, start_function: FunctionFactory
) -> None:
    fn = start_function("invoice_paid", NATS_URL=stream.url)
    answer = post_event(fn.url, fixture_event("invoice_paid", fresh_id=True))
    assert answer.status_code == 200  # the NATS connection is open
    assert fn.stop() == 0
    assert "WARNING" not in fn.log()
    assert "nats disconnected" not in fn.log()
