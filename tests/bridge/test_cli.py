"""The command line against real servers: generate, send, tail, provision and dev."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from stripe_bridge import registry
from stripe_bridge.deploy.codegen import generated_files
from stripe_bridge.ops.natsserver import NatsServer, free_port
from stripe_bridge_testing.cli_runs import cli, cli_process
from stripe_bridge_testing.deliveries import (
    FIXTURES,
    SECRET,
    fixture_event,
    last_seq,
    post_event,
    stored_event,
)
from stripe_bridge_testing.natscluster import LocalNatsCluster
from stripe_bridge_testing.processes import FunctionProcess
from stripe_bridge_testing.repo import REPO_ROOT
from stripe_bridge_testing.waiting import wait_until

from ..conftest import FunctionFactory


def test_generated_files_match_the_registry() -> None:
    result = cli("generate", "--check", "--root", str(REPO_ROOT))
    assert result.returncode == 0, result.stdout
    table = (REPO_ROOT / "docs" / "event-types.md").read_text()
    for event_type in registry.EVENT_TYPES:
        assert f"| `{event_type.name}` | `functions/{event_type.function_name}` |" in table
        source = (REPO_ROOT / "functions" / event_type.function_name / "main.py").read_text()
        assert f'function = make_function("{event_type.function_name}")' in source
    # Other functions (billing) live beside them; every webhook function must be there.
    folders = {p.name for p in (REPO_ROOT / "functions").iterdir() if (p / "main.py").exists()}
    assert folders >= set(registry.function_names())


def test_generate_check_reports_drift(tmp_path: Path) -> None:
    # generate fills marked sections of hand-written docs; those must exist beforehand.
    shutil.copytree(REPO_ROOT / "docs", tmp_path / "docs")
    assert cli("generate", "--root", str(tmp_path)).returncode == 0
    assert cli("generate", "--check", "--root", str(tmp_path)).returncode == 0
    drifted = tmp_path / "functions" / "invoice_paid" / "main.py"
    drifted.write_text(drifted.read_text() + "# hand edit\n")
    result = cli("generate", "--check", "--root", str(tmp_path))
    assert result.returncode == 1
    assert result.stdout.strip() == f"out of date: {drifted}"
    assert set(generated_files(tmp_path)) >= {
        *(tmp_path / "functions" / name / "main.py" for name in registry.function_names()),
        tmp_path / "docs" / "event-types.md",
    }


async def test_send_a_sample_and_a_file(
    shared_stream: NatsServer, catch_all: FunctionProcess
) -> None:
    sample = cli("send", "invoice.paid", "--url", catch_all.url, "--secret", SECRET)
    assert sample.returncode == 0, sample.stdout + sample.stderr
    status, event_id, event_type, answer = sample.stdout.strip().split(" ", 3)
    assert (status, event_type, json.loads(answer)["status"]) == (
        "200",
        "invoice.paid",
        "published",
    )
    stored = await stored_event(shared_stream.url, event_id)
    assert stored["data"]["translation"]["invoice_id"]  # the built-in sample is translated

    file = FIXTURES / "subscription_updated_basil.json"
    sent = cli(
        "send",
        "customer.subscription.updated",
        "--url",
        catch_all.url,
        "--secret",
        SECRET,
        "--file",
        str(file),
    )
    assert sent.returncode == 0, sent.stdout
    # The file's event as it is: a second send of it is a duplicate.
    assert json.loads(sent.stdout.split(" ", 3)[3])["status"] in {"published", "duplicate"}
    again = cli(
        "send",
        "customer.subscription.updated",
        "--url",
        catch_all.url,
        "--secret",
        SECRET,
        "--file",
        str(file),
    )
    assert json.loads(again.stdout.split(" ", 3)[3])["status"] == "duplicate"


async def test_send_with_the_wrong_secret_fails(
    shared_stream: NatsServer, catch_all: FunctionProcess
) -> None:
    seq = await last_seq(shared_stream.url)
    result = cli("send", "invoice.paid", "--url", catch_all.url, "--secret", "whsec_wrong")
    assert result.returncode == 1
    assert result.stdout.startswith("400 ")
    assert "signature_mismatch" in result.stdout
    assert await last_seq(shared_stream.url) == seq


def test_tail_prints_new_events_and_stops_after_count(
    tmp_path: Path, stream: NatsServer, start_function: FunctionFactory
) -> None:
    fn = start_function("stripe_event", NATS_URL=stream.url)
    broken = fixture_event("invoice_paid", fresh_id=True)
    del broken["data"]["object"]["currency"]  # stored untranslated
    broken_file = tmp_path / "broken.json"
    broken_file.write_text(json.dumps(broken))
    sends = [
        ("invoice.paid",),
        ("charge.refunded",),
        ("invoice.paid", "--file", str(broken_file)),
    ]
    output = tmp_path / "tail.out"
    tail = cli_process("tail", "--nats-url", stream.url, "--count", "3", stdout=output)
    try:
        wait_until(lambda: "tailing stripe.>" in output.read_text(), 60, "tail subscribed")
        ids = []
        for args in sends:
            sent = cli("send", *args, "--url", fn.url, "--secret", SECRET)
            assert sent.returncode == 0, sent.stdout
            ids.append(sent.stdout.split()[1])
        assert tail.wait(15) == 0
    finally:
        tail.kill()
        tail.wait()
    lines = output.read_text().splitlines()[1:]
    assert len(lines) == 3
    assert lines[0].startswith("#1 stripe.test.invoice.paid " + ids[0])
    assert lines[1].startswith("#2 stripe.test.charge.refunded " + ids[1])
    assert lines[2].startswith(f"#3 stripe.test.invoice.paid {broken['id']} subject=in_")
    assert lines[2].endswith("UNTRANSLATED(KeyError: 'currency')")

    whole = cli("tail", "--nats-url", stream.url, "--all", "--json", "--count", "3")
    assert whole.returncode == 0, whole.stdout
    # stdout is pure JSON, one event per line; the banner went to stderr.
    assert whole.stderr.startswith("tailing stripe.>")
    events = [json.loads(line) for line in whole.stdout.splitlines()]
    assert [e["id"] for e in events] == ids
    assert events[0]["type"] == "com.stripe.invoice.paid"
    assert events[2]["data"]["stripe"] == broken


async def test_provision_is_idempotent(nats_server: NatsServer) -> None:
    def provision(*args: str) -> str:
        result = cli("provision", "--nats-url", nats_server.url, *args)
        assert result.returncode == 0, result.stdout
        return result.stdout.strip()

    assert provision() == "stream STRIPE (stripe.>, R1): created"
    assert provision() == "stream STRIPE (stripe.>, R1): unchanged"
    assert provision("--max-age-days", "7").endswith(": updated")
    assert provision("--max-age-days", "7").endswith(": unchanged")
    assert provision("--max-age-days", "7", "--duplicate-window-minutes", "30").endswith(
        ": updated"
    )

    import nats

    nc = await nats.connect(nats_server.url)
    try:
        config = (await nc.jetstream().stream_info("STRIPE")).config
    finally:
        await nc.close()
    assert config.subjects == ["stripe.>"]
    assert config.max_age == 7 * 86400
    assert config.duplicate_window == 30 * 60
    assert config.storage == "file"


def test_provision_updates_replicas_on_a_cluster(tmp_path: Path) -> None:
    with LocalNatsCluster(tmp_path / "cluster") as cluster:
        url = cluster.url()

        def provision(*args: str) -> str:
            result = cli("provision", "--nats-url", url, *args)
            assert result.returncode == 0, result.stdout
            assert cluster.passwords["admin"] not in result.stdout
            return result.stdout.strip()

        assert provision() == "stream STRIPE (stripe.>, R1): created"
        assert provision("--replicas", "3") == "stream STRIPE (stripe.>, R3): updated"
        assert provision("--replicas", "3") == "stream STRIPE (stripe.>, R3): unchanged"
        wait_until(
            lambda: all(cluster.local_stream_state(i, "STRIPE") is not None for i in range(3)),
            15,
            "a replica on every node",
        )


def test_provision_replicas_beyond_the_cluster_fails_clearly(nats_server: NatsServer) -> None:
    assert cli("provision", "--nats-url", nats_server.url).returncode == 0
    # One server cannot hold three replicas: the update is refused, and said so on one line
    # (exit UNAVAILABLE: NATS refused it).
    result = cli("provision", "--nats-url", nats_server.url, "--replicas", "3")
    assert result.returncode == 3
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"stripe-bridge provision: {nats_server.url}: ")


def test_provision_without_nats_fails_clearly() -> None:
    result = cli("provision", "--nats-url", f"nats://127.0.0.1:{free_port()}")
    assert result.returncode == 3  # UNAVAILABLE
    assert result.stderr.startswith("stripe-bridge provision: nats://127.0.0.1:")
    assert len(result.stderr.strip().splitlines()) == 1


def nats_children(data_dir: Path) -> list[int]:
    """Pids of running nats-server processes whose store is under ``data_dir``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (
            state != "Z"
            and args[0].endswith(b"nats-server")
            and str(data_dir).encode() in b" ".join(args)
        ):
            pids.append(int(proc.name))
    return pids


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_dev_serves_then_stops_with_its_nats_server(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    port, nats_port = free_port(), free_port()
    data_dir = tmp_path / "dev"
    output = tmp_path / "dev.out"
    env_free = {k: v for k, v in os.environ.items() if k != "STRIPE_WEBHOOK_SECRET"}
    with output.open("wb") as out:
        dev = subprocess.Popen(
            [
                sys.executable,
                "-m", "stripe_bridge.cli", "dev",
                "--port", str(port), "--nats-port", str(nats_port), "--data-dir", str(data_dir),
            ],
            stdout=out, stderr=subprocess.STDOUT, env=env_free,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}/"
    try:

        def ready() -> bool:
            assert dev.poll() is None, output.read_text()
            try:
                return httpx.get(base + "readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 30, "stripe-bridge dev")
        banner = output.read_text()
        secret = (data_dir / "webhook_secret").read_text().strip()
        assert f"stripe-bridge dev is serving on {base}" in banner
        assert secret in banner
        assert f"stripe listen --forward-to {base}" in banner
        assert len(nats_children(data_dir)) == 1

        # send finds dev's secret in the data dir, like a developer's second shell.
        sent = cli("send", "invoice.paid", "--url", base, "--data-dir", str(data_dir))
        assert sent.returncode == 0, sent.stdout
        assert '"status":"published"' in sent.stdout.replace(" ", "")
        one_type = base + "invoice.paid"
        event = fixture_event("invoice_paid", fresh_id=True)
        assert post_event(one_type, event, secret).json()["status"] == "published"
        other = post_event(one_type, fixture_event("charge_succeeded", fresh_id=True), secret)
        assert other.json()["error"] == "unsupported_event_type"

        dev.send_signal(stop_signal)
        # Ctrl-C may end as the conventional 130; Kubernetes' SIGTERM is a clean exit.
        clean = {0, 130} if stop_signal is signal.SIGINT else {0}
        assert dev.wait(30) in clean, output.read_text()
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
    assert nats_children(data_dir) == []


def test_dev_with_its_nats_port_taken_fails_clearly(
    tmp_path: Path, shared_stream: NatsServer
) -> None:
    data_dir = tmp_path / "dev"
    result = cli(
        "dev", "--port", str(free_port()), "--nats-port", str(shared_stream.port),
        "--data-dir", str(data_dir),
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"stripe-bridge dev: cannot start nats-server on port {shared_stream.port}"
    )
    assert len(result.stderr.strip().splitlines()) == 1
    assert nats_children(data_dir) == []


def test_dev_with_invalid_configuration_stops_its_nats_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "dev"
    env = {**os.environ, "STRIPE_SIGNATURE_TOLERANCE": "abc"}
    result = subprocess.run(
        [
            sys.executable, "-m", "stripe_bridge.cli", "dev",
            "--port", str(free_port()), "--nats-port", str(free_port()),
            "--data-dir", str(data_dir),
        ],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("stripe-bridge: invalid configuration: STRIPE_SIGNATURE_TOLERANCE: ")
    assert nats_children(data_dir) == []
