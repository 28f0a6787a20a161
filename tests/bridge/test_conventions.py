"""CLI conventions (docs/cli.md): --version, JSON-only stdout, one exit-code table, one-line
configuration errors, LOG_FORMAT=json."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from stripe_bridge import __version__
from stripe_bridge.cli import build_parser, main
from stripe_bridge.ops.natsserver import NatsServer, free_port
from stripe_bridge_testing.deliveries import fixture_event, post_event
from stripe_bridge_testing.repo import REPO_ROOT
from stripe_bridge_testing.waiting import wait_until

from ..conftest import FunctionFactory

#: Every command with --json, and the tests that load its stdout as JSON.
JSON_COMMANDS = {
    "tail": "tests/bridge/test_cli.py (tail --all --json)",
    "tier": "tests/billing/test_projector.py (tier --json; unknown customer: empty stdout)",
    "show": "tests/nats_cluster/test_replay_filters.py (show --json; not found: empty stdout)",
    "redrive": "tests/consumers/test_example.py (redrive --json, one object per line)",
}


def commands_with(option: str, parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    """Every (nested) subcommand of ``parser`` that takes ``option``."""
    found = set()
    for action in parser._actions:
        if option in action.option_strings and prefix:
            found.add(prefix.strip())
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= commands_with(option, sub, f"{prefix} {name}")
    return found


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"stripe-bridge {__version__}\n"


def test_every_json_option_has_a_test_of_pure_json_stdout() -> None:
    assert commands_with("--json", build_parser()) == set(JSON_COMMANDS)


def test_commands_return_exit_codes_from_the_one_table() -> None:
    # A bare number is a code outside the table's reach: every command returns ExitCode.
    sources = [*(REPO_ROOT / "shared" / "stripe_bridge" / "commands").glob("*.py")]
    sources.append(REPO_ROOT / "shared" / "stripe_bridge" / "cli.py")
    bare = [
        f"{path.name}: {line.strip()}"
        for path in sources
        for line in path.read_text().splitlines()
        if re.match(r"\s*return \d+\b", line)
    ]
    assert bare == []


@pytest.mark.parametrize(
    ("argv", "variable", "value"),
    [
        (["serve", "--source", "functions/stripe_event/main.py"], "PORT", "eighty"),
        (["serve", "--source", "functions/stripe_event/main.py"], "PORT", "70000"),
        (["provision"], "NATS_CONNECT_TIMEOUT", "soon"),
        (["show", "evt_x"], "NATS_STREAM", "no spaces allowed"),
        (["tail"], "LOG_FORMAT", "xml"),
    ],
)
def test_a_bad_environment_variable_is_one_config_line(
    argv: list[str], variable: str, value: str
) -> None:
    env = {**os.environ, variable: value}
    result = subprocess.run(
        [sys.executable, "-m", "stripe_bridge.cli", *argv],
        env=env, capture_output=True, text=True, timeout=30, cwd=REPO_ROOT,
    )  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"stripe-bridge: invalid configuration: {variable}: ")
    assert value not in line  # the variable is named, its value never echoed (secrets)
    assert result.stdout == ""


async def test_log_format_json_makes_every_log_line_json(
    stream: NatsServer, start_function: FunctionFactory
) -> None:
    fn = start_function(NATS_URL=stream.url, LOG_FORMAT="json")
    event = fixture_event("invoice_paid", fresh_id=True)
    assert post_event(fn.url, event).status_code == 200
    fn.stop()
    lines = [line for line in fn.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # each line, or this raises
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(event["id"] in r["message"] for r in records)


@pytest.mark.parametrize(
    "command", ["forward-openmeter", "project-tiers", "project-lifecycle", "count-usage"]
)
def test_log_format_json_reaches_every_consumer(
    command: str, stream: NatsServer, tmp_path: Path
) -> None:
    # Each consumer sets up logging in the one runner: started, bound (its /metrics answers),
    # stopped by SIGTERM, and every line it wrote on the way is JSON.
    port = free_port()
    env = {
        **os.environ,
        "LOG_FORMAT": "json",
        "NATS_URL": stream.url,
        "OPENMETER_URL": "http://127.0.0.1:9",
        "OPENMETER_API_KEY": "om_test",
    }
    log_file = tmp_path / f"{command}.log"
    with log_file.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "stripe_bridge.cli", command, "--metrics-port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=log, cwd=REPO_ROOT,
        )  # fmt: skip
        try:
            wait_until(lambda: metrics_answer(port), 30, f"{command} bound")
            process.terminate()
            assert process.wait(timeout=30) == 0
        finally:
            process.kill()
            process.wait()
    records = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    assert any(record["message"] == f"{command} stopped" for record in records), records


def metrics_answer(port: int) -> bool:
    """``/metrics`` on ``port`` answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_docs_describe_the_conventions() -> None:
    text = (REPO_ROOT / "docs" / "cli.md").read_text()
    for command in JSON_COMMANDS:
        assert f"`{command}`" in text
    assert "LOG_FORMAT=json" in text and "--version" in text
