"""stripe_bridge_testing/parallel.py and free_port's slice: xdist workers never share a port."""

from __future__ import annotations

import itertools

import pytest
from stripe_bridge.ops.natsserver import PORT_RANGE, PORTS_ENV, free_port
from stripe_bridge_testing.parallel import worker_ports


def bounds(ports: str) -> tuple[int, int]:
    low, high = ports.split("-")
    return int(low), int(high)


def test_worker_slices_are_disjoint_and_inside_the_range() -> None:
    slices = [bounds(worker_ports(f"gw{i}", 4)) for i in range(4)]
    assert slices[0][0] == PORT_RANGE[0]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(slices))
    assert slices[-1][1] <= PORT_RANGE[1]
    with pytest.raises(ValueError, match="gw4 out of 4"):
        worker_ports("gw4", 4)


def test_free_port_hands_out_only_the_workers_slice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PORTS_ENV, worker_ports("gw2", 3))
    low, high = bounds(worker_ports("gw2", 3))
    ports = {free_port() for _ in range(200)}
    assert len(ports) == 200
    assert all(low <= port < high for port in ports)


def test_a_shared_folder_runs_on_one_worker(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(
        """
        from stripe_bridge_testing.parallel import FolderScheduling

        def pytest_xdist_make_scheduler(config, log):
            return FolderScheduling(config, log, ["shared"])
        """
    )
    test = "import pytest\n@pytest.mark.parametrize('i', range(3))\ndef test_one(i):\n    pass\n"
    for path in ("shared/test_a.py", "shared/test_b.py", "test_c.py", "test_d.py"):
        pytester.path.joinpath(path).parent.mkdir(exist_ok=True)
        pytester.path.joinpath(path).write_text(test)
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "loadfile", "-v")
    result.assert_outcomes(passed=12)
    # "[gw1] [ 25%] PASSED shared/test_a.py::test_one[0]"
    passed = [line.split() for line in result.outlines if " PASSED " in line]
    shared = {words[0] for words in passed if words[-1].startswith("shared/")}
    assert len(shared) == 1, result.outlines
