"""Stripe's request contract, read from stripe-python's own generated request types.

stripe-python (pinned 16.1.0 in uv.lock, API version ``2026-10-28.endive``, its
``stripe._api_version``) is generated from Stripe's OpenAPI spec; every endpoint's
parameters are a ``TypedDict`` in ``stripe.params`` (``stripe/params/_event_list_params.py``
``EventListParams``, ``stripe/params/checkout/_session_create_params.py``
``SessionCreateParams``...). ``check`` validates a decoded form against one of them the way
Stripe's API does, answering the first problem as Stripe's error object
(docs.stripe.com/api/errors, docs.stripe.com/error-codes):

- a key the type does not have: ``parameter_unknown``;
- a required key absent: ``parameter_missing``;
- an integer that is not one: ``parameter_invalid_integer``;
- a value outside an enum (``Literal[...]``), or a boolean that is not ``true``/``false``:
  ``invalid_request_error`` with ``param`` and no ``code``, as Stripe answers it
  (``Invalid mode: must be one of payment, setup, or subscription``).

The generated types spell enums ``Literal[...] | str``: the ``str`` lets code built against
this library send values a newer API version adds. The pinned API version accepts only the
``Literal`` values, so that is what is checked.

``decode_form`` turns Stripe's form encoding (``a[b]=``, ``a[0][b]=``, ``a[]=``) back into
the nested dicts and lists the types describe.
"""

from __future__ import annotations

import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from typing import Any, Literal, NotRequired, Required, Union

import stripe._request_options
from stripe._stripe_context import StripeContext
from stripe._stripe_object import UntypedStripeObject

Form = dict[str, Any]
_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_INTEGER = re.compile(r"^-?\d+$")
#: Request options (api_key, idempotency_key...) share the TypedDicts but are no parameters.
_OPTIONS = frozenset(stripe._request_options.RequestOptions.__annotations__)


@dataclass
class Refusal(Exception):
    """One refusal, as Stripe's ``{"error": {...}}`` body with its HTTP status."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    type: str = "invalid_request_error"

    def body(self) -> dict[str, Any]:
        """Stripe's error object (keys it has no value for are left out)."""
        error = {"type": self.type, "message": self.message, "param": self.param, "code": self.code}
        return {"error": {key: value for key, value in error.items() if value is not None}}


def decode_form(pairs: list[tuple[str, str]]) -> Form:
    """Nested dicts and lists from Stripe's bracketed form keys; indexes become lists.

    A key that is not well formed (``a[b``) is kept whole, and so refused as unknown.
    """
    root: Form = {}
    for key, value in pairs:
        match = _KEY.match(key)
        path = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))] if match else [key]
        node: dict[str, Any] = root
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):  # a scalar and a nested key under one name
                raise Refusal(400, f"Invalid object: {key}", key)
        last = path[-1]
        if last == "":  # a[]=x: append
            node[str(len(node))] = value
        else:
            node[last] = value
    decoded: Form = _lists(root)
    return decoded


def _lists(node: Any) -> Any:
    # {"0": x, "1": y} -> [x, y]: stripe-python encodes arrays with explicit indexes.
    if not isinstance(node, dict):
        return node
    children = {key: _lists(value) for key, value in node.items()}
    if children and all(key.isdigit() for key in children):
        return [children[key] for key in sorted(children, key=int)]
    return children


@cache
def _hints(typed_dict: type) -> dict[str, Any]:
    # The generated modules import names for annotations only under TYPE_CHECKING
    # (StripeContext) or in the base's module (Mapping): give get_type_hints all of them.
    namespace = {
        **vars(stripe._request_options),
        "StripeContext": StripeContext,
        **vars(sys.modules[typed_dict.__module__]),
    }
    hints = typing.get_type_hints(typed_dict, globalns=namespace)
    return {key: hint for key, hint in hints.items() if key not in _OPTIONS}


def _required(typed_dict: type) -> frozenset[str]:
    required: frozenset[str] = getattr(typed_dict, "__required_keys__", frozenset())
    return required - _OPTIONS


