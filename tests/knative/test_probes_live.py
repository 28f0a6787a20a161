"""The probes of the rendered Knative Services, run as the kubelet runs them on a live function.

Path and port come from the rendered manifest (a probe without a port targets the serving
port: PORT here, as queue-proxy rewrites it). docs/configuration.md says: ``/healthz`` 200
while the process lives; ``/readyz`` 200 only with NATS connected and the stream there;
after SIGTERM the server stops listening at once (both probes fail; queue-proxy has
already answered Knative's probes with 503 since its drain began) while in-flight
webhooks finish.
"""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path
from typing import Any

import httpx
import yaml
from stripe_bridge.billing.catalog import BILLING_FUNCTIONS
from stripe_bridge.billing.usage import provision_usage_streams
from stripe_bridge.deploy import knative
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.deliveries import fixture_event, signed_headers
from stripe_bridge_testing.repo import REPO_ROOT
from stripe_bridge_testing.rollout import http_probe
from stripe_bridge_testing.waiting import wait_until

from ..conftest import FunctionFactory

FUNCTION = "invoice_paid"
#: What the Checkout and Portal functions need to start (they call Stripe per request).
#: One usage record (docs/billing.md, the usage function's body).
RECORD = {"meter": "tokens", "customer_id": "cus_probe", "value": 1, "id": "probe-1"}
STRIPE_ENV = {"STRIPE_API_KEY": "sk_test_probe", "CHECKOUT_SUCCESS_URL": "https://app.example/done"}


def rendered_probes(function_name: str) -> dict[str, Any]:
    specs = {s.function_name: s.service_name for s in knative.function_specs()}
    specs |= {fn.name: fn.service_name for fn in BILLING_FUNCTIONS}
    path = REPO_ROOT / "knative" / "production" / f"{specs[function_name]}.yaml"
    (service,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    (container,) = service["spec"]["template"]["spec"]["containers"]
    probes = {kind: container[f"{kind}Probe"] for kind in ("readiness", "liveness")}
    for probe in probes.values():
        assert "port" not in probe["httpGet"], "Knative probes the serving port"
    return probes


def probe(port: int, spec: dict[str, Any]) -> bool:
    # Knative's defaults after admission (knative_rules.set_defaults): 1 s timeout.
    return http_probe("127.0.0.1", port, spec["httpGet"]["path"], 1.0)


def test_probes_answer_as_documented_with_nats_up_down_and_during_drain(
    stream: NatsServer, start_function: FunctionFactory, tmp_path: Path
) -> None:
    probes = rendered_probes(FUNCTION)
    # The body finished after SIGTERM comes after this test's own probes, which on a loaded
    # machine take longer than the default 2 s grace; the grace itself is the setting's
    # (tests/test_http.py checks its default, tests/bridge/test_bad_input.py its end).
    fn = start_function(
        FUNCTION, NATS_URL=stream.url, NATS_STREAM="STRIPE", STOPPING_BODY_GRACE_SECONDS="30"
    )
    wait_until(lambda: probe(fn.port, probes["readiness"]), 30, "ready with NATS up")
    assert probe(fn.port, probes["liveness"])

    stream.stop()
    wait_until(lambda: not probe(fn.port, probes["readiness"]), 60, "not ready with NATS down")
    assert probe(fn.port, probes["liveness"]), "NATS down must not restart the container"

    stream.start()
    wait_until(lambda: probe(fn.port, probes["readiness"]), 60, "ready again with NATS back")

    # A webhook still being received keeps the process draining after SIGTERM.
    body = json.dumps(fixture_event(FUNCTION, fresh_id=True)).encode()
    headers = signed_headers(body) | {"Content-Length": str(len(body)), "Host": "fn"}
    head = b"POST / HTTP/1.1\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
    with socket.create_connection(("127.0.0.1", fn.port), timeout=5) as sock:
        sock.sendall(head + b"\r\n" + body[:-8])
        assert fn.process is not None
        fn.process.send_signal(signal.SIGTERM)
        wait_until(lambda: not probe(fn.port, probes["liveness"]), 30, "listener closed")
        assert fn.alive(), "exited with a webhook in flight"
        assert not probe(fn.port, probes["readiness"])
        sock.sendall(body[-8:])
        assert b" 200 " in sock.recv(4096).split(b"\r\n", 1)[0]
    assert fn.process.wait(timeout=knative.APP_SHUTDOWN_SECONDS) == 0, fn.log()


async def test_billing_services_stay_ready_and_refuse_quickly_while_nats_is_down(
    tmp_path: Path, start_function: FunctionFactory
) -> None:
    # A usage pod answers its own 503 + Retry-After without NATS (docs/billing.md): were it
    # unready then, every usage pod would leave the route in an outage and callers would
    # wait in Knative's activator until their timeout instead of being told to retry.
    server = NatsServer(tmp_path / "nats").start()
    try:
        import nats

        nc = await nats.connect(server.url)
        try:
            await provision_usage_streams(nc.jetstream())
        finally:
            await nc.close()
        usage = rendered_probes("billing_usage")
        fn = start_function(
            "billing_usage", NATS_URL=server.url, PUBLISH_TIMEOUT="1", RETRY_AFTER_SECONDS="7"
        )
        wait_until(lambda: http_probe("127.0.0.1", fn.port, "/readyz", 1.0), 30, "NATS up")
        server.stop()
        # The function knows NATS is down (its own /readyz says so)...
        wait_until(
            lambda: not http_probe("127.0.0.1", fn.port, "/readyz", 1.0), 60, "NATS down seen"
        )
        # ...and the Service still routes to it: ready, alive, refusing with Retry-After.
        assert probe(fn.port, usage["readiness"]), "unready with NATS down: callers would hang"
        assert probe(fn.port, usage["liveness"])
        async with httpx.AsyncClient(base_url=fn.url, timeout=15) as client:
            response = await client.post("/", json=RECORD)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "7"
    finally:
        server.stop()
    # Every billing Service probes the same paths (Checkout and Portal call Stripe per
    # request, the entitlements function answers degraded without NATS): ready once serving.
    for name, env in (
        ("billing_checkout", STRIPE_ENV),
        ("billing_portal", STRIPE_ENV),
        ("billing_entitlements", {"NATS_URL": "nats://127.0.0.1:1"}),
    ):
        probes = rendered_probes(name)
        assert probes == usage, name
        other = start_function(name, **env)
        assert probe(other.port, probes["readiness"]), name
