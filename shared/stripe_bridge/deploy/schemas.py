"""JSON Schemas of the published CloudEvents and the AsyncAPI 3 document of the stream.

``stripe-bridge generate`` writes them under ``schemas/``, all from the consumer SDK's
models (``stripe_bridge_events``): ``cloudevent.json`` for the envelope every message
shares (``CloudEventMessage``); per translation model its JSON Schema (``$id`` =
``urn:stripe-bridge:schema:<name>.v<N>``, file ``<name>.v<N>.json``) and the schema of the
``data`` of its events, which is what a message's ``dataschema`` names (``$id`` =
``urn:stripe-bridge:data:<name>.v<N>``, file ``data/<name>.v<N>.json``, referring to the
translation's by its URN), plus ``data/untranslated.v1.json`` for every other type; and
``asyncapi.yaml`` naming each subject with its message. tests/consumers validates real
published messages against them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from stripe_bridge_events.events import (
    DATA_SCHEMA_URN_PREFIX,
    TYPE_PREFIX,
    CloudEventMessage,
    EventData,
    data_schema,
)
from stripe_bridge_events.models import SCHEMA_URN_PREFIX, Translation

from .. import __version__, registry
from ..message import CONTENT_TYPE, MSG_ID_HEADER

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ENVELOPE_FILE = "cloudevent.json"
ASYNCAPI_FILE = "asyncapi.yaml"
GENERATED = "Generated from stripe_bridge.registry by `stripe-bridge generate`; do not edit."


def schema_file(schema_urn: str) -> str:
    """The file under ``schemas/`` holding the JSON Schema ``schema_urn`` names.

    A translation's ``urn:stripe-bridge:schema:<name>`` is ``<name>.json``; a ``dataschema``
    ``urn:stripe-bridge:data:<name>`` is ``data/<name>.json``.
    """
    if schema_urn.startswith(DATA_SCHEMA_URN_PREFIX):
        return "data/" + schema_urn.removeprefix(DATA_SCHEMA_URN_PREFIX) + ".json"
    if schema_urn.startswith(SCHEMA_URN_PREFIX):
        return schema_urn.removeprefix(SCHEMA_URN_PREFIX) + ".json"
    raise ValueError(f"not a stripe-bridge schema: {schema_urn!r}")


def _document(schema_id: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": schema_id, "$comment": GENERATED, **schema}


def translation_schema(model: type[Translation]) -> dict[str, Any]:
    """The JSON Schema of ``model`` (``data.translation`` of its events)."""
    return _document(model.dataschema(), model.model_json_schema())


def data_schema_document(model: type[Translation] | None) -> dict[str, Any]:
    """The JSON Schema of ``data`` of events translated into ``model`` (None: untranslated)."""
    schema = EventData.model_json_schema()
    translation: dict[str, Any] = {"type": "null"}
    if model is not None:
        translation = {"anyOf": [{"$ref": model.dataschema()}, {"type": "null"}]}
    description = schema["properties"]["translation"]["description"]
    schema["properties"]["translation"] = {**translation, "description": description}
    return _document(data_schema(model), schema)


def envelope_schema() -> dict[str, Any]:
    """The structured CloudEvent every message is (message.build_message)."""
    schema = CloudEventMessage.model_json_schema()
    return _document("urn:stripe-bridge:schema:cloudevent", schema)


def _payload(data: str, properties: dict[str, Any]) -> dict[str, Any]:
    data_properties = {"dataschema": {"const": data}, "data": {"$ref": schema_file(data)}}
    return {
        "allOf": [
            {"$ref": ENVELOPE_FILE},
            {"required": ["dataschema"], "properties": {**properties, **data_properties}},
        ]
    }


def _message(name: str, title: str, summary: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "title": title,
        "summary": summary,
        "contentType": CONTENT_TYPE,
        "headers": {
            "type": "object",
            "required": [MSG_ID_HEADER],
            "properties": {
                MSG_ID_HEADER: {"type": "string", "description": "The Stripe event id."},
                "Content-Type": {"const": CONTENT_TYPE},
            },
        },
        "payload": payload,
    }


def _mode() -> dict[str, Any]:
    # A fresh dict per channel: a shared one would be written as a YAML anchor and alias.
    return {"enum": ["live", "test"], "description": "Stripe's livemode of the event."}


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the STRIPE stream's subjects (default prefix)."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    entries: list[tuple[str, str, str, str, dict[str, Any], dict[str, Any]]] = [
        (
            t.function_name,
            f"stripe.{{mode}}.{t.name}",
            t.name,
            t.summary,
            _payload(data_schema(t.model), {"type": {"const": TYPE_PREFIX + t.name}}),
            {},
        )
        for t in registry.EVENT_TYPES
    ]
    entries.append(
        (
            "untranslated",
            "stripe.{mode}.{stripeType}",
            "any other Stripe event type",
            "Published untranslated (data.translation is null), nothing dropped.",
            _payload(data_schema(None), {}),
            {"stripeType": {"description": "The Stripe event type, e.g. charge.succeeded."}},
        )
    )
    for key, address, title, summary, payload, parameters in entries:
        messages[key] = _message(key, title, summary, payload)
        channels[key] = {
            "address": address,
            "title": title,
            "parameters": {"mode": _mode(), **parameters},
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
        }
        operations[f"receive_{key}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{key}"},
            "messages": [{"$ref": f"#/channels/{key}/messages/{key}"}],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "stripe-bridge STRIPE stream",
            "version": __version__,
            "description": (
                "Stripe events as CloudEvents 1.0 (structured JSON) on NATS JetStream, one "
                "message per Stripe event. Subjects are <NATS_SUBJECT_PREFIX>.<live|test>."
                "<event type> (prefix `stripe` by default). See docs/consumers.md. " + GENERATED
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def schema_files(root: Path) -> dict[Path, str]:
    """Every file under ``schemas/`` that ``generate`` writes."""
    folder = root / "schemas"
    models = {t.model for t in registry.EVENT_TYPES}
    ordered = sorted(models, key=lambda m: m.SCHEMA)
    files = {folder / schema_file(m.dataschema()): _json(translation_schema(m)) for m in ordered}
    for data in (*ordered, None):
        files[folder / schema_file(data_schema(data))] = _json(data_schema_document(data))
    files[folder / ENVELOPE_FILE] = _json(envelope_schema())
    files[folder / ASYNCAPI_FILE] = f"# {GENERATED}\n" + yaml.safe_dump(
        asyncapi_document(), sort_keys=False, width=100
    )
    return files


def _json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"
