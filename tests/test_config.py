"""Settings come from the environment as pydantic-settings read them before (config.EnvModel)."""

from __future__ import annotations

import pytest
from stripe_bridge.config import ConfigError, IdempotencyBackend, LogDeliveries, load_settings


def test_variables_in_any_case_and_keywords_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLISH_TIMEOUT", "2.5")
    monkeypatch.setenv("nats_stream", "OTHER")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", " whsec_a , whsec_b ,")
    monkeypatch.setenv("LOG_DELIVERIES", "failures")
    monkeypatch.setenv("RETRY_AFTER_SECONDS", "60")
    monkeypatch.setenv("NOT_A_SETTING", "ignored")
    settings = load_settings(retry_after_seconds=5)
    assert settings.publish_timeout == 2.5
    assert settings.nats_stream == "OTHER"
    assert settings.secrets() == [b"whsec_a", b"whsec_b"]
    assert settings.log_deliveries is LogDeliveries.FAILURES
    assert settings.retry_after_seconds == 5
    assert settings.idempotency_backend is IdempotencyBackend.MEMORY  # the default


def test_invalid_values_are_named_by_their_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLISH_TIMEOUT", "soon")
    monkeypatch.setenv("LOG_DELIVERIES", "some")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert "PUBLISH_TIMEOUT:" in str(raised.value)
    assert "LOG_DELIVERIES:" in str(raised.value)
    monkeypatch.delenv("PUBLISH_TIMEOUT")
    monkeypatch.delenv("LOG_DELIVERIES")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "sk_live_not_a_webhook_secret")
    with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_SECRET"):
        load_settings()
