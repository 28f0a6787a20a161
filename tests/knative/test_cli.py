"""``stripe-bridge knative render --check`` and ``serve``'s start-up failures."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from stripe_bridge.cli import main
from stripe_bridge.ops.natsserver import free_port
from stripe_bridge_testing.repo import REPO_ROOT


def test_render_writes_then_check_passes_then_detects_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "knative"
    assert main(["knative", "render", "--check", "--out", str(out)]) == 1
    assert main(["knative", "render", "--env", "staging", "--out", str(out)]) == 0
    assert not (out / "production").exists()
    assert main(["knative", "render", "--out", str(out)]) == 0
    assert main(["knative", "render", "--check", "--out", str(out)]) == 0
    (out / "staging" / "stripe-invoice-paid.yaml").write_text("edited by hand\n")
    capsys.readouterr()
    assert main(["knative", "render", "--check", "--out", str(out)]) == 1
    assert "out of date: " in capsys.readouterr().out


@pytest.mark.servers  # starts `stripe-bridge serve`
def test_serve_exits_3_when_its_port_is_taken(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = subprocess.run(
            [str(Path(sys.executable).parent / "stripe-bridge"), "serve"],
            env={
                "PATH": str(Path(sys.executable).parent),
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "FUNCTION_SOURCE": str(REPO_ROOT / "functions" / "stripe_event" / "main.py"),
                "FUNCTION_TARGET": "handle",
                # Otherwise valid: a function refuses to start without a secret (exit 2).
                "STRIPE_WEBHOOK_SECRET": "whsec_test",
            },
            capture_output=True,
            timeout=60,
        )
    assert result.returncode == 3, result.stderr


def test_serve_without_a_function_source_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--source", "/nonexistent/main.py"]) == 2
    assert "no function source at /nonexistent/main.py" in capsys.readouterr().err
