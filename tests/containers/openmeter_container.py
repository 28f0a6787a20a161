"""The OpenMeter stand-in as a staging container: run by the image's Python, mounted read-only.

``python3 openmeter_container.py API_KEY`` (with the test harness, testing/, mounted beside
it: the image never contains it) serves the harness's IngestStandIn (OpenMeter's
documented ingest contract) on port 8080 of every address, and a control port 8081 for
the staging driver: ``GET /counts`` (every accepted (id, source) and how often) and
``POST /fail?count=N&status=S`` (script failures). It stops on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from stripe_bridge_testing.openmeter_standin import IngestStandIn

INGEST_PORT = 8080
CONTROL_PORT = 8081


def control_handler(standin: IngestStandIn) -> type[BaseHTTPRequestHandler]:
    """The control port's request handler."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def _json(self, body: Any, status: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._json([[i, s, n] for (i, s), n in standin.counts().items()])

        def do_POST(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            try:
                standin.fail_next(int(query["count"][0]), int(query["status"][0]))
            except ValueError as exc:  # a status OpenMeter never answers
                self._json({"error": str(exc)}, 400)
                return
            self._json({"scripted": True})

    return Handler


def main(api_key: str) -> None:
    """Serve until SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with IngestStandIn(api_key, port=INGEST_PORT, host="0.0.0.0") as standin:
        control = ThreadingHTTPServer(("0.0.0.0", CONTROL_PORT), control_handler(standin))
        threading.Thread(target=control.serve_forever, daemon=True).start()
        stop.wait()
        control.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
