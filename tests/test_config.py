"""Settings come from the environment as pydantic-settings read them before (config.EnvModel)."""

from __future__ import annotations

import pytest
from pydantic import AliasChoices, AliasPath, Field
from stripe_bridge.config import (
    ConfigError,
    EnvModel,
    IdempotencyBackend,
    LogDeliveries,
    load_model,
    load_settings,
)


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


class Prefixed(EnvModel):
    """A model like the billing functions' settings: a prefix and one aliased field."""

    env_prefix = "THING_"

    size: int = Field(default=1, ge=1)
    path: str | None = Field(
        default=None, validation_alias=AliasChoices("SHARED_PATH", "THING_PATH")
    )


def test_a_prefix_names_the_variables_and_an_alias_skips_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("thing_size", "3")
    monkeypatch.setenv("SIZE", "9")  # not this model's variable
    monkeypatch.setenv("THING_PATH", "/second")
    assert load_model(Prefixed) == Prefixed.model_construct(size=3, path="/second")
    monkeypatch.setenv("shared_path", "/first")
    assert load_model(Prefixed).path == "/first"  # the first alias set wins
    assert load_model(Prefixed, size=5).size == 5


def test_an_aliased_field_given_by_its_name_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHARED_PATH", "/from-env")
    assert load_model(Prefixed, path="/given").path == "/given"
    assert Prefixed(path="/given").path == "/given"


def test_the_variables_a_model_reads() -> None:
    assert Prefixed.variables() == {"THING_SIZE", "SHARED_PATH", "THING_PATH"}


def test_a_prefixed_or_aliased_problem_is_named_by_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("THING_SIZE", "0")
    with pytest.raises(ConfigError, match=r"^invalid configuration: THING_SIZE: .*greater"):
        load_model(Prefixed)
    monkeypatch.delenv("THING_SIZE")

    class Required(Prefixed):
        path: str = Field(validation_alias=AliasChoices("SHARED_PATH", "THING_PATH"))

    with pytest.raises(ConfigError, match=r"^invalid configuration: SHARED_PATH: Field required$"):
        load_model(Required)


def test_an_alias_that_is_no_variable_name_is_a_programming_error() -> None:
    class Nested(EnvModel):
        value: str = Field(default="", validation_alias=AliasPath("outer", "inner"))

    with pytest.raises(TypeError, match="value: an environment alias must be a plain name"):
        Nested()
