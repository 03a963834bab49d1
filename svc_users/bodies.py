"""Request bodies of svc_users, decoded strictly with ``common.http.decode_body``."""

from __future__ import annotations

from typing import Any

import attrs

from common.errors import InvalidInput
from common.ids import ID_PATTERN, is_valid_id
from common.records import SCHEMA_METADATA

__all__ = ["TokenBody"]


def _room_id(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not is_valid_id(value):
        raise InvalidInput("roomId must be 3-32 characters of A-Z a-z 0-9 _ -", field="roomId", value=value)


@attrs.frozen(kw_only=True)
class TokenBody:
    """``POST /api/token``: the room a listener wants to hear."""

    room_id: str = attrs.field(validator=_room_id, metadata={SCHEMA_METADATA: {"pattern": ID_PATTERN}})
