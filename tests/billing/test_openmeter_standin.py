"""The OpenMeter ingest stand-in answers as OpenMeter's published contract says.

Facts from openmeterio/openmeter at 7e57a394a0283fb210a644685ad1d257f6d5c85c, cited in
stripe_bridge_testing/openmeter_standin.py (``api/openapi.cloud.yaml`` ``ingestEvents`` and
``Event``, ``openmeter/ingest/httpdriver/ingest.go``, ``openmeter/ingest/service.go``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from stripe_bridge.billing.uri import is_uri_reference
from stripe_bridge_testing.openmeter_standin import Fault, IngestStandIn, RateLimit

from .conftest import API_KEY

BATCH = "application/cloudevents-batch+json"


def event(i: int, **changes: Any) -> dict[str, Any]:
    """A valid usage event."""
    base = {"specversion": "1.0", "id": f"e-{i}", "source": "stripe-bridge", "type": "tokens",
            "subject": "cus_1", "time": "2026-01-01T10:00:00+00:00",
            "datacontenttype": "application/json", "data": {"value": 1}}  # fmt: skip
    return {**base, **changes}


@pytest.fixture
def client(ingest: IngestStandIn) -> Iterator[httpx.Client]:
    """A client of the stand-in with the right key."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=ingest.url, headers=headers, timeout=10) as http:
        yield http


def post(client: httpx.Client, body: Any, content_type: str = BATCH) -> httpx.Response:
    return client.post(
        "/api/v1/events", content=json.dumps(body), headers={"Content-Type": content_type}
    )


def test_errors_are_problem_json_with_documented_statuses(
    ingest: IngestStandIn, client: httpx.Client
) -> None:
    wrong_key = client.post("/api/v1/events", headers={"Authorization": "Bearer nope"})
    answers = [wrong_key]
    for status in (403, 412, 500, 503):
        ingest.fail_next(1, status)
        answers.append(post(client, [event(0)]))
    assert [a.status_code for a in answers] == [401, 403, 412, 500, 503]
    for answer in answers:
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert {"type", "title", "detail", "instance"} <= problem.keys()
        assert problem["status"] == answer.status_code
    assert answers[2].json()["title"] == "Precondition Failed"
    assert ingest.accepted == []


def test_statuses_openmeter_never_answers_cannot_be_scripted() -> None:
    for status in (404, 409, 418, 422, 502):
        with pytest.raises(ValueError, match="does not answer"):
            Fault(status)
    assert Fault(429).status == 429  # a gateway's rate limit in front of OpenMeter
    assert Fault(413).status == 413  # a proxy's body limit


def test_content_types_are_compared_whole(ingest: IngestStandIn, client: httpx.Client) -> None:
    assert post(client, event(1), "application/cloudevents+json").status_code == 204
    assert post(client, [event(2), event(3)], BATCH).status_code == 204
    assert post(client, event(4), "application/json").status_code == 204
    assert post(client, [event(5)], "application/json").status_code == 204
    charset = post(client, [event(6)], f"{BATCH}; charset=utf-8")
    assert charset.status_code == 400
    assert charset.json()["detail"] == f"invalid content type: {BATCH}; charset=utf-8"
    assert post(client, [event(7)], "application/cloudevents+json").status_code == 400
    assert post(client, event(8), BATCH).status_code == 400
    assert [i for i, _ in ingest.accepted] == ["e-1", "e-2", "e-3", "e-4", "e-5"]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"source": "agent town"}, "source must be a URI-reference"),
        ({"subject": ""}, "subject must be a non-empty string"),
        ({"id": 7}, "id must be a non-empty string"),
        ({"specversion": "0.2"}, "specversion must be 1.0"),
        ({"datacontenttype": "text/plain"}, "datacontenttype must be application/json"),
        ({"dataschema": "schemas/x.json"}, "dataschema must be a URI"),
        ({"time": "2026-01-01 10:00:00"}, "time must be an RFC 3339 date-time"),
        ({"time": "2026-02-30T10:00:00Z"}, "time must be an RFC 3339 date-time"),
        ({"data": "not-an-object"}, "data must be a JSON object"),
    ],
)
def test_one_invalid_event_refuses_the_whole_request(
    ingest: IngestStandIn, client: httpx.Client, change: dict[str, Any], problem: str
) -> None:
    answer = post(client, [event(0), event(1, **change), event(2)])
    assert answer.status_code == 400
    assert answer.json()["detail"] == f"invalid event: event 1: {problem}"
    assert ingest.accepted == []


