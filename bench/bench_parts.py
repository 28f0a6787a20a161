"""CPU per webhook, part by part, in process: this checkout's library against another's.

Run from the repository root: ``.venv/bin/python -m bench.bench_parts [--against DIR]
[--repeats N] [--json PATH]``.

Each part of the request path that the bridge owns (not uvicorn, the event loop or
nats-py) is timed on its own in a fresh interpreter (CPU time, the fastest of three
batches), for the real ``invoice.paid`` sample (the body bench_bridge posts) and the mean
over every Stripe sample in ``../shared/stripe-events`` when that folder exists. With
``--against DIR`` (another checkout's ``shared/``, through ``PYTHONPATH``) the two
libraries run in turns, repeat after repeat, and every figure is the median of the
repeats with its lowest and highest. No server, no network: what other work on the
machine changes least.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "shared" / "stripe_bridge" / "ops" / "samples" / "invoice_paid.json"
STRIPE_SAMPLES = REPO.parent / "shared" / "stripe-events"

#: Runs in the child: prints {part: microseconds}. Only public names of the library.
CHILD = r"""
import asyncio, glob, itertools, json, logging, sys, time
import uvloop
from stripe_bridge.config import Settings
from stripe_bridge.envelope import StripeEvent, parse_body
from stripe_bridge.http import HttpFunction, Reply
from stripe_bridge.idempotency import MemoryStore
from stripe_bridge.logsetup import LogFormat, configure_logging
from stripe_bridge.message import build_message
from stripe_bridge.signature import sign_header, verify

sample, samples_dir = sys.argv[1], sys.argv[2]

def timed(call, n):
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(n):
            call()
        best = min(best, (time.process_time() - start) / n)
    return best * 1e6

def done(coroutine):
    try:
        coroutine.send(None)
    except StopIteration:
        pass

body = open(sample, "rb").read()
raw = parse_body(body)
event = StripeEvent.model_validate(raw)
secret = b"whsec_bench"
header = sign_header(secret, body)
store = MemoryStore(30, 3600, 100_000)
ids = itertools.count()
def claim_and_mark_done():
    key = f"evt_{next(ids)}"
    done(store.claim(key))
    done(store.mark_done(key))
for _ in range(100_000):  # at the bound, as a busy function's store is
    claim_and_mark_done()
sys.stderr = open("/dev/null", "w")
configure_logging("INFO", LogFormat.TEXT)
log = logging.getLogger("stripe_bridge.webhook")
line = "webhook status=200 outcome=published reason=- event_id=evt_1 type=invoice.paid ms=1.2"
class Runtime:
    settings = Settings(stripe_webhook_secret="whsec_bench")

class Shell(HttpFunction):
    # The shared HTTP shell around a webhook: body read, header, reply, JSON answer.
    async def respond(self, request, path):
        await self.post_body(request)
        request.header("stripe-signature")
        reply = {"status": "published", "id": event.id, "stream": "STRIPE", "seq": 12345}
        return Reply(200, reply, "published")
    def refused(self, refusal):
        raise AssertionError(refusal)
    def record(self, reply, seconds):
        pass

shell = Shell(Runtime(), 1_000_000)
# As uvicorn's protocol (server.header_timeout_protocol) hands over a webhook whose body
# came with its headers; a library from before the extension ignores it.
received = {"received": lambda: True}
scope = {
    "type": "http", "method": "POST", "path": "/",
    "headers": [
        (b"host", b"x"), (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()), (b"stripe-signature", header.encode()),
    ],
    "extensions": {"stripe_bridge.body_received": received},
}
message = {"type": "http.request", "body": body, "more_body": False}
async def receive():
    return message
async def send(_message):
    pass
async def shell_requests(n):
    for _ in range(n):
        await shell(scope, receive, send)
loop = uvloop.new_event_loop()
def shell_time(n):
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        loop.run_until_complete(shell_requests(n))
        best = min(best, (time.process_time() - start) / n)
    return best * 1e6

figures = {
    "HTTP shell (body read, reply, JSON answer)": shell_time(10000),
    "strict JSON parse (invoice.paid)": timed(lambda: parse_body(body), 3000),
    "envelope validation": timed(lambda: StripeEvent.model_validate(raw), 3000),
    "CloudEvent (translate + JSON)": timed(lambda: build_message(event, body, "stripe"), 3000),
    "signature (HMAC)": timed(lambda: verify(header, body, [secret], 300), 3000),
    "idempotency (memory): claim + done": timed(claim_and_mark_done, 10000),
    "log line (text, to a file)": timed(lambda: log.info(line), 10000),
}
paths = sorted(glob.glob(samples_dir + "/*.json"))
if paths:
    bodies = [open(p, "rb").read() for p in paths]
    total = sum(timed(lambda b=b: parse_body(b), 300) for b in bodies)
    figures[f"strict JSON parse, mean of {len(bodies)} Stripe samples"] = total / len(bodies)
print(json.dumps(figures))
"""


def run_child(pythonpath: str | None) -> dict[str, float]:
    """One fresh interpreter's figures, with ``pythonpath`` ahead of the installed library."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(SAMPLE), str(STRIPE_SAMPLES)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    ).stdout
    figures: dict[str, float] = json.loads(out)
    return figures


def spread(values: list[float]) -> str:
    """``median [lowest-highest]``."""
    return f"{statistics.median(values):6.1f} [{min(values):.1f}-{max(values):.1f}]"


def main(argv: Sequence[str] | None = None) -> int:
    """Time every part for each library in turns; print medians with their spread."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--against", type=Path, metavar="DIR", help="another checkout's shared/")
    parser.add_argument("--repeats", type=int, default=5, help="turns of every library")
    parser.add_argument("--json", type=Path, help="also write every repeat's figures here")
    args = parser.parse_args(argv)
    libraries: dict[str, str | None] = {"this checkout": None}
    if args.against:
        libraries["against"] = str(args.against.resolve())
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in libraries}
    for repeat in range(args.repeats):
        # In turns, each repeat starting with the other library: bursts of other work
        # fall on both alike.
        order = list(libraries) if repeat % 2 == 0 else list(reversed(libraries))
        for name in order:
            runs[name].append(run_child(libraries[name]))
    print(f"CPU us per call, median [lowest-highest] of {args.repeats} repeats "
          f"(load average {os.getloadavg()[0]:.1f}):")  # fmt: skip
    names = list(libraries)
    print(f"{'part':48}" + "".join(f" {name:>24}" for name in names))
    for part in runs[names[0]][0]:
        cells = [spread([run[part] for run in runs[name] if part in run]) for name in names]
        print(f"{part:48}" + "".join(f" {cell:>24}" for cell in cells))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
