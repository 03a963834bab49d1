"""Request bodies of svc_users, decoded strictly with ``common.http.decode_body``."""

from __future__ import annotations

from typing import Any

import attrs

from common.errors import InvalidInput
from common.ids import ID_PATTERN, is_valid_id
from common.records import SCHEMA_METADATA

__all__ = ["CreateUserBody", "MuteBody", "TokenBody"]


def _room_id(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not is_valid_id(value):
        raise InvalidInput("roomId must be 3-32 characters of A-Z a-z 0-9 _ -", field="roomId", value=value)


@attrs.frozen(kw_only=True)
class TokenBody:
    """``POST /api/token``: the room a listener wants to hear."""

    room_id: str = attrs.field(validator=_room_id, metadata={SCHEMA_METADATA: {"pattern": ID_PATTERN}})


def _display_name(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (len(value) > 64 or any(ord(c) < 32 for c in value)):
        raise InvalidInput("displayName must be at most 64 printable characters", field="displayName")


@attrs.frozen(kw_only=True)
class CreateUserBody:
    """``POST /api/rooms/{roomId}/users``: the role (``host``, ``anchor`` or its alias ``guest``,
    checked by the service so the error names the roles), the room's pin when the caller has no
    API token, and an optional display name."""

    role: str
    pin: str | None = None
    display_name: str | None = attrs.field(
        default=None, validator=_display_name, metadata={SCHEMA_METADATA: {"maxLength": 64}}
    )


@attrs.frozen(kw_only=True)
class MuteBody:
    """``POST /api/rooms/{roomId}/users/{userId}/mute``."""

    muted: bool
