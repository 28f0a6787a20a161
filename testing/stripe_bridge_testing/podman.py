"""Containers for the tests and the staging run, through scripts/podman.

Every container and network gets two labels: the run (``STRIPE_BRIDGE_RUN_ID``, set by
scripts/test, whose exit trap removes whatever still carries it) and the stack it belongs
to, which ``Stack.remove`` removes. Names are prefixed per stack, so parallel runs on one
machine never share a container; the names other containers resolve (``nats``,
``nats-0.nats-headless``, ...) are network aliases, private to the stack's network.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .repo import REPO_ROOT

PODMAN = str(REPO_ROOT / "scripts" / "podman")
RUN_LABEL = "io.stripe-bridge.run"
STACK_LABEL = "io.stripe-bridge.stack"
#: Set by scripts/test for its exit trap; one per process otherwise.
RUN_ID = os.environ.get("STRIPE_BRIDGE_RUN_ID") or secrets.token_hex(6)
#: What scripts/bootstrap installs for the container tests: the command or file, its package.
REQUIREMENTS = {
    "podman": "podman",
    "runc": "runc",
    "mmdebstrap": "mmdebstrap",
    "/usr/lib/cni/dnsname": "golang-github-containernetworking-plugin-dnsname",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
}


class PodmanError(RuntimeError):
    """A podman command failed; the message names the command and its last error line."""


def podman(*args: str, timeout: float = 120.0, check: bool = True) -> str:
    """Run ``scripts/podman ARGS``; its stdout, stripped."""
    done = subprocess.run(
        [PODMAN, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise PodmanError(f"podman {' '.join(args[:2])} failed ({done.returncode}): {last}")
    return done.stdout.strip()


def missing_requirement() -> str | None:
    """One line naming what keeps podman from running containers here, or None."""
    absent = [
        package
        for need, package in REQUIREMENTS.items()
        if not (Path(need).exists() if need.startswith("/") else shutil.which(need))
    ]
    if absent:
        return f"podman cannot run: missing Debian packages {', '.join(absent)} (scripts/bootstrap)"
    try:
        podman("info", "--format", "{{.Host.OCIRuntime.Name}}", timeout=60)
    except (PodmanError, subprocess.TimeoutExpired) as exc:
        return f"podman cannot run: {exc}"
    return None


def scripts_image(*args: str) -> str:
    """Run scripts/image ARGS (build or reuse an image); the image's name.

    Callers in other processes (xdist workers, a staging run) take turns on a lock file:
    the second finds the image up to date instead of building it beside the first, which
    failed (both wrote scripts/image's wheel folder at once).
    """
    lock = REPO_ROOT / ".stripe-bridge" / "image.lock"
    lock.parent.mkdir(exist_ok=True)
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        done = subprocess.run(
            [str(REPO_ROOT / "scripts" / "image"), *args],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    if done.returncode != 0:
        raise PodmanError(f"scripts/image {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip().splitlines()[-1]


@dataclass(frozen=True)
class Container:
    """A started container."""

    name: str

    def exit_code(self) -> int | None:
        """The exit code once it has stopped, else None."""
        state = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", self.name)
        status, code = state.split()
        return int(code) if status in ("exited", "stopped") else None

    def logs(self) -> str:
        """What it printed (stdout and stderr)."""
        done = subprocess.run([PODMAN, "logs", self.name], capture_output=True, text=True)
        return done.stdout + done.stderr

    def signal(self, name: str) -> None:
        """Send signal ``name`` (e.g. TERM) to its main process."""
        podman("kill", "--signal", name, self.name)

    def stop(self, seconds: int = 10) -> None:
        """SIGTERM, SIGKILL after ``seconds``."""
        podman("stop", "--time", str(seconds), self.name, timeout=seconds + 60)

    def start(self) -> None:
        """Start it again (same name, mounts and addresses)."""
        podman("start", self.name)


@dataclass
class Stack:
    """Containers on one podman network of their own, removed together."""

    prefix: str
    workdir: Path
    started: list[Container] = field(default_factory=list)

    @property
    def network(self) -> str:
        """The podman network's name."""
        return f"{self.prefix}-net"

    def labels(self) -> list[str]:
        """The ``--label`` arguments every object of the stack carries."""
        return ["--label", f"{RUN_LABEL}={RUN_ID}", "--label", f"{STACK_LABEL}={self.prefix}"]

    def create_network(self) -> None:
        """Create the stack's network (its own subnet and name resolution)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        podman("network", "create", *self.labels(), self.network)

    def run(
        self,
        name: str,
        image: str,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        aliases: Sequence[str] = (),
        publish: Mapping[int, int] | None = None,
        mounts: Sequence[str] = (),
        options: Sequence[str] = (),
    ) -> Container:
        """Start ``image`` detached as ``<prefix>-<name>`` on the stack's network.

        ``publish`` maps container ports to loopback ports on this machine; ``env`` goes
        through a file readable only by root, so no secret shows in a process list.
        """
        full = f"{self.prefix}-{name}"
        command = ["run", "--detach", "--name", full, "--hostname", name, *self.labels()]
        command += ["--network", self.network, "--network-alias", name]
        for alias in aliases:
            command += ["--network-alias", alias]
        for container_port, host_port in (publish or {}).items():
            command += ["--publish", f"127.0.0.1:{host_port}:{container_port}"]
        for mount in mounts:
            command += ["--volume", mount]
        if env:
            env_file = self.workdir / f"{name}.env"
            env_file.touch(mode=0o600)
            env_file.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
            command += ["--env-file", str(env_file)]
        podman(*command, *options, image, *args)
        container = Container(full)
        self.started.append(container)
        return container

    def remove(self) -> None:
        """Remove every container of the stack (running or not) and its network."""
        ids = podman("ps", "--all", "--quiet", "--filter", f"label={STACK_LABEL}={self.prefix}")
        if ids:
            podman("rm", "--force", "--time", "0", *ids.split(), timeout=180)
        if podman("network", "ls", "--quiet", "--filter", f"name=^{self.network}$"):
            podman("network", "rm", "--force", self.network)
