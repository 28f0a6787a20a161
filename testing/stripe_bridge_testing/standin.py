"""One skeleton for the local stand-ins of hosted HTTP APIs (Stripe, OpenMeter, Kubernetes).

A stand-in follows the documented contract of the API it replaces; this base gives each a
threaded server on a free loopback port, started and stopped with it, and a quiet request
handler that reads and sends bodies.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from stripe_bridge.ops.natsserver import free_port


class StandInHandler(BaseHTTPRequestHandler):
    """A request handler without access logs, with body helpers."""

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests assert on what the stand-in recorded, not on access logs."""

    def read_body(self) -> bytes:
        """The request body (``Content-Length`` bytes)."""
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(
        self,
        status: int,
        body: Any = None,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer ``status`` with ``body`` (bytes as they are, else JSON); None sends none."""
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if body is None:
            self.end_headers()
            return
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class HttpStandIn:
    """A stand-in served by a ThreadingHTTPServer on 127.0.0.1 from a daemon thread.

    ``host`` is another address to listen on: the staging run serves the OpenMeter stand-in
    on every address of its container (openmeter_container.py).
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.port = port or free_port()
        self._server = ThreadingHTTPServer((host, self.port), self.handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        """The request handler class; it reaches the stand-in through a closure."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        """Base URL, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Serve in the background."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
