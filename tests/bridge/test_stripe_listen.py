"""``dev --stripe-listen`` with a stand-in of the Stripe CLI on PATH, and without one.

The stand-in behaves as the CLI's documented ``listen`` does (docs.stripe.com/cli/listen):
``--print-secret`` prints the listener's ``whsec_`` secret and exits; with
``--forward-to URL --events ...`` it forwards events signed with that secret (here one
real fixture event, signed as Stripe signs: ``t=<ts>,v1=HMAC-SHA256(secret, "<ts>.<body>")``),
prints what the endpoint answered, and runs until stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from stripe_bridge import registry
from stripe_bridge.ops.natsserver import free_port
from stripe_bridge_testing.deliveries import FIXTURES
from stripe_bridge_testing.waiting import wait_until

CLI_SECRET = "whsec_stripe_cli_" + "b" * 24

FAKE_STRIPE = r"""#!{python}
import hashlib, hmac, json, os, sys, time, urllib.request
from pathlib import Path

record = Path({record!r})
args = sys.argv[1:]
record.open("a").write(json.dumps(args) + "\n")
if args == ["listen", "--print-secret"]:
    print({secret!r})
    sys.exit(0)
url = args[args.index("--forward-to") + 1]
record.open("a").write(json.dumps({{"pid": os.getpid()}}) + "\n")
body = Path({event!r}).read_bytes()
stamp = str(int(time.time()))
signature = hmac.new({secret!r}.encode(), (stamp + ".").encode() + body, hashlib.sha256)
headers = {{"Content-Type": "application/json",
            "Stripe-Signature": f"t={{stamp}},v1={{signature.hexdigest()}}"}}
print("Ready! Your webhook signing secret is {secret} (^C to quit)", file=sys.stderr)
for _ in range(200):  # the bridge may still be starting: retry for up to 20 s
    try:
        request = urllib.request.Request(url, data=body, headers=headers)
        with urllib.request.urlopen(request, timeout=5) as answer:
            record.open("a").write(json.dumps({{"status": answer.status}}) + "\n")
            break
    except OSError:
        time.sleep(0.1)
time.sleep(600)
"""


def fake_stripe(bin_dir: Path, record: Path) -> None:
    bin_dir.mkdir()
    script = bin_dir / "stripe"
    script.write_text(
        FAKE_STRIPE.format(
            python=sys.executable,
            record=str(record),
            secret=CLI_SECRET,
            event=str(FIXTURES / "invoice_paid.json"),
        )
    )
    script.chmod(0o755)


def dev_command(tmp_path: Path, port: int) -> list[str]:
    return [
        sys.executable, "-m", "stripe_bridge.cli", "dev", "--stripe-listen",
        "--port", str(port), "--nats-port", str(free_port()),
        "--data-dir", str(tmp_path / "dev"),
    ]  # fmt: skip


def test_the_stripe_cli_forwards_and_its_secret_is_accepted(tmp_path: Path) -> None:
    record = tmp_path / "stripe-calls.jsonl"
    fake_stripe(tmp_path / "bin", record)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "STRIPE_WEBHOOK_SECRET"}
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}"
    output = tmp_path / "dev.out"
    with output.open("wb") as out:
        dev = subprocess.Popen(
            dev_command(tmp_path, port), stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:

        def calls() -> list[object]:
            assert dev.poll() is None, output.read_text()
            text = record.read_text() if record.exists() else ""
            return [json.loads(line) for line in text.splitlines()]

        wait_until(lambda: {"status": 200} in calls(), 30, "the forwarded event stored")
        dev.send_signal(signal.SIGTERM)
        assert dev.wait(30) == 0, output.read_text()
    finally:
        if dev.poll() is None:
            dev.kill()
            dev.wait()
    listen = [c for c in calls_of(record) if isinstance(c, list) and "--forward-to" in c]
    assert calls_of(record)[0] == ["listen", "--print-secret"]
    assert listen == [
        [
            "listen",
            "--forward-to", f"http://127.0.0.1:{port}/",
            "--events", ",".join(t.name for t in registry.EVENT_TYPES),
        ]
    ]  # fmt: skip
    (pid,) = [c["pid"] for c in calls_of(record) if isinstance(c, dict) and "pid" in c]
    wait_until(lambda: not Path(f"/proc/{pid}").exists(), 60, "the listener stopped with dev")
    banner = output.read_text()
    assert f"and the Stripe CLI's {CLI_SECRET}" in banner
    # The dev secret is still accepted beside the CLI's.
    assert (tmp_path / "dev" / "webhook_secret").read_text().strip() in banner


def calls_of(record: Path) -> list[object]:
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_without_the_stripe_cli_one_clear_line_and_nothing_started(tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}
    result = subprocess.run(
        dev_command(tmp_path, free_port()), env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 127
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("stripe-bridge dev: --stripe-listen needs the Stripe CLI: `stripe`")
    assert "https://docs.stripe.com/stripe-cli" in line
    assert result.stdout == ""
    assert not (tmp_path / "dev" / "jetstream").exists()  # no nats-server was started
