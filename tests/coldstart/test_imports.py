"""What a function's cold start imports: only what ``stripe-bridge serve`` needs.

Each check runs in a fresh interpreter, since ``sys.modules`` of the test process already
holds everything. bench/bench_bridge.py measures what these imports cost.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import tomllib

import pytest
from stripe_bridge import cli
from stripe_bridge.ops.natsserver import NatsServer
from stripe_bridge_testing.repo import REPO_ROOT


def fresh_python(code: str, env: dict[str, str] | None = None) -> object:
    """Run ``code`` in a new interpreter; return the JSON it printed last."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_serve_imports_no_other_subcommand() -> None:
    loaded = fresh_python(
        """
        import json, sys
        from stripe_bridge import cli
        argv = ["serve", "--source", "x.py"]
        args = cli.parser_for(argv).parse_args(argv)
        print(json.dumps([args.source, sorted(m for m in sys.modules if ".commands." in m)]))
        """
    )
    assert loaded == ["x.py", ["stripe_bridge.commands.serve"]]


def test_serve_loads_a_function_without_functions_framework_or_flask() -> None:
    # The image does not install them: the entrypoint must not need them (and they cost
    # about 90 ms of every cold start where they are installed, as here). Nor does a
    # function need the others before its first event (the pusher imports httpx itself).
    loaded = fresh_python(
        f"""
        import json, sys
        from pathlib import Path
        from stripe_bridge.server import function_app
        function_app(Path("{REPO_ROOT}/functions/invoice_paid/main.py"))
        heavy = ("functions_framework", "flask", "werkzeug", "jinja2", "gunicorn",
                 # imported on first use, never before the first event (bench/README.md):
                 "pydantic_settings", "httpx", "cloudevents", "redis",
                 # plain ASGI on the request path (asgi.py); only functions-framework's
                 # target (``handle``) and the dev server's router use Starlette:
                 "starlette", "anyio")
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
        """,
        env={**os.environ, "STRIPE_WEBHOOK_SECRET": "whsec_test"},
    )
    assert loaded == []


BILLING_ENV = {
    "STRIPE_API_KEY": "sk_test_x",
    "CHECKOUT_SUCCESS_URL": "https://app.example.com/done",
    "OPENMETER_URL": "https://openmeter.example.com",
    "OPENMETER_API_KEY": "om_x",
}


@pytest.mark.parametrize(
    "function", ["billing_checkout", "billing_portal", "billing_usage", "billing_entitlements"]
)
def test_billing_functions_start_without_what_a_first_request_does_not_need(
    function: str,
) -> None:
    # They scale to zero too. Their settings use config.EnvModel, not pydantic-settings'
    # ~70-100 ms import (the forwarder's settings are checked with them). PyYAML reads a
    # tier file only if one is configured as YAML; the CloudEvents SDK encodes the first
    # usage record: neither is needed to answer /readyz (~25 modules each).
    loaded = fresh_python(
        f"""
        import json, sys
        from pathlib import Path
        from stripe_bridge.server import function_app
        from stripe_bridge.billing.openmeter import ForwarderSettings
        from stripe_bridge.config import load_model
        function_app(Path("{REPO_ROOT}/functions/{function}/main.py"))
        load_model(ForwarderSettings)
        tops = {{m.split(".")[0] for m in sys.modules}}
        print(json.dumps(sorted(tops & {{"pydantic_settings", "yaml", "cloudevents"}})))
        """,
        env={**os.environ, **BILLING_ENV},
    )
    assert loaded == []


def test_help_and_unknown_words_get_every_subcommand() -> None:
    every = cli.subcommand_names(cli.build_parser())
    assert {"serve", "dev", "send"} <= every
    for argv in ([], ["--help"], ["no-such-command"], ["-h", "serve"]):
        assert cli.subcommand_names(cli.parser_for(argv)) == every, argv


