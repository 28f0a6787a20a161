"""The OpenMeter stand-in as a staging container: run by the image's Python, mounted read-only.

``python3 -m stripe_bridge_testing.openmeter_container API_KEY [RATE_LIMIT]`` (the harness
mounted read-only: the image never contains it) serves the harness's IngestStandIn
(OpenMeter's documented ingest contract; with RATE_LIMIT, requests per second beyond which
it answers 429 with Retry-After) on port 8080 of every address, and a control port 8081
for the staging driver: ``GET /counts`` (every accepted (id, source) and how often),
``GET /accepted`` (the same with the wall-clock time each was first ingested),
``GET /stats`` (requests per status, early retries after a 429, distinct (id, source)
ingested) and
``POST /fail?count=N&status=S`` (script failures). It stops on SIGTERM.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections import Counter
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
            path = urlparse(self.path).path
            if path == "/stats":
                statuses = Counter(str(r.status) for r in standin.requests)
                early = standin.rate_limit.early_retries if standin.rate_limit else 0
                ingested = len(standin.first_ingested)
                self._json({"statuses": statuses, "early_retries": early, "ingested": ingested})
            elif path == "/accepted":
                first = dict(standin.first_ingested)
                self._json([[i, s, n, first[i, s]] for (i, s), n in standin.counts().items()])
            else:
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


def main(api_key: str, rate_limit: float | None = None) -> None:
    """Serve until SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = IngestStandIn(api_key, port=INGEST_PORT, host="0.0.0.0", rate_limit=rate_limit)
    with server as standin:
        control = ThreadingHTTPServer(("0.0.0.0", CONTROL_PORT), control_handler(standin))
        threading.Thread(target=control.serve_forever, daemon=True).start()
        stop.wait()
        control.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else None)
