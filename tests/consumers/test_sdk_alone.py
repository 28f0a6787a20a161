"""The SDK installs alone, without the bridge's dependencies, and parses real messages.

A fresh virtualenv gets exactly ``stripe-bridge-events`` and what uv.lock pins for it
(``uv sync --package``, offline, not editable: a real install of the wheel built from
sdk/); its interpreter then parses every message the bridge stored.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from stripe_bridge_events import TypedEvent, parse
from stripe_bridge_testing.repo import REPO_ROOT

from .conftest import Published

UV = REPO_ROOT / ".tools" / "bin" / "uv"
#: pydantic and its own dependencies: nothing of the bridge (Starlette, nats-py, redis...).
EXPECTED = {
    "stripe-bridge-events",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-extensions",
    "typing-inspection",
}
PARSE_ALL = """
import json, sys
from stripe_bridge_events import TypedEvent, parse
for line in open(sys.argv[1]):
    event = parse(line.encode())
    kind = type(event.translation).__name__ if isinstance(event, TypedEvent) else event.reason
    print(json.dumps([event.id, event.stripe_type, str(kind)]))
"""


def summary(event_body: bytes) -> list[str]:
    event = parse(event_body)
    kind = type(event.translation).__name__ if isinstance(event, TypedEvent) else event.reason
    return [event.id, event.stripe_type, str(kind)]


def test_the_sdk_alone_in_a_fresh_venv_parses_real_published_messages(
    published: list[Published], tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never"}
    subprocess.run(
        [str(UV), "sync", "--quiet", "--frozen", "--offline", "--no-editable",
         "--package", "stripe-bridge-events", "--no-default-groups"],
        cwd=REPO_ROOT, env=env, check=True, timeout=180,
    )  # fmt: skip
    python = str(venv / "bin" / "python")
    listed = subprocess.run(
        [str(UV), "pip", "list", "--python", python, "--format", "json"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert {d["name"] for d in json.loads(listed.stdout)} == EXPECTED
    no_bridge = "import importlib.util as u; print([u.find_spec(m) is None for m in %r])"
    modules = ["stripe_bridge", "nats", "starlette", "redis", "stripe"]
    # -I: the repository's folders (nats/ is one) must not count as importable packages.
    check = subprocess.run(
        [python, "-I", "-c", no_bridge % modules], capture_output=True, text=True, cwd=tmp_path
    )
    assert check.stdout.strip() == str([True] * len(modules)), check.stderr

    bodies = tmp_path / "messages.jsonl"
    bodies.write_bytes(b"".join(m.body + b"\n" for m in published))
    result = subprocess.run(
        [python, "-I", "-c", PARSE_ALL, str(bodies)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    parsed = [json.loads(line) for line in result.stdout.splitlines()]
    assert parsed == [summary(m.body) for m in published]
    kinds = {kind for _id, _type, kind in parsed}
    assert {
        "InvoiceChanged",
        "SubscriptionChanged",
        "not_translated",
        "translation_failed",
    } <= kinds
