"""schemas/: the AsyncAPI 3 document is valid AsyncAPI, and real messages match it.

Every message the bridge stored (tests/consumers/conftest.py) is validated against the
payload schema of the AsyncAPI channel whose address matches its subject, and its ``data``
against the JSON Schema its ``dataschema`` names, as CloudEvents defines that attribute.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from jsonschema_specifications import REGISTRY as META_SCHEMAS
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7, DRAFT202012
from stripe_bridge.deploy.schemas import schema_file
from stripe_bridge_testing.repo import REPO_ROOT

from .conftest import BROKEN_INVOICE_ID, Published

SCHEMAS = REPO_ROOT / "schemas"
ASYNCAPI_SCHEMA = Path(__file__).parent / "asyncapi-3.0.0.schema.json"
#: A base for the relative $refs of schemas/asyncapi.yaml (any URI works; it names files).
BASE = "file:///schemas/"


def asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((SCHEMAS / "asyncapi.yaml").read_text())
    return document


def schema_registry() -> Registry:
    """Every file of schemas/ by its URI under BASE and by its $id (the URN refs use it)."""
    resources = []
    for path in SCHEMAS.rglob("*.json"):
        schema = json.loads(path.read_text())
        resource = DRAFT202012.create_resource(schema)
        resources += [(BASE + str(path.relative_to(SCHEMAS)), resource), (schema["$id"], resource)]
    return Registry().with_resources(resources)


def dataschema_validator(dataschema: str) -> jsonschema.Draft202012Validator:
    """A validator of the schema file ``dataschema`` names, its $refs resolved."""
    schema = json.loads((SCHEMAS / schema_file(dataschema)).read_text())
    assert schema["$id"] == dataschema  # the URN resolves to this file
    return jsonschema.Draft202012Validator(schema, registry=schema_registry())


def test_the_asyncapi_document_is_valid_asyncapi_3() -> None:
    bundle = json.loads(ASYNCAPI_SCHEMA.read_text())["schemas"]
    registry = META_SCHEMAS.with_resources(
        (uri, Resource.from_contents(schema, default_specification=DRAFT7))
        for uri, schema in bundle.items()
    )
    root = bundle["http://asyncapi.com/definitions/3.0.0/asyncapi.json"]
    validator = jsonschema.Draft7Validator(root, registry=registry)
    validator.validate(asyncapi())
    broken = asyncapi()
    broken["operations"]["receive_invoice_paid"]["action"] = "consume"  # send | receive only
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def channel_for(subject: str) -> dict[str, Any]:
    """The channel whose address (parameters as one token, stripeType as the rest) matches."""
    matches = []
    for channel in asyncapi()["channels"].values():
        pattern = re.escape(channel["address"]).replace(r"\{mode\}", "(live|test)")
        pattern = pattern.replace(r"\{stripeType\}", r"[a-z0-9_.]+")
        if re.fullmatch(pattern, subject):
            matches.append(channel)
    # A translated type matches its own channel and the untranslated catch-all one.
    return min(matches, key=lambda c: "{stripeType}" in c["address"])


def payload_validator(channel: dict[str, Any]) -> jsonschema.Draft202012Validator:
    (message,) = channel["messages"].values()
    name = message["$ref"].rsplit("/", 1)[1]
    payload = asyncapi()["components"]["messages"][name]["payload"]
    return jsonschema.Draft202012Validator(
        {"$id": BASE + "asyncapi.yaml", **payload},
        registry=schema_registry(),
        format_checker=jsonschema.FormatChecker(),
    )


def test_every_published_message_matches_its_channel_and_dataschema(
    published: list[Published],
) -> None:
    translated = 0
    for message in published:
        body = json.loads(message.body)
        channel = channel_for(message.subject)
        payload_validator(channel).validate(body)
        headers = asyncapi()["components"]["messages"][next(iter(channel["messages"]))]["headers"]
        jsonschema.validate(message.headers, headers)
        # CloudEvents: dataschema identifies the schema that data adheres to.
        dataschema_validator(body["dataschema"]).validate(body["data"])
        translated += body["data"]["translation"] is not None
    assert translated >= 8  # the registered types' fixtures, pre-basil and basil
    broken = [m for m in published if json.loads(m.body)["id"] == BROKEN_INVOICE_ID]
    assert broken and json.loads(broken[0].body)["data"]["translation"] is None


def test_the_schemas_refuse_a_message_that_breaks_them(published: list[Published]) -> None:
    message = next(m for m in published if m.subject == "stripe.test.invoice.paid")
    body = json.loads(message.body)
    validator = payload_validator(channel_for(message.subject))
    validator.validate(body)
    mutations: list[Callable[[dict[str, Any]], object]] = [
        lambda b: b["data"]["translation"].pop("amount_paid"),
        lambda b: b["data"]["translation"].update(currency=7),
        lambda b: b.update(type="com.stripe.invoice.voided"),
        lambda b: b["data"].pop("stripe"),
        lambda b: b.update(dataschema="urn:stripe-bridge:data:untranslated.v1"),
    ]
    for mutate in mutations:
        bad = copy.deepcopy(body)
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(bad)
    data_validator = dataschema_validator(body["dataschema"])
    for mutate in mutations[:2]:
        bad = copy.deepcopy(body)
        mutate(bad)
        with pytest.raises(jsonschema.ValidationError):
            data_validator.validate(bad["data"])