def _is_typed_dict(annotation: Any) -> bool:
    return isinstance(annotation, type) and hasattr(annotation, "__required_keys__")


def _join(prefix: str, key: str) -> str:
    return f"{prefix}[{key}]" if prefix else key


def check(form: Form, params_type: type, prefix: str = "") -> None:
    """Raise the Refusal Stripe answers ``form`` with, if ``params_type`` refuses it."""
    hints = _hints(params_type)
    for key in form:
        if key not in hints:
            name = _join(prefix, key)
            raise Refusal(400, f"Received unknown parameter: {name}", name, "parameter_unknown")
    for key in sorted(_required(params_type) - form.keys()):
        name = _join(prefix, key)
        raise Refusal(400, f"Missing required param: {name}.", name, "parameter_missing")
    for key, value in form.items():
        _check_value(value, hints[key], _join(prefix, key))


def _literals(annotation: Any) -> tuple[str, ...] | None:
    """The allowed values when ``annotation`` is an enum (``Literal[...]``, ``| str`` or not)."""
    members = _union_members(annotation)
    literal = [a for m in members if typing.get_origin(m) is Literal for a in typing.get_args(m)]
    rest = [m for m in members if typing.get_origin(m) is not Literal and m is not str]
    return tuple(literal) if literal and not rest else None


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _check_value(value: Any, annotation: Any, name: str) -> None:
    origin = typing.get_origin(annotation)
    if origin in (Required, NotRequired):
        _check_value(value, typing.get_args(annotation)[0], name)
        return
    allowed = _literals(annotation)
    if allowed is not None:
        if value not in allowed:
            choices = ", ".join(repr(a) if a == "" else str(a) for a in allowed)
            raise Refusal(400, f"Invalid {name}: must be one of {choices}", name)
        return
    members = _union_members(annotation)
    if len(members) > 1:
        _check_union(value, members, name)
        return
    _check_one(value, annotation, name)


def _check_union(value: Any, members: tuple[Any, ...], name: str) -> None:
    # The first member of the value's shape (object, array or scalar) decides the error.
    shaped = [m for m in members if _shape(m) == _shape_of(value)] or list(members)
    first: Refusal | None = None
    for member in shaped:
        try:
            _check_value(value, member, name)
            return
        except Refusal as refused:
            first = first or refused
    assert first is not None
    raise first


def _shape(annotation: Any) -> str:
    origin = typing.get_origin(annotation) or annotation
    if _is_typed_dict(annotation) or origin in (dict, UntypedStripeObject, Mapping):
        return "object"
    if origin is list:
        return "array"
    return "scalar"


def _shape_of(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    return "array" if isinstance(value, list) else "scalar"


def _check_one(value: Any, annotation: Any, name: str) -> None:
    origin = typing.get_origin(annotation) or annotation
    shape = _shape(annotation)
    if shape == "object" and not _is_typed_dict(annotation) and value == "":
        return  # metadata="" unsets every key (docs.stripe.com/api/metadata)
    if shape != _shape_of(value):
        kind = {"object": "an object", "array": "an array", "scalar": "a string"}[shape]
        raise Refusal(400, f"Invalid {name}: must be {kind}", name)
    if _is_typed_dict(annotation):
        check(value, annotation, name)
    elif origin is list:
        (item,) = typing.get_args(annotation)
        for index, element in enumerate(value):
            _check_value(element, item, f"{name}[{index}]")
    elif shape == "object":  # metadata: any keys, string values
        for key, element in value.items():
            _check_value(element, str, f"{name}[{key}]")
    elif annotation is int and not _INTEGER.match(value):
        message = f"Invalid integer: {value}"
        raise Refusal(400, message, name, "parameter_invalid_integer")
    elif annotation is bool and value not in ("true", "false"):
        raise Refusal(400, f"Invalid boolean: {value}", name)
    elif annotation in (float, Decimal):
        try:
            Decimal(value)
        except InvalidOperation:
            raise Refusal(400, f"Invalid decimal: {value}", name) from None
