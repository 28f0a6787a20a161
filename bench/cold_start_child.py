"""One cold start, phase by phase, in a fresh interpreter (run by bench_bridge.py).

It repeats what the image's entrypoint (``stripe-bridge-serve``) does before its first
acknowledged event, in order, timing each step: import it and parse its arguments (the
CLI's ``serve`` for checkouts from before it, ``--against``), load the function (importlib,
as functions-framework's ASGI loader does), import uvicorn, then drive the ASGI app directly (no
HTTP server, so the steps are not blurred by socket timing): ``GET /readyz`` (NATS
connect and stream lookup, as Knative's readiness probe does first) and the first signed
``POST``. A second POST shows the warm cost. Prints one JSON object on stdout.

Only the standard library is imported before the first phase, so ``-X importtime`` of this
process attributes every third-party import to the bridge. Needs ``NATS_URL``,
``STRIPE_WEBHOOK_SECRET`` and ``BENCH_FUNCTION_SOURCE`` in the environment.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not at run time: every third-party import must count as the bridge's
    from starlette.types import ASGIApp, Message


async def call(
    app: ASGIApp, method: str, path: str, body: bytes, headers: list[tuple[str, str]]
) -> int:
    """Send one HTTP request through the ASGI ``app``; return the response status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8080),
    }
    import asyncio  # already loaded by the bridge by now: not charged to any phase

    sent = False
    status = 0

    async def receive() -> Message:
        nonlocal sent
        if sent:  # the body was delivered; a further receive() waits for a disconnect
            await asyncio.Event().wait()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])

    await app(scope, receive, send)
    return status


def main() -> None:
    """Time each step of a cold start and print them as JSON."""
    phases: list[tuple[str, float]] = []
    mark = time.perf_counter()

    def done(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases.append((name, now - mark))
        mark = now

    import argparse
    import importlib.util

    if importlib.util.find_spec("stripe_bridge.serve") is not None:
        from stripe_bridge import serve

        parser = argparse.ArgumentParser()
        serve.add_options(parser)
        parser.parse_args([])
    else:  # a checkout from before the entrypoint (--against): the CLI's `serve`
        from stripe_bridge import cli

        # Checkouts older than parser_for built every subcommand.
        old = cli.parser_for(["serve"]) if hasattr(cli, "parser_for") else cli.build_parser()
        old.parse_args(["serve"])
    done("import the entrypoint + parse its arguments")

    from stripe_bridge.server import function_app

    app = function_app(Path(os.environ["BENCH_FUNCTION_SOURCE"]))
    done("load function (importlib, as functions-framework's ASGI loader)")

    # What server.run imports before serving: uvicorn without its command line where the
    # library has server.import_uvicorn, the whole package for a library from before it.
    from stripe_bridge import server

    if hasattr(server, "import_uvicorn"):
        server.import_uvicorn()
    else:
        import uvicorn  # noqa: F401

    done("import uvicorn")

    from stripe_bridge.ops.samples import sample_event
    from stripe_bridge.signature import sign_header

    secret = os.environ["STRIPE_WEBHOOK_SECRET"].split(",")[0].encode()

    def signed(event_type: str) -> tuple[bytes, list[tuple[str, str]]]:
        body = json.dumps(sample_event(event_type)).encode()
        return body, [
            ("content-type", "application/json"),
            ("stripe-signature", sign_header(secret, body)),
        ]

    events = [signed("invoice.paid") for _ in range(2)]
    mark = time.perf_counter()  # building the requests is the client's work, not a phase

    import asyncio

    async def requests() -> list[int]:
        statuses = [await call(app, "GET", "/readyz", b"", [])]
        done("GET /readyz: NATS connect + stream lookup")
        statuses.append(await call(app, "POST", "/", *events[0]))
        done("first POST: verify, validate, translate, publish, PubAck")
        statuses.append(await call(app, "POST", "/", *events[1]))
        done("second POST (warm, for comparison)")
        return statuses

    statuses = asyncio.run(requests())
    json.dump({"phases": phases, "statuses": statuses}, sys.stdout)


if __name__ == "__main__":
    main()