def test_every_subcommand_gets_a_parser_that_knows_it() -> None:
    for command in cli.subcommand_names(cli.build_parser()):
        assert command in cli.subcommand_names(cli.parser_for([command, "--help"])), command
    assert cli.subcommand_names(cli.parser_for(["serve"])) == {"serve"}


def test_nats_import_skips_aiohttp_for_nats_urls(stream: NatsServer) -> None:
    # A real publish, the first thing a function does with NATS: aiohttp (installed here,
    # by the Kubernetes client) must not be imported on the way, yet stay importable.
    loaded = fresh_python(
        f"""
        import asyncio, json, sys
        from stripe_bridge.config import load_settings
        from stripe_bridge.jetstream import JetStreamPublisher

        async def main():
            publisher = JetStreamPublisher(load_settings(nats_url="{stream.url}"))
            stored = await publisher.publish("stripe.test.invoice.paid", b"{{}}", {{}})
            await publisher.close()
            return stored.seq

        seq = asyncio.run(main())
        skipped = "aiohttp" not in sys.modules
        import aiohttp
        print(json.dumps([seq, skipped, aiohttp.__name__]))
        """
    )
    assert loaded == [1, True, "aiohttp"]


def test_nats_import_keeps_aiohttp_for_websocket_urls() -> None:
    loaded = fresh_python(
        """
        import json, sys
        from stripe_bridge.config import load_settings
        from stripe_bridge.jetstream import import_nats
        import_nats(load_settings(nats_url="nats://127.0.0.1:1,ws://127.0.0.1:2"))
        from nats.aio import transport
        print(json.dumps(["aiohttp" in sys.modules, transport.aiohttp is not None]))
        """
    )
    assert loaded == [True, True]


def image_entrypoint() -> tuple[str, list[str]]:
    """The Containerfile's ENTRYPOINT as ``module:function`` of its console script, and
    the arguments it passes (pyproject.toml's [project.scripts] names the function)."""
    containerfile = (REPO_ROOT / "Containerfile").read_text()
    (line,) = [line for line in containerfile.splitlines() if line.startswith("ENTRYPOINT ")]
    script, *args = json.loads(line.removeprefix("ENTRYPOINT "))
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return scripts[script], args


#: Never in a function's cold start: the command tree and what only commands use.
NOT_SERVED = (
    "stripe_bridge.cli",
    "stripe_bridge.commands",
    "stripe_bridge.deploy",
    "stripe_bridge.ops",
)
#: What ``import uvicorn`` brings that serving does not use: its command line.
UVICORN_CLI = ("uvicorn.main", "click")
#: Enough configuration for every function to start (none connects before a request).
FUNCTION_ENV = {
    "STRIPE_WEBHOOK_SECRET": "whsec_test",
    "STRIPE_API_KEY": "sk_test_cold",
    "CHECKOUT_SUCCESS_URL": "https://app.example/done",
}


@pytest.mark.parametrize(
    ("function", "forbidden"),
    [
        ("invoice_paid", (*NOT_SERVED, "stripe_bridge.billing")),
        ("stripe_event", (*NOT_SERVED, "stripe_bridge.billing")),
        ("billing_checkout", NOT_SERVED),
        ("billing_entitlements", NOT_SERVED),
        ("billing_usage", NOT_SERVED),
    ],
)
def test_the_image_entrypoint_imports_only_what_a_request_needs(
    function: str, forbidden: tuple[str, ...]
) -> None:
    # The image's entrypoint runs as far as uvicorn binding its port, which another socket
    # holds: config loaded, lifespan started, everything a request needs imported by then.
    target, args = image_entrypoint()
    source = REPO_ROOT / "functions" / function / "main.py"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        loaded = fresh_python(
            f"""
            import importlib, json, sys
            module, _, name = {target!r}.partition(":")
            argv = [*{args!r}, "--source", {str(source)!r}]
            try:
                code = getattr(importlib.import_module(module), name)(argv)
            except SystemExit as exit:
                code = exit.code
            ours = sorted(m for m in sys.modules if m.startswith("stripe_bridge"))
            lifespan = "uvicorn.lifespan.on" in sys.modules
            print(json.dumps([code, ours, lifespan, [m for m in sys.modules if m in CLI]]))
            """.replace("CLI", repr(UVICORN_CLI)),
            env={**os.environ, **FUNCTION_ENV, "HOST": "127.0.0.1", "PORT": str(port)},
        )
    assert isinstance(loaded, list)
    code, modules, lifespan, cli = loaded
    assert code != 0 and lifespan, "it must have got as far as binding the port"
    assert "stripe_bridge.server" in modules
    assert [m for m in modules if m.startswith(forbidden)] == []
    # uvicorn's command line and click (uvicorn/__init__.py imports them): server.import_uvicorn
    assert cli == []


