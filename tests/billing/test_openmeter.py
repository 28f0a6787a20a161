"""openmeter.py alone: its settings, Retry-After parsing, answers classified, backoff."""

from __future__ import annotations

import httpx
import pytest
from stripe_bridge.billing.openmeter import (
    ForwarderSettings,
    Verdict,
    backoff_delay,
    classify,
    parse_retry_after,
)
from stripe_bridge.config import ConfigError, load_model


def test_settings_are_the_openmeter_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENMETER_URL", "https://openmeter.example.com")
    monkeypatch.setenv("openmeter_api_key", "om_secret")
    monkeypatch.setenv("OPENMETER_BATCH_SIZE", "50")
    monkeypatch.setenv("BATCH_SIZE", "7")  # not the forwarder's
    settings = load_model(ForwarderSettings)
    assert (settings.url, settings.batch_size, settings.durable) == (
        "https://openmeter.example.com",
        50,
        "openmeter",
    )
    assert settings.api_key.get_secret_value() == "om_secret"


def test_a_bad_setting_is_one_line_naming_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENMETER_URL", "ftp://openmeter.example.com")
    monkeypatch.setenv("OPENMETER_BATCH_SIZE", "0")
    with pytest.raises(ConfigError) as raised:
        load_model(ForwarderSettings)
    line = str(raised.value)
    assert "\n" not in line
    assert line.startswith("invalid configuration: OPENMETER_URL: String should match")
    assert "; OPENMETER_API_KEY: Field required" in line
    assert "; OPENMETER_BATCH_SIZE: Input should be greater than or equal to 1" in line


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


def test_backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half() -> None:
    for attempt in range(64):
        ceiling = min(30.0, 0.5 * 2**attempt)
        for _ in range(20):
            assert ceiling / 2 <= backoff_delay(attempt, base=0.5, cap=30) <= ceiling
