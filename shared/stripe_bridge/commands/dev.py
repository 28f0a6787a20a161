"""``stripe-bridge dev``: the whole bridge on one machine, on embedded defaults.

Starts its own JetStream nats-server in a data folder, provisions the stream, and serves
every function on one port with in-memory idempotency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
from pathlib import Path

from .. import registry
from ..config import IdempotencyBackend, load_settings
from ..errors import CommandError
from ..exitcodes import ExitCode
from ..http import graceful_shutdown_seconds
from ..logsetup import configure_logging
from ..ops import stripecli
from ..ops.natsserver import NatsServer
from ..runtime import Runtime
from ..server import dev_app, run
from ..streams import StreamSpec, provision
from .common import connect

DEFAULT_PORT = 8080
DEFAULT_DATA_DIR = Path(".stripe-bridge/dev")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``dev`` subcommand."""
    parser = subparsers.add_parser("dev", help="run the bridge locally with its own nats-server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--nats-port", type=int, default=4222)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument(
        "--stripe-listen",
        action="store_true",
        help="also run `stripe listen` (the Stripe CLI) forwarding real test events here",
    )
    parser.set_defaults(func=run_dev)


def read_dev_secret(data_dir: Path) -> str:
    """The webhook secret ``dev`` uses, or "" when dev never ran in ``data_dir``."""
    path = data_dir / "webhook_secret"
    return path.read_text().strip() if path.exists() else ""


def _dev_secret(data_dir: Path) -> str:
    secret = read_dev_secret(data_dir)
    if not secret:
        secret = "whsec_dev_" + secrets.token_hex(16)
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / "webhook_secret"
        path.write_text(secret + "\n")
        path.chmod(0o600)
    return secret


def banner(url: str, secret_note: str, nats_url: str, stream: str) -> str:
    """What ``dev`` prints once it is serving."""
    types = "\n".join(f"    {url}{t.name}" for t in registry.EVENT_TYPES)
    return f"""stripe-bridge dev is serving on {url}
  NATS (JetStream) : {nats_url}, stream {stream}
  webhook secret   : {secret_note}
  every event type : {url}
  one event type   :
{types}
Forward real Stripe test events: `stripe-bridge dev --stripe-listen` runs the Stripe CLI
for you; or by hand (set STRIPE_WEBHOOK_SECRET to the secret it prints):
    stripe listen --forward-to {url}
Or send a signed sample, and watch the stream:
    stripe-bridge send invoice.paid
    stripe-bridge tail
Ctrl-C stops the bridge and its nats-server."""


def run_dev(args: argparse.Namespace) -> int:
    """Start nats-server, provision, serve every function until interrupted."""
    data_dir: Path = args.data_dir
    # Before anything starts: a missing Stripe CLI is one line, not a half-started bridge.
    cli = stripecli.stripe_cli() if args.stripe_listen else None
    configured = os.environ.get("STRIPE_WEBHOOK_SECRET", "")
    if configured:
        secret_note = "from $STRIPE_WEBHOOK_SECRET"
        accepted = [s.strip() for s in configured.split(",") if s.strip()]
    else:
        secret = _dev_secret(data_dir)
        secret_note = f"{secret}  (saved in {data_dir / 'webhook_secret'})"
        accepted = [secret]
    if cli is not None:
        # Accepted beside the others: `send` and hand-signed events keep working.
        listener_secret = stripecli.listener_secret(cli)
        accepted.append(listener_secret)
        secret_note += f"\n                     and the Stripe CLI's {listener_secret}"
    overrides: dict[str, object] = {"stripe_webhook_secret": ",".join(accepted)}
    nats = NatsServer(data_dir / "jetstream", port=args.nats_port)
    try:
        nats.start()
    except (RuntimeError, TimeoutError) as exc:
        message = f"stripe-bridge dev: cannot start nats-server on port {args.nats_port}: {exc}"
        raise CommandError(message) from exc
    try:
        settings = load_settings(
            nats_url=nats.url,
            idempotency_backend=IdempotencyBackend.MEMORY,
            function_name="dev",
            **overrides,
        )
        configure_logging(settings.log_level, settings.log_format)

        async def setup() -> str:
            nc = await connect(settings)
            try:
                return await provision(nc.jetstream(), StreamSpec.from_settings(settings))
            finally:
                await nc.close()

        print(f"stream {settings.nats_stream}: {asyncio.run(setup())}")
        url = f"http://{args.host}:{args.port}/"
        print(banner(url, secret_note, nats.url, settings.nats_stream), flush=True)
        listener = stripecli.start_listener(cli, url) if cli is not None else None
        try:
            app = dev_app(Runtime(settings, "dev"))
            grace = app.state.reader.stopping_grace
            graceful = graceful_shutdown_seconds(grace, settings.publish_timeout)
            run(app, args.host, args.port, reader=app.state.reader, graceful_shutdown=graceful)
        finally:
            if listener is not None:
                stripecli.stop_listener(listener)
    finally:
        nats.stop()
    return ExitCode.OK
