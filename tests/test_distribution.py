"""The function image installs only the runtime package: no test harness, no tests.

The wheel is built as scripts/image builds the one the Containerfile installs (``uv build
--wheel``), from a folder holding only pyproject.toml, README.md and shared/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from stripe_bridge_testing.repo import REPO_ROOT

HARNESS = REPO_ROOT / "testing" / "stripe_bridge_testing"


def test_the_image_distribution_holds_no_test_code(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    shutil.copytree(
        REPO_ROOT / "shared",
        src / "shared",
        ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"),
    )
    subprocess.run(
        [str(REPO_ROOT / ".tools" / "bin" / "uv"), "build", "--wheel", "--offline", "--quiet",
         "--python", sys.executable, "--out-dir", str(tmp_path / "dist"), str(src)],
        check=True, timeout=120,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("stripe_bridge-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        sources = {n: archive.read(n).decode() for n in names if n.endswith(".py")}
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    packages = {name.split("/")[0] for name in names}
    assert packages == {"stripe_bridge", wheel.name.split("-py3")[0] + ".dist-info"}
    # The package data the runtime and the deploy wing read is in it...
    assert "stripe_bridge/deploy/templates/nats.conf.tmpl" in names
    assert "stripe_bridge/ops/samples/invoice_paid.json" in names
    # ...and none of the harness: not its modules, not an import of it or of tests.
    harness = {p.stem for p in HARNESS.glob("*.py")} - {"__init__"}
    assert {"processes", "natscluster", "openmeter_standin", "standin"} <= harness
    assert not {Path(name).stem for name in sources} & harness
    importing = re.compile(r"^\s*(from|import)\s+(stripe_bridge_testing|tests)\b", re.M)
    assert [name for name, text in sources.items() if importing.search(text)] == []
    # The Containerfile's ENTRYPOINT is a console script of this wheel.
    entrypoint = re.search(
        r'^ENTRYPOINT \["([^"]+)"', (REPO_ROOT / "Containerfile").read_text(), re.M
    )
    assert entrypoint is not None
    assert re.search(rf"^{re.escape(entrypoint[1])} = stripe_bridge\.", scripts, re.M), scripts
