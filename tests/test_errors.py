"""One error base carrying its exit code, caught once by ``cli.main``."""

from __future__ import annotations

import argparse

import pytest
from stripe_bridge.billing.openmeter import OpenMeterAuthError
from stripe_bridge.cli import main
from stripe_bridge.commands import tier
from stripe_bridge.config import ConfigError
from stripe_bridge.deploy.kubeapply import DeployError
from stripe_bridge.deploy.kustomize import KustomizeError
from stripe_bridge.errors import CommandError, StripeBridgeError
from stripe_bridge.exitcodes import ExitCode
from stripe_bridge.ops.replay import EventNotFound, ReplayError
from stripe_bridge.push import PushgatewayError

#: Every error an operator reads, with the exit code it carries unless raised with another.
USER_FACING = {
    CommandError: ExitCode.FAILED,
    ConfigError: ExitCode.CONFIG,
    DeployError: ExitCode.UNAVAILABLE,
    KustomizeError: ExitCode.FAILED,
    ReplayError: ExitCode.UNAVAILABLE,
    EventNotFound: ExitCode.NOT_FOUND,
    PushgatewayError: ExitCode.UNAVAILABLE,
    OpenMeterAuthError: ExitCode.UNAVAILABLE,
}


@pytest.mark.parametrize(("error", "code"), USER_FACING.items())
def test_user_facing_errors_share_the_base_and_carry_their_exit_code(
    error: type[StripeBridgeError], code: ExitCode
) -> None:
    assert issubclass(error, StripeBridgeError)
    assert error("x").exit_code is code
    assert error("x", ExitCode.CONFIG).exit_code is ExitCode.CONFIG


@pytest.mark.parametrize(
    ("raised", "line", "code"),
    [
        # Raised below the commands: the CLI names the program.
        (DeployError("no kubeconfig", ExitCode.CONFIG), "stripe-bridge: no kubeconfig", 2),
        (
            ConfigError("invalid configuration: PORT"),
            "stripe-bridge: invalid configuration: PORT",
            2,
        ),
        (EventNotFound("no event evt_1"), "stripe-bridge: no event evt_1", 4),
        # A command's own error is its whole line.
        (
            CommandError("stripe-bridge tier: gone", ExitCode.UNAVAILABLE),
            "stripe-bridge tier: gone",
            3,
        ),
    ],
)
def test_main_catches_every_error_once_and_prints_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    raised: StripeBridgeError,
    line: str,
    code: int,
) -> None:
    def fail(_args: argparse.Namespace) -> int:
        raise raised

    monkeypatch.setattr(tier, "run", fail)
    assert main(["tier", "cus_1"]) == code
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", line + "\n")
