"""The Containerfile's statically checkable facts, and the pinned requirements.lock.

No Docker or Podman engine runs here, so the image is not built in tests: these checks
read the Containerfile instead (multi-stage, non-root, exec-form entrypoint, port) and
prove the lock file pins every runtime dependency of pyproject.toml at the version the
test suite runs with.
"""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from stripe_bridge import knative
from stripe_bridge.lockfile import IMAGE_EXTRAS, LOCK_FILE, lock_text, parse_lock, resolve

from ..helpers import REPO_ROOT

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
    assert entrypoint == '["stripe-bridge", "serve"]', "exec form: SIGTERM must reach the server"


def test_port_and_function_defaults() -> None:
    assert instructions("EXPOSE") == [str(knative.CONTAINER_PORT)]
    assert f"functions {knative.FUNCTIONS_DIR}" in instructions("COPY")
    env = " ".join(instructions("ENV"))
    assert "PORT=8080" in env
    assert "FUNCTION_TARGET=handle" in env
    assert "FUNCTION_SOURCE=/app/functions/" in env


def test_dependencies_installed_only_from_the_lock_file() -> None:
    runs = " ".join(instructions("RUN"))
    assert f"--no-deps -r /src/{LOCK_FILE}" in runs
    assert "pip check" in runs
    assert all("--no-deps" in r for r in instructions("RUN") if "pip install" in r)


def test_lock_file_is_fresh() -> None:
    on_disk = (REPO_ROOT / LOCK_FILE).read_text()
    assert on_disk == lock_text(REPO_ROOT), "run `stripe-bridge knative lock`"


def test_lock_covers_every_runtime_dependency_exactly() -> None:
    pins = parse_lock((REPO_ROOT / LOCK_FILE).read_text())
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    image_extras = [
        text for extra in IMAGE_EXTRAS for text in project["optional-dependencies"][extra]
    ]
    for text in project["dependencies"] + image_extras:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is a runtime dependency but not pinned"
        assert requirement.specifier.contains(pins[name], prereleases=True)
    assert "stripe" in pins, "the checkout and portal functions need stripe-python"
    assert "kubernetes" not in pins, "deploy extra must stay out of the image"
    assert "pytest" not in pins
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", v) for v in pins.values()), pins


def test_resolve_follows_transitive_requirements() -> None:
    pins = resolve(["functions-framework"])
    assert {"functions-framework", "flask", "werkzeug"} <= set(pins)


def test_ignore_files_keep_the_build_context_small() -> None:
    ignore = (REPO_ROOT / ".containerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignore)
    assert (REPO_ROOT / ".dockerignore").read_text() == (REPO_ROOT / ".containerignore").read_text()
    copied = {i.split()[0] for i in instructions("COPY") if not i.startswith("--from")}
    assert not copied & set(ignore), "the Containerfile copies something the ignore file drops"
