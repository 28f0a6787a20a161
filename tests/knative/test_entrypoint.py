"""The container entrypoint, started exactly as Knative starts it, stops gracefully.

``stripe-bridge-serve`` (the Containerfile's ENTRYPOINT) runs with only environment
variables, like a Knative revision: PORT, FUNCTION_SOURCE, FUNCTION_TARGET and the
settings the rendered Service sets. Knative sends SIGTERM when it scales a pod down; a
webhook still being received must then be stored and answered 200, the NATS connection
drained and the last metrics pushed before the process exits 0. Real nats-server,
redis-server and Pushgateway; no container engine (none runs here), so the process runs
from the .venv.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.deliveries import (
    SECRET,
    fixture_event,
    post_event,
    signed_headers,
    stream_messages,
)
from stripe_bridge_testing.processes import (
    FunctionProcess,
    PushgatewayServer,
    RedisServer,
)
from stripe_bridge_testing.repo import REPO_ROOT
from stripe_bridge_testing.waiting import wait_until

FUNCTION = "invoice_paid"
INSTANCE = "stripe-invoice-paid-00001-deployment-abc12"


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.load(response)


def nats_client_names(server: NatsServer, state: str = "open") -> dict[str, str]:
    """Client name -> close reason ("" while open) from nats-server's /connz."""
    connz = get_json(f"http://127.0.0.1:{server.monitor_port}/connz?state={state}&limit=1024")
    return {c.get("name", ""): c.get("reason", "") for c in connz.get("connections") or []}


def metric_value(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as response:
        return str(response.read().decode())


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def read_response(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of one HTTP/1.1 response (the server closes after it)."""
    sock.settimeout(20)
    data = b""
    while True:
        part = sock.recv(65536)
        if not part:
            break
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def test_sigterm_finishes_in_flight_webhook_drains_nats_and_pushes_metrics(
    stream: NatsServer,
    redis_server: RedisServer,
    pushgateway: PushgatewayServer,
    tmp_path: Path,
) -> None:
    # The environment the rendered Knative Service gives the container (plus PORT,
    # which Knative sets; FunctionProcess picks a free one and binds to loopback), and a
    # longer body grace after SIGTERM (below).
    env = {
        "FUNCTION_SOURCE": str(REPO_ROOT / "functions" / FUNCTION / "main.py"),
        "FUNCTION_TARGET": "handle",
        "FUNCTION_NAME": FUNCTION,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        "NATS_URL": stream.url,
        "NATS_STREAM": "STRIPE",
        "IDEMPOTENCY_BACKEND": "redis",
        "REDIS_URL": redis_server.url,
        "PUSHGATEWAY_URL": pushgateway.url,
        # Long enough that only the shutdown push can deliver the second webhook's count.
        "PUSHGATEWAY_MIN_INTERVAL": "300",
        "INSTANCE_ID": INSTANCE,
        # The body's end is sent after the listener is seen closed, which on a loaded
        # machine can take longer than the default 2 s grace (tests/test_http.py checks it).
        "STOPPING_BODY_GRACE_SECONDS": "30",
    }
    entrypoint = [str(Path(sys.executable).parent / "stripe-bridge-serve")]
    fn = FunctionProcess(FUNCTION, env, tmp_path / "fn", REPO_ROOT, command=entrypoint)
    fn.start()
    try:
        first = fixture_event(FUNCTION, fresh_id=True)
        assert post_event(fn.url, first).json()["status"] == "published"
        assert f"stripe-bridge/{FUNCTION}" in nats_client_names(stream)

        slow = fixture_event(FUNCTION, fresh_id=True)
        body = json.dumps(slow).encode()
        headers = signed_headers(body) | {"Transfer-Encoding": "chunked", "Host": "fn"}
        request = b"POST / HTTP/1.1\r\n" + b"".join(
            f"{k}: {v}\r\n".encode() for k, v in headers.items()
        )
        with socket.create_connection(("127.0.0.1", fn.port), timeout=5) as sock:
            sock.sendall(request + b"\r\n" + chunk(body[:-16]))
            wait_until(
                lambda: (
                    metric_value(fetch(fn.url + "metrics"), "stripe_bridge_inflight_requests")
                    == 1.0
                ),
                30,
                "webhook in flight",
            )
            assert fn.process is not None
            fn.process.send_signal(signal.SIGTERM)
            # Uvicorn stops listening at once but keeps the in-flight request.
            wait_until(lambda: refuses_connections(fn.port), 30, "listener closed")
            assert fn.alive(), "exited with a webhook still in flight"
            sock.sendall(chunk(body[-16:]) + b"0\r\n\r\n")
            status, answer = read_response(sock)
        assert status == 200, answer
        assert answer == {"status": "published", "id": slow["id"], "stream": "STRIPE", "seq": 2}
        assert fn.process.wait(timeout=25) == 0, fn.log()
    finally:
        fn.stop()

    stored = [m.headers["Nats-Msg-Id"] for m in _run(stream_messages(stream.url))]
    assert stored == [first["id"], slow["id"]]
    assert f"stripe-bridge/{FUNCTION}" not in nats_client_names(stream)
    closed = nats_client_names(stream, "closed")
    assert closed.get(f"stripe-bridge/{FUNCTION}") == "Client Closed", closed
    pushed = fetch(pushgateway.url + "/metrics")
    group = {"job": "stripe-bridge", "function": FUNCTION, "instance": INSTANCE}
    assert metric_value(pushed, "stripe_bridge_webhooks_total", outcome="published", **group) == 2
    assert metric_value(pushed, "stripe_bridge_inflight_requests", **group) == 0
    assert "drain failed" not in fn.log() and "push failed" not in fn.log(), fn.log()


def _run(coroutine: Any) -> Any:
    import asyncio

    return asyncio.run(coroutine)
