"""JSON Schema (draft 2020-12) generated from the attrs record classes, plus a strict validator.

The generator walks ``attrs.fields``: the annotation gives the JSON type (str, int, float, bool,
datetime -> date-time string, str enums -> ``enum``, ``X | None`` -> a null union,
``dict[str, Any]`` -> object), a field without a default is required, every object is closed
(``additionalProperties: false``) and the ``json_schema`` field metadata (the keywords each
attrs validator enforces) and a class's ``json_schema_extra`` (cross-field rules) are merged
in. So the schema and the record cannot drift: a unit test checks that they accept and reject
the same documents.

The validator is jsonschema's draft 2020-12 validator made exactly as strict as our decoder:
``integer`` means a JSON integer (``1.0`` is not one), ``date-time`` is checked with the
records' RFC3339 parser, and a pattern's final ``$`` does not match before a trailing newline
(ECMA-262 semantics; Python's ``re`` would accept ``"abc\\n"``).
"""

from __future__ import annotations

import enum
import re
import types
import typing
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import attrs
import jsonschema
import jsonschema.validators
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError

from common.records import SCHEMA_METADATA, parse_time, wire_name

__all__ = ["record_schema", "strict_validator"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"

_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    datetime: {"type": "string", "format": "date-time"},
}


def _type_schema(tp: Any) -> dict[str, Any]:
    if tp in _SCALARS:
        return dict(_SCALARS[tp])
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {"type": "string", "enum": [m.value for m in tp]}
    if tp == dict[str, Any]:
        return {"type": "object"}
    args = typing.get_args(tp)
    if typing.get_origin(tp) is list and len(args) == 1 and attrs.has(args[0]):
        # a list of records (RoomMembers.members): each item is that record's object schema
        return {"type": "array", "items": _record_schema(args[0])}
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        others = [a for a in args if a is not type(None)]
        if len(others) != 1:
            raise TypeError(f"no JSON Schema for union {tp!r}")
        inner = _type_schema(others[0])
        inner["type"] = [inner["type"], "null"]
        if "enum" in inner:
            inner["enum"] = [*inner["enum"], None]
        return inner
    # A new field type must be taught here on purpose, not guessed.
    raise TypeError(f"no JSON Schema for type {tp!r}")


def _json_default(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _record_schema(cls: type[Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in attrs.fields(cls):
        name = wire_name(field.name)
        schema = _type_schema(hints[field.name])
        schema.update(field.metadata.get(SCHEMA_METADATA, {}))
        if field.default is attrs.NOTHING:
            required.append(name)
        elif field.default is not None and not isinstance(field.default, attrs.Factory):  # type: ignore[arg-type]
            schema["default"] = _json_default(field.default)
        properties[name] = schema
    doc = (cls.__doc__ or "").strip().splitlines()
    out: dict[str, Any] = {
        "title": cls.__name__,
        "description": doc[0] if doc else cls.__name__,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    out.update(getattr(cls, "json_schema_extra", {}))
    return out


def record_schema(cls: type[Any], *, dialect: bool = True) -> dict[str, Any]:
    """The JSON Schema of a record class (a fresh deep copy; ``$schema`` unless told not)."""
    schema = _record_schema(cls)
    if dialect:
        return {"$schema": DIALECT, **schema}
    return schema


def _is_json_integer(checker: Any, instance: Any) -> bool:
    return type(instance) is int


def _ecma_pattern(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    # Under ECMA-262 (JSON Schema's regex dialect) "$" only matches at the very end.
    translated = pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern
    if re.search(translated, instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _check_date_time(instance: object) -> bool:
    if not isinstance(instance, str):
        return True  # format applies to strings only; "type" rejects the rest
    parse_time(instance)
    return True


def _format_checker() -> FormatChecker:
    checker = FormatChecker(formats=())
    checker.checks("date-time", raises=ValueError)(_check_date_time)
    return checker


# types-jsonschema leaves extend() untyped.
_StrictValidator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    validators={"pattern": _ecma_pattern},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_json_integer),
)


def strict_validator(schema: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    """A draft 2020-12 validator for ``schema`` with our strict integer/pattern/date-time rules."""
    Draft202012Validator.check_schema(schema)
    validator: jsonschema.protocols.Validator = _StrictValidator(schema, format_checker=_format_checker())
    return validator
