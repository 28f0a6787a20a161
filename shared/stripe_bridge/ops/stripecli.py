"""``stripe-bridge dev --stripe-listen``: real Stripe test events through the Stripe CLI.

Follows the Stripe CLI's documented ``listen`` (docs.stripe.com/cli/listen):
``stripe listen --print-secret`` prints only the webhook signing secret of this machine's
listener and exits; ``stripe listen --forward-to URL --events a,b`` then forwards those
events, signed with that same secret, until stopped.
"""

from __future__ import annotations

import shutil
import subprocess

from .. import registry
from ..errors import CommandError
from ..exitcodes import ExitCode

INSTALL_HINT = "install it (https://docs.stripe.com/stripe-cli) and run `stripe login`"


def stripe_cli() -> str:
    """The Stripe CLI's path; CommandError (NO_PROGRAM) when it is not on PATH."""
    found = shutil.which("stripe")
    if found is None:
        raise CommandError(
            f"stripe-bridge dev: --stripe-listen needs the Stripe CLI: `stripe` is not on "
            f"PATH; {INSTALL_HINT}",
            ExitCode.NO_PROGRAM,
        )
    return found


def listener_secret(cli: str, timeout: float = 30.0) -> str:
    """``stripe listen --print-secret``: the secret the forwarded events are signed with."""
    try:
        result = subprocess.run(
            [cli, "listen", "--print-secret"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CommandError(
            f"stripe-bridge dev: `stripe listen --print-secret` failed: {type(exc).__name__}",
            ExitCode.UNAVAILABLE,
        ) from None
    secret = result.stdout.strip()
    if result.returncode != 0 or not secret.startswith("whsec_"):
        detail = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[0][:200]
        raise CommandError(
            f"stripe-bridge dev: `stripe listen --print-secret` gave no secret: {detail}",
            ExitCode.UNAVAILABLE,
        )
    return secret


def listen_command(cli: str, url: str) -> list[str]:
    """``stripe listen`` forwarding every registered event type to ``url``."""
    events = ",".join(t.name for t in registry.EVENT_TYPES)
    return [cli, "listen", "--forward-to", url, "--events", events]


def start_listener(cli: str, url: str) -> subprocess.Popen[bytes]:
    """Start forwarding; its own output (deliveries, errors) goes to this terminal."""
    return subprocess.Popen(listen_command(cli, url))


def stop_listener(listener: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop the listener (SIGTERM, then SIGKILL)."""
    if listener.poll() is None:
        listener.terminate()
        try:
            listener.wait(timeout)
        except subprocess.TimeoutExpired:
            listener.kill()
            listener.wait()
