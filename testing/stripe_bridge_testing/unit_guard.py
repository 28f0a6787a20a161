"""The ``servers`` marker, declared by module and held to its declaration (a pytest plugin).

The modules whose tests start no server and no process are listed in the ``unit_modules``
ini option (pyproject.toml); every test elsewhere is marked ``servers``, so a new module
stays out of the quick loop (``pytest -m "not servers"``, scripts/check) until declared.
A test of a unit module that needs a process carries ``@pytest.mark.servers`` itself.

Every test without the marker runs under a Python audit hook: starting a process or
binding a socket fails it, naming what it started, so the declaration cannot drift.
Loaded with ``-p stripe_bridge_testing.unit_guard`` (pyproject.toml's addopts).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

#: Audit events (docs.python.org/3/library/audit_events.html) of starting a process or
#: binding a socket: what a test outside ``servers`` must not do.
SERVER_EVENTS = frozenset(
    {"subprocess.Popen", "os.posix_spawn", "os.fork", "os.exec", "os.system", "socket.bind"}
)

#: What the running unit test started, or None while no unit test runs.
_started: list[str] | None = None


def _record(event: str, args: tuple[object, ...]) -> None:
    # An audit hook must never raise: it would abort the audited call instead.
    if _started is not None and event in SERVER_EVENTS:
        # args[1] is the command line (processes) or the address (socket.bind).
        _started.append(f"{event} {args[1] if len(args) > 1 else args!r}")


sys.addaudithook(_record)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Declare the ``unit_modules`` ini option."""
    parser.addini(
        "unit_modules",
        "test modules (paths from the rootdir) whose tests start no server or process",
        type="linelist",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Declare the ``servers`` marker."""
    config.addinivalue_line(
        "markers",
        "servers: starts a server or process (every module outside the unit_modules ini "
        "option, or the test itself); scripts/check skips these",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test outside the declared unit modules ``servers``."""
    unit = set(config.getini("unit_modules"))
    for item in items:
        if item.path.relative_to(config.rootpath).as_posix() not in unit:
            item.add_marker(pytest.mark.servers)


@pytest.fixture(autouse=True)
def _starts_nothing(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test not marked ``servers`` that starts a process or binds a socket."""
    global _started
    if request.node.get_closest_marker("servers") is not None:
        yield
        return
    _started = []
    try:
        yield
    finally:
        started, _started = _started, None
    if started:
        pytest.fail(
            f"starts a process or server but is not marked servers: {started[0]} "
            "(declare it: @pytest.mark.servers, or leave its module out of unit_modules)",
            pytrace=False,
        )
