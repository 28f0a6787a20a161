"""Pure pieces: the breaker's state machine, Retry-After parsing, answer classification."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from stripe_bridge.billing.breaker import BreakerState, CircuitBreaker
from stripe_bridge.billing.openmeter import Verdict, classify, parse_retry_after
from stripe_bridge.cli import main


class Clock:
    """A hand-moved clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_half_opens_and_closes() -> None:
    clock = Clock()
    seen: list[BreakerState] = []
    breaker = CircuitBreaker(2, reset_timeout=10, clock=clock, on_change=seen.append)
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.wait_seconds() == 0
    breaker.record_failure()
    # mypy narrowed ``state`` to CLOSED above; the property changes with every call.
    assert breaker.state is BreakerState.OPEN  # type: ignore[comparison-overlap]
    clock.now += 4
    assert breaker.wait_seconds() == 6
    clock.now += 6
    assert breaker.state is BreakerState.HALF_OPEN and breaker.wait_seconds() == 0
    breaker.record_failure()  # the trial failed: open again at once, for a full timeout
    assert breaker.state is BreakerState.OPEN and breaker.wait_seconds() == 10
    clock.now += 10
    assert breaker.wait_seconds() == 0  # callers ask before each attempt: half-open trial
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert seen == [
        BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.OPEN,
        BreakerState.HALF_OPEN, BreakerState.CLOSED,
    ]  # fmt: skip


def test_breaker_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("status", "verdict"),
    [(204, Verdict.ACCEPTED), (400, Verdict.INVALID), (413, Verdict.INVALID),
     (429, Verdict.RATE_LIMITED), (401, Verdict.UNAUTHORIZED), (403, Verdict.UNAUTHORIZED),
     (500, Verdict.UNAVAILABLE), (503, Verdict.UNAVAILABLE), (404, Verdict.UNAVAILABLE),
     (422, Verdict.INVALID), (412, Verdict.PRECONDITION_FAILED)],
)  # fmt: skip
def test_classify(status: int, verdict: Verdict) -> None:
    problem = {"type": "about:blank", "title": "x", "detail": "why", "instance": "urn:x"}
    answer = classify(httpx.Response(status, json=problem, headers={"Retry-After": "3"}))
    assert answer.verdict is verdict
    if verdict in (Verdict.INVALID, Verdict.UNAVAILABLE, Verdict.PRECONDITION_FAILED):
        assert answer.detail == "why"


def test_bad_tier_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "tiers.yaml"
    bad.write_text("tiers: []\n")
    assert main(["project-tiers", "--tiers-file", str(bad)]) == 2
    assert "tier config" in capsys.readouterr().err
