"""exitcodes.py: one meaning per code, the same for every command, and its table."""

from __future__ import annotations

from stripe_bridge.exitcodes import MEANING, ExitCode, exit_code_table
from stripe_bridge_testing.repo import REPO_ROOT


def test_the_codes_scripts_act_on_do_not_change() -> None:
    assert {code.name: code.value for code in ExitCode} == {
        "OK": 0,
        "FAILED": 1,
        "CONFIG": 2,
        "UNAVAILABLE": 3,
        "NOT_FOUND": 4,
        "NO_PROGRAM": 127,
        "INTERRUPTED": 130,
    }


def test_every_code_has_one_row_with_its_meaning() -> None:
    lines = exit_code_table().splitlines()
    assert lines[:2] == ["| code | name | meaning |", "| --- | --- | --- |"]
    assert len(lines) == 2 + len(ExitCode)
    for code, line in zip(ExitCode, lines[2:], strict=True):
        assert line == f"| {code.value} | `{code.name}` | {MEANING[code]} |"
        assert "\n" not in MEANING[code]


def test_docs_cli_holds_the_table() -> None:
    assert exit_code_table() in (REPO_ROOT / "docs" / "cli.md").read_text()
