"""endpoints.py alone: the usage function's settings and the pieces every billing request
passes (strict JSON, ids unique per request, the bearer token), without a server.

The functions themselves are served in tests/billing/test_usage_function.py,
test_checkout.py and tests/test_http.py.
"""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr
from starlette.types import Message
from stripe_bridge.asgi import HttpRequest
from stripe_bridge.billing.endpoints import (
    BillingEndpoint,
    BillingRuntime,
    Refusal,
    UsageSettings,
    check_bearer,
    parse,
    read_json,
    unique_ids,
)
from stripe_bridge.billing.entitlements import EntitlementsFunction
from stripe_bridge.billing.usage import UsageRecord
from stripe_bridge.config import ConfigError, Settings, load_model
from stripe_bridge.http import Reply


async def _no_body() -> Message:
    raise AssertionError("the bearer check reads no body")


def request(authorization: str | None) -> HttpRequest:
    headers = [(b"authorization", authorization.encode())] if authorization else []
    return HttpRequest(
        {"type": "http", "method": "POST", "path": "/", "headers": headers}, _no_body
    )


def test_settings_are_the_usage_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_model(UsageSettings).api_token is None
    monkeypatch.setenv("USAGE_API_TOKEN", "t0ken")
    monkeypatch.setenv("usage_max_records", "10")
    usage = load_model(UsageSettings)
    assert usage.api_token is not None and usage.api_token.get_secret_value() == "t0ken"
    assert usage.max_records == 10
    monkeypatch.setenv("USAGE_MAX_RECORDS", "10001")
    with pytest.raises(ConfigError, match=r"^invalid configuration: USAGE_MAX_RECORDS:"):
        load_model(UsageSettings)


def test_bodies_are_strict_json() -> None:
    assert read_json(b'{"a": 1}') == {"a": 1}
    for bad in (b"{", b'{"a": 1, "a": 2}'):
        with pytest.raises(Refusal) as refused:
            read_json(bad)
        assert (refused.value.status, refused.value.outcome) == (400, "malformed_json")


def test_two_records_with_one_id_are_refused_naming_both() -> None:
    one = {"meter": "tokens", "customer_id": "cus_1", "value": 1, "id": "r1"}
    unique_ids([UsageRecord.model_validate(one)])
    with pytest.raises(Refusal) as refused:
        unique_ids([UsageRecord.model_validate(one), UsageRecord.model_validate(one)])
    assert (refused.value.status, refused.value.message) == (
        422,
        "1.id: duplicates record 0 in this request",
    )


def test_an_invalid_body_is_named_by_field_never_by_value() -> None:
    with pytest.raises(Refusal) as refused:
        parse(UsageRecord, {"meter": "tokens", "customer_id": "cus_secret", "value": "5"})
    assert refused.value.status == 422
    assert refused.value.message.startswith("value: ")
    assert "cus_secret" not in refused.value.message


def test_the_bearer_token_when_one_is_configured() -> None:
    check_bearer(request(None), None)
    token = SecretStr("t0ken")
    check_bearer(request("Bearer t0ken"), token)
    for sent in (None, "Bearer wrong", "t0ken", "bearer t0ken"):
        with pytest.raises(Refusal) as refused:
            check_bearer(request(sent), token)
        assert (refused.value.status, refused.value.outcome) == (401, "unauthorized")


def _logged(caplog: pytest.LogCaptureFixture, endpoint: BillingEndpoint) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="stripe_bridge.billing.endpoints"):
        for status, outcome in ((200, "ok"), (422, "invalid"), (503, "nats_unavailable")):
            endpoint.record(Reply(status, {}, outcome), 0.001)
    return [f"{r.levelname} {r.getMessage().split(' ms=')[0]}" for r in caplog.records]


async def _no_work(_request: HttpRequest, _body: bytes) -> tuple[int, object]:
    raise AssertionError("not called")


def test_log_deliveries_failures_drops_the_line_of_every_2xx_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def endpoint(cls: type[BillingEndpoint], **settings: str) -> BillingEndpoint:
        runtime = BillingRuntime("billing_usage", Settings(**settings))
        return cls(runtime, _no_work, 1024)

    refusals = [
        "INFO billing_usage status=422 outcome=invalid",
        "WARNING billing_usage status=503 outcome=nats_unavailable",
    ]
    assert _logged(caplog, endpoint(BillingEndpoint)) == [
        "INFO billing_usage status=200 outcome=ok",
        *refusals,
    ]
    quiet = endpoint(BillingEndpoint, log_deliveries="failures")
    assert _logged(caplog, quiet) == refusals
    # The entitlements function's answers are on its callers' critical path: DEBUG.
    assert _logged(caplog, endpoint(EntitlementsFunction))[0].startswith("DEBUG ")
