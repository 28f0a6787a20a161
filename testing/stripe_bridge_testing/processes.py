"""Local server processes for tests and benchmarks: redis-server, bridge functions, Prometheus.

Every process binds to loopback on a free port, lives in a temporary folder and is
stopped by its ``stop`` (or the context manager), never left behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Self

from stripe_bridge.ops.natsserver import free_port

from .waiting import wait_until


def rss_mib(pid: int) -> float:
    """Resident set size of process ``pid`` in MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class ManagedProcess:
    """A child process with a log file, stopped with SIGTERM then SIGKILL."""

    def __init__(self, log_file: Path) -> None:
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    def _spawn(self, args: list[str], env: Mapping[str, str] | None = None) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=dict(env) if env else None
            )

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.process is not None and self.process.poll() is None

    def _check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"process exited; log:\n{self.log()}")

    def log(self) -> str:
        """What the process printed so far."""
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def _http_ok(self, url: str) -> bool:
        """Whether the (still running) process answers ``url`` with 200."""
        self._check_alive()
        try:
            with urllib.request.urlopen(url, timeout=0.5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def start(self, timeout: float = 20.0) -> Self:
        """Start the process and wait until it is ready."""
        raise NotImplementedError

    def _wait_ready(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """``wait_until`` ready; a process that never gets there is stopped, not left behind."""
        try:
            wait_until(ready, timeout, what)
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; return the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode


class RedisServer(ManagedProcess):
    """A throwaway redis-server (Debian's package) without persistence."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir / "redis.log")
        self.workdir = workdir
        self.port = port or free_port()

    @property
    def url(self) -> str:
        """The redis:// URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _pong(self) -> bool:
        self._check_alive()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = 10.0) -> Self:
        """Start redis-server and wait for PONG."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._spawn(
            [
                "redis-server",
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
            ]
        )  # fmt: skip
        self._wait_ready(self._pong, timeout, "redis-server")
        return self


class FunctionProcess(ManagedProcess):
    """One bridge function served exactly as the container does (``stripe-bridge-serve``)."""

    def __init__(
        self,
        function_name: str,
        env: Mapping[str, str],
        workdir: Path,
        repo_root: Path,
        port: int | None = None,
        command: list[str] | None = None,
    ) -> None:
        super().__init__(workdir / f"{function_name}-{id(self)}.log")
        self.function_name = function_name
        self.port = port or free_port()
        self.source = repo_root / "functions" / function_name / "main.py"
        self.env = {**os.environ, **env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        self.command = command or [
            sys.executable, "-m", "stripe_bridge.serve", "--source", str(self.source),
        ]  # fmt: skip

    @property
    def url(self) -> str:
        """Base URL, ending in ``/``."""
        return f"http://127.0.0.1:{self.port}/"

    def _healthy(self) -> bool:
        return self._http_ok(self.url + "healthz")

    def spawn(self) -> FunctionProcess:
        """Start the function without waiting (cold-start measurements poll it themselves)."""
        self._spawn(self.command, self.env)
        return self

    def start(self, timeout: float = 20.0) -> Self:
        """Start the function and wait until /healthz answers."""
        self.spawn()
        self._wait_ready(self._healthy, timeout, f"function {self.function_name}")
        return self


class PrometheusComponent(ManagedProcess):
    """A Prometheus-project server on a free port in ``workdir``, ready at ``/-/ready``."""

    name = "prometheus-component"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir / f"{self.name}.log")
        self.workdir = workdir
        self.port = port or free_port()

    @property
    def url(self) -> str:
        """Base URL without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The command line (files it needs are written by then)."""
        raise NotImplementedError

    def start(self, timeout: float = 20.0) -> Self:
        """Start the server and wait for /-/ready."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._spawn(self.command())
        self._wait_ready(lambda: self._http_ok(self.url + "/-/ready"), timeout, self.name)
        return self


class PushgatewayServer(PrometheusComponent):
    """A Prometheus Pushgateway (Debian's ``prometheus-pushgateway``) without persistence."""

    name = "pushgateway"

    def command(self) -> list[str]:
        """The Pushgateway's command line."""
        return [
            "prometheus-pushgateway",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-admin-api",
            # Debian's build defaults to /var/lib/prometheus/pushgateway.data, which
            # every instance would share; empty keeps metrics in memory only.
            "--persistence.file=",
        ]


class PrometheusServer(PrometheusComponent):
    """A Prometheus server (Debian's ``prometheus``) with the given config, in a temp dir."""

    name = "prometheus"

    def __init__(self, workdir: Path, config: str, port: int | None = None) -> None:
        super().__init__(workdir, port)
        self.config = config

    def command(self) -> list[str]:
        """Write the config; Prometheus' command line."""
        config_file = self.workdir / "prometheus.yml"
        config_file.write_text(self.config)
        return [
            "prometheus",
            f"--config.file={config_file}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
        ]


class BlackHoleServer:
    """A loopback TCP server that accepts connections and never answers (a hung dependency).

    Runs in a daemon thread; ``accepted`` counts the connections, so a test can tell that
    the client under test did try.
    """

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        """An http:// URL pointing at it."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def accepted(self) -> int:
        """How many connections were accepted so far."""
        return len(self.connections)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections.append(conn)

    def __enter__(self) -> BlackHoleServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self.connections:
            conn.close()
        self.sock.close()
