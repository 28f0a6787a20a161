"""``podman run`` -> ``/readyz`` 200 of function containers, as Knative starts a revision.

Issue #20's container figure. The staging harness (``stripe_bridge_testing.staging``) runs
the servers: the image from scripts/image, three clustered nats-servers, Redis and a
Pushgateway on one podman network, provisioned. Each run then starts one function
container as its knative/staging/ manifest says (environment, CPU and memory limits,
read-only root, the image's user), times ``podman run`` until the container's published
``/readyz`` answers 200, and removes the container. Functions (and images, with
``--image``) take turns, so a change of load on the machine touches each alike. Every
container and the network are removed at the end, also on failure.

Usage: ``python -m bench.bench_container_start [--runs N] [--image LABEL=IMAGE]...
[--cpus N] [SERVICE]...`` (default: stripe-invoice-paid and billing-checkout, 7 runs, the image
scripts/image builds).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from stripe_bridge_testing.podman import podman
from stripe_bridge_testing.staging import Staging

DEFAULT_SERVICES = ("stripe-invoice-paid", "billing-checkout")
#: Longer than any start seen here (~1-2 s): a container never ready fails the bench.
READY_TIMEOUT = 60.0


@dataclass
class Timings:
    """Seconds of each run of one (image, service): ``podman run`` returned, /readyz 200."""

    returned: list[float] = field(default_factory=list)
    ready: list[float] = field(default_factory=list)


def readyz_ok(url: str) -> bool:
    """Whether ``GET url`` answers 200 now (False while nothing listens behind the port)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


def one_start(staging: Staging, image: str, service: str, cpus: str | None) -> tuple[float, float]:
    """Start ``service`` from ``image`` (``cpus`` instead of its CPU limit, if given);
    seconds until ``podman run`` returned and until ``/readyz`` answered 200. The
    container is removed before this returns."""
    started = time.perf_counter()
    container, spec = staging.start_function(image, service, cpus)
    try:
        returned = time.perf_counter() - started
        url = staging.url(spec.name) + "/readyz"
        deadline = started + READY_TIMEOUT
        while not readyz_ok(url):
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{service}: /readyz not 200 within {READY_TIMEOUT} s")
            time.sleep(0.002)  # not ready yet: poll again (a measurement, not a test's wait)
        return returned, time.perf_counter() - started
    finally:
        podman("rm", "--force", "--time", "0", container.name, timeout=120)


def spread(seconds: list[float]) -> str:
    """``median [fastest-slowest]`` in seconds."""
    return f"{statistics.median(seconds):.3f} s [{min(seconds):.3f}-{max(seconds):.3f}]"


def main(argv: list[str] | None = None) -> int:
    """Measure, print one row per (image, service)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("services", nargs="*", default=list(DEFAULT_SERVICES))
    parser.add_argument("--runs", type=int, default=7, help="starts per image and service")
    parser.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="LABEL=IMAGE",
        help="measure this image instead of scripts/image's (the servers still run from"
        " that); repeat it for images in turns, e.g. before=IMAGE after=IMAGE",
    )
    parser.add_argument(
        "--cpus",
        help="CPU limit instead of the manifests' (e.g. 2: what the limit costs a start)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-container-") as tmp:
        staging = Staging.new(Path(tmp) / "stack")
        try:
            built = staging.up([], consumers=False, prometheus=False)
            images = dict(i.split("=", 1) for i in args.image) or {"scripts/image": built}
            found = {(label, s): Timings() for label in images for s in args.services}
            # One unmeasured start per image and service: page cache and podman's storage
            # warm for every variant alike.
            for image in images.values():
                for service in args.services:
                    one_start(staging, image, service, args.cpus)
            for _ in range(args.runs):
                for label, image in images.items():
                    for service in args.services:
                        returned, ready = one_start(staging, image, service, args.cpus)
                        found[label, service].returned.append(returned)
                        found[label, service].ready.append(ready)
        finally:
            staging.down()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    limit = f"--cpus {args.cpus}" if args.cpus else "the manifests' CPU limits"
    print(f"podman run -> /readyz 200, {args.runs} runs in turns, {limit} ({load}):")
    for (label, service), timings in found.items():
        print(
            f"  {label:14} {service:22} ready {spread(timings.ready)}"
            f"   podman run returned {spread(timings.returned)}"
        )
        print("    " + " ".join(f"{t:.3f}" for t in timings.ready))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
