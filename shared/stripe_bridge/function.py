"""Build the functions-framework HTTP target of one function under ``functions/``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response

from . import registry
from .config import ConfigError, Settings, load_settings
from .webhook import Runtime, WebhookHandler


class FunctionTarget(Protocol):
    """An async functions-framework HTTP target that also exposes its runtime."""

    runtime: Runtime

    def __call__(self, request: Request) -> Awaitable[Response]:
        """Handle one request."""
        ...


def serves_for(function_name: str) -> frozenset[str] | None:
    """The event types a function accepts; None for the catch-all."""
    if function_name == registry.CATCH_ALL:
        return None
    return frozenset({registry.by_function(function_name).name})


def configure_logging(settings: Settings) -> None:
    """One line per record on stderr, without secrets (the handler never logs them)."""
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


def make_function(function_name: str, settings: Settings | None = None) -> FunctionTarget:
    """The ``handle`` target for ``functions/<function_name>/main.py``.

    Settings are read now, so invalid configuration stops the process at start with one
    clear line; connections open on first use.
    """
    if settings is None:
        try:
            settings = load_settings()
            if not settings.stripe_webhook_secret:
                # Settings allows it (the CLI tools need no secret); a webhook function
                # without one could only refuse every delivery.
                raise ConfigError("invalid configuration: STRIPE_WEBHOOK_SECRET is not set")
        except ConfigError as exc:
            print(f"stripe-bridge {function_name}: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    configure_logging(settings)
    runtime = Runtime(settings, function_name)
    target = WebhookHandler(runtime, serves_for(function_name)).endpoint()
    target.runtime = runtime  # type: ignore[attr-defined]
    return target  # type: ignore[return-value]