def test_loading_a_function_builds_none_of_the_sdks_models() -> None:
    # The SDK's models are built on first use (defer_build): a webhook function validates
    # with one translation, on its first event; building all of them cost ~10 ms of CPU of
    # each cold start (bench/README.md, issue #20).
    loaded = fresh_python(
        f"""
        import json, sys
        from pathlib import Path
        from pydantic import BaseModel
        from stripe_bridge.server import function_app
        function_app(Path("{REPO_ROOT}/functions/invoice_paid/main.py"))
        from stripe_bridge_events import events, models
        built = [
            name
            for module in (events, models)
            for name, value in vars(module).items()
            if isinstance(value, type) and issubclass(value, BaseModel)
            and value.__module__ == module.__name__ and value.__pydantic_complete__
        ]
        print(json.dumps(built))
        """,
        env={**os.environ, "STRIPE_WEBHOOK_SECRET": "whsec_test"},
    )
    assert loaded == []


def test_uvicorn_without_its_command_line_still_has_it_on_first_use() -> None:
    loaded = fresh_python(
        """
        import json, sys
        from stripe_bridge.server import import_uvicorn
        config, server = import_uvicorn()
        import importlib.metadata, uvicorn
        version = uvicorn.__version__ == importlib.metadata.version("uvicorn")
        before = "click" in sys.modules
        import uvicorn.main
        whole = [uvicorn.Config is config, uvicorn.Server is server]
        whole.append(uvicorn.run is uvicorn.main.run)
        print(json.dumps([version, before, whole, import_uvicorn() == (config, server)]))
        """
    )
    assert loaded == [True, False, [True, True, True], True]


@pytest.mark.parametrize("function", ["billing_checkout", "billing_portal"])
def test_stripe_functions_import_stripe_on_the_first_request_not_at_start(function: str) -> None:
    # stripe-python, and httpx with it, is ~650 modules (~0.9 s of `-X importtime` on this
    # machine): built on the first request that calls Stripe, so neither loading the
    # function nor answering /readyz waits for it (bench/README.md, issue #20).
    loaded = fresh_python(
        f"""
        import asyncio, json, sys
        from pathlib import Path
        from stripe_bridge.server import function_app

        async def status(app, path):
            sent = []
            async def receive():
                return {{"type": "http.request", "body": b"", "more_body": False}}
            async def send(message):
                sent.append(message)
            scope = {{"type": "http", "http_version": "1.1", "method": "GET", "scheme": "http",
                      "path": path, "raw_path": path.encode(), "query_string": b"",
                      "root_path": "", "headers": [], "client": ("127.0.0.1", 1),
                      "server": ("127.0.0.1", 8080)}}
            await app(scope, receive, send)
            return sent[0]["status"]

        app = function_app(Path("{REPO_ROOT}/functions/{function}/main.py"))
        ready = asyncio.run(status(app, "/readyz"))
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("stripe", "httpx"))
        print(json.dumps([ready, heavy]))
        """,
        env={**os.environ, **BILLING_ENV},
    )
    assert loaded == [200, []]
