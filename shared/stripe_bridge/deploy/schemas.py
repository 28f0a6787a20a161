"""JSON Schemas of the published CloudEvents and the AsyncAPI 3 document of the stream.

``stripe-bridge generate`` writes them under ``schemas/``: one JSON Schema per
``dataschema`` (from the SDK's models, ``$id`` = the ``dataschema`` URN, file
``<name>.v<N>.json``), ``cloudevent.json`` for the envelope every message shares, and
``asyncapi.yaml`` naming each subject with its message. tests/consumers validates real
published messages against them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from stripe_bridge_events.models import SCHEMA_URN_PREFIX, Translation

from .. import __version__, registry
from ..message import CONTENT_TYPE, MSG_ID_HEADER

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ENVELOPE_FILE = "cloudevent.json"
ASYNCAPI_FILE = "asyncapi.yaml"
GENERATED = "Generated from stripe_bridge.registry by `stripe-bridge generate`; do not edit."


def schema_file(dataschema: str) -> str:
    """The file under ``schemas/`` holding the JSON Schema of ``dataschema``."""
    if not dataschema.startswith(SCHEMA_URN_PREFIX):
        raise ValueError(f"not a stripe-bridge dataschema: {dataschema!r}")
    return dataschema.removeprefix(SCHEMA_URN_PREFIX) + ".json"


def translation_schema(model: type[Translation]) -> dict[str, Any]:
    """The JSON Schema of ``model`` (``data.translation`` of its events)."""
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": model.dataschema(),
        "$comment": GENERATED,
        **model.model_json_schema(),
    }


def envelope_schema() -> dict[str, Any]:
    """The structured CloudEvent every message is (message.build_message)."""
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": "urn:stripe-bridge:schema:cloudevent",
        "$comment": GENERATED,
        "title": "stripe-bridge CloudEvent",
        "type": "object",
        "required": [
            "specversion", "id", "type", "source", "time", "datacontenttype",
            "stripelivemode", "data",
        ],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string", "pattern": "^evt_", "description": "The Stripe event id."},
            "type": {"type": "string", "pattern": r"^com\.stripe\.[a-z0-9_]+(\.[a-z0-9_]+)+$"},
            "source": {"type": "string", "pattern": r"^urn:stripe:(live|test)(:acct_\w+)?$"},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"const": "application/json"},
            "stripelivemode": {"type": "boolean"},
            "subject": {"type": "string", "description": "Id of the object the event is about."},
            "stripeapiversion": {"type": "string"},
            "dataschema": {"type": "string", "pattern": "^" + SCHEMA_URN_PREFIX},
            "translationerror": {"type": "string"},
            "data": {
                "type": "object",
                "required": ["translation", "stripe"],
                "properties": {
                    "translation": {"type": ["object", "null"]},
                    "stripe": {
                        "type": "object",
                        "description": "The Stripe event exactly as Stripe sent it.",
                        "required": ["id", "object", "type", "created", "livemode", "data"],
                        "properties": {"object": {"const": "event"}},
                    },
                },
            },
        },
    }  # fmt: skip


def _payload(event_type: registry.EventType) -> dict[str, Any]:
    translation = {
        "anyOf": [{"$ref": schema_file(event_type.model.dataschema())}, {"type": "null"}]
    }
    return {
        "allOf": [
            {"$ref": ENVELOPE_FILE},
            {
                "properties": {
                    "type": {"const": f"com.stripe.{event_type.name}"},
                    "dataschema": {"const": event_type.model.dataschema()},
                    "data": {"properties": {"translation": translation}},
                },
            },
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
        (t.function_name, f"stripe.{{mode}}.{t.name}", t.name, t.summary, _payload(t), {})
        for t in registry.EVENT_TYPES
    ]
    entries.append(
        (
            "untranslated",
            "stripe.{mode}.{stripeType}",
            "any other Stripe event type",
            "Published untranslated (data.translation is null), nothing dropped.",
            {
                "allOf": [
                    {"$ref": ENVELOPE_FILE},
                    {"properties": {"data": {"properties": {"translation": {"type": "null"}}}}},
                ]
            },
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
    files = {
        folder / schema_file(model.dataschema()): json.dumps(translation_schema(model), indent=2)
        + "\n"
        for model in sorted(models, key=lambda m: m.SCHEMA)
    }
    files[folder / ENVELOPE_FILE] = json.dumps(envelope_schema(), indent=2) + "\n"
    files[folder / ASYNCAPI_FILE] = f"# {GENERATED}\n" + yaml.safe_dump(
        asyncapi_document(), sort_keys=False, width=100
    )
    return files
