"""stripe_bridge_testing/unit_guard.py: the ``servers`` marker is declared and enforced.

Each case is a small test module run by pytester in this process, with the plugin and a
``unit_modules`` declaration of its own.
"""

from __future__ import annotations

import pytest

UNIT_INI = """
[pytest]
addopts = -p stripe_bridge_testing.unit_guard -p no:cacheprovider
asyncio_default_fixture_loop_scope = function
unit_modules =
    test_unit.py
"""

STARTS_A_PROCESS = """
import subprocess
import pytest

def test_runs_true():
    subprocess.run(["true"], check=True)

@pytest.mark.servers
def test_declared_runs_true():
    subprocess.run(["true"], check=True)
"""

BINDS_A_SOCKET = """
import socket

def test_binds():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))

def test_connects_nowhere():
    assert socket.gethostname()
"""


def test_a_unit_test_that_starts_a_process_fails_naming_it(pytester: pytest.Pytester) -> None:
    pytester.makeini(UNIT_INI)
    pytester.makepyfile(test_unit=STARTS_A_PROCESS)
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_runs_true*",
            "*not marked servers: subprocess.Popen*'true'*",
        ]
    )


def test_a_unit_test_that_binds_a_socket_fails(pytester: pytest.Pytester) -> None:
    pytester.makeini(UNIT_INI)
    pytester.makepyfile(test_unit=BINDS_A_SOCKET)
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*not marked servers: socket.bind ('127.0.0.1', 0)*"])


def test_modules_not_declared_are_marked_servers(pytester: pytest.Pytester) -> None:
    # test_stripe_listen.py starts `stripe-bridge dev` through a subprocess: the old
    # inference (by harness types in its namespace) left it unmarked.
    pytester.makeini(UNIT_INI)
    pytester.makepyfile(test_unit=BINDS_A_SOCKET, test_other=STARTS_A_PROCESS)
    result = pytester.runpytest("-m", "not servers")
    # A failing teardown counts the test as passed (its call) and as an error.
    result.assert_outcomes(passed=2, errors=1, deselected=2)
    result = pytester.runpytest("-m", "servers", "test_other.py")
    result.assert_outcomes(passed=2)
