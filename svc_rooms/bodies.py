"""Request bodies of the room API, decoded strictly with ``common.http.decode_body``.

Validation follows the reference system (roomId ``[A-Za-z0-9_-]{3,32}``, pin exactly 6 letters or
digits, maxAnchors 1..5, label one of ready/cordon/draining/drained/unready, ttl 0..86400);
a missing or ``null`` optional field means "use the default". An unknown field, a wrong JSON
type or a value out of range is a 400 naming the field. The ``json_schema`` metadata feeds the
OpenAPI request-body schemas (common.contracts.record_schema).
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from common.errors import InvalidInput
from common.ids import ID_PATTERN, is_valid_id
from common.records import SCHEMA_METADATA, MarkLabel

__all__ = ["MAX_MARK_TTL_S", "CreateRoomBody", "MarkBody"]

MAX_MARK_TTL_S = 86_400
_PIN_PATTERN = "^[A-Za-z0-9]{6}$"
_PIN_REGEX = re.compile(r"[A-Za-z0-9]{6}", re.ASCII)


def _room_id(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not is_valid_id(value):
        raise InvalidInput("roomId must be 3-32 characters of A-Z a-z 0-9 _ -", field="roomId", value=value)


def _pin(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and _PIN_REGEX.fullmatch(value) is None:
        raise InvalidInput("pin must be exactly 6 letters or digits", field="pin", value=value)


def _max_anchors(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not 1 <= value <= 5:
        raise InvalidInput("maxAnchors must be in 1..5", field="maxAnchors", value=value)


def _ttl(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not 0 <= value <= MAX_MARK_TTL_S:
        raise InvalidInput(f"ttl must be in 0..{MAX_MARK_TTL_S} seconds", field="ttl", value=value)


@attrs.frozen(kw_only=True)
class CreateRoomBody:
    """``POST /api/rooms``: every field optional (generated id and pin, 3 anchors)."""

    room_id: str | None = attrs.field(
        default=None, validator=_room_id, metadata={SCHEMA_METADATA: {"pattern": ID_PATTERN}}
    )
    pin: str | None = attrs.field(
        default=None, validator=_pin, metadata={SCHEMA_METADATA: {"pattern": _PIN_PATTERN}}
    )
    max_anchors: int | None = attrs.field(
        default=None, validator=_max_anchors, metadata={SCHEMA_METADATA: {"minimum": 1, "maximum": 5}}
    )


@attrs.frozen(kw_only=True)
class MarkBody:
    """``PUT /api/modules/{type}/{id}/mark``: the label, and a lifetime in seconds (0 = none)."""

    label: MarkLabel
    ttl: int = attrs.field(
        default=0, validator=_ttl, metadata={SCHEMA_METADATA: {"minimum": 0, "maximum": MAX_MARK_TTL_S}}
    )