def test_nullable_fields_may_be_null(ingest: IngestStandIn, client: httpx.Client) -> None:
    nulls = {"time": None, "data": None, "datacontenttype": None, "dataschema": None}
    assert post(client, [event(0, **nulls)]).status_code == 204
    assert post(client, [event(1, dataschema="https://example.com/s.json")]).status_code == 204


def test_events_are_ingested_one_at_a_time(ingest: IngestStandIn, client: httpx.Client) -> None:
    """A failure mid-batch keeps what came before it: OpenMeter rolls nothing back."""
    ingest.fail_midway(after=2)
    failed = post(client, [event(i) for i in range(5)])
    retried = post(client, [event(i) for i in range(5)])
    assert (failed.status_code, retried.status_code) == (500, 204)
    assert ingest.counts() == {**{(f"e-{i}", "stripe-bridge"): 2 for i in range(2)},
                               **{(f"e-{i}", "stripe-bridge"): 1 for i in range(2, 5)}}  # fmt: skip
    assert ingest.metered() == ingest.counts()  # dedupe off: self-hosted's default


def test_dedupe_meters_each_id_and_source_once() -> None:
    with IngestStandIn(API_KEY, dedupe=True) as ingest:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=ingest.url, headers=headers, timeout=10) as client:
            ingest.fail_midway(after=2)
            post(client, [event(i) for i in range(3)])
            post(client, [event(i) for i in range(3)])
            post(client, [event(0, source="other")])
        assert ingest.counts()[("e-0", "stripe-bridge")] == 2
        assert set(ingest.metered().values()) == {1}
        assert len(ingest.metered()) == 4


def test_rate_limit_answers_429_with_retry_after_and_ingests_nothing() -> None:
    # https://openmeter.io/docs/cloud/api/rate-limiting: over the limit, 429 and Retry-After.
    with IngestStandIn(API_KEY, rate_limit=2) as ingest:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=ingest.url, headers=headers, timeout=10) as client:
            answers = [post(client, [event(i)]) for i in range(3)]
            invalid = post(client, [event(9, id="")])
        assert [a.status_code for a in answers] == [204, 204, 429]
        assert answers[2].headers["content-type"] == "application/problem+json"
        assert answers[2].json()["status"] == 429
        assert int(answers[2].headers["retry-after"]) >= 1
        assert invalid.status_code == 429  # the gateway refuses before OpenMeter reads it
        assert set(ingest.counts()) == {("e-0", "stripe-bridge"), ("e-1", "stripe-bridge")}
        assert ingest.rate_limit is not None and ingest.rate_limit.early_retries == 1


def test_rate_limit_refills_and_counts_retries_before_retry_after() -> None:
    now = [100.0]
    limit = RateLimit(4, clock=lambda: now[0])
    assert [limit.take() for _ in range(5)] == [None, None, None, None, 1]
    now[0] += 0.5  # two tokens back, but the client was told to wait 1 s
    assert limit.take() == 1 and limit.early_retries == 1  # and waits 1 s from now
    now[0] += 1.0
    assert [limit.take() for _ in range(4)] == [None, None, None, None]
    with pytest.raises(ValueError):
        RateLimit(0)


# RFC 3986 section 5.4 (every example reference is a URI-reference) and refusals.
VALID_REFERENCES = ["g:h", "g", "./g", "g/", "/g", "//g", "?y", "g?y", "#s", "g#s", "g?y#s",
                    ";x", "g;x", "g;x?y#s", ".", "./", "..", "../g", "../../g", "stripe-bridge",
                    "stripe-bridge/lifecycle", "https://agents.example:8443/town?x=1#y",
                    "urn:agent:town", "//[2001:db8::1]:80/p", "a%20b",
                    "mailto:a@b.example"]  # fmt: skip
INVALID_REFERENCES = ["agent town", ":x", "a%zz", "a%2", "http://[::1/x", "a\\b", "a<b>",
                      "a\nb", "a#b#c", "1http://x"]  # fmt: skip


def test_uri_reference_follows_rfc_3986() -> None:
    assert [r for r in VALID_REFERENCES if not is_uri_reference(r)] == []
    assert [r for r in INVALID_REFERENCES if is_uri_reference(r)] == []
