"""Identifier validation: the one gate every id passes before it becomes a key or a subject.

Room and module ids become etcd key segments (``/rooms/{roomId}/meta``) and NATS subject tokens
(``rtc.state.rooms.{roomId}.meta``). A ``.`` would split a token, ``*``/``>`` are wildcards,
``/`` would add a key segment and whitespace is illegal in subjects, so the accepted alphabet
is ``[A-Za-z0-9_-]`` and nothing else. Module ids allow hyphens too (the reference rejected
``mixer-1``, a bug).

Each validator returns the id unchanged or raises ``InvalidInput`` naming the field and the
offending value.
"""

from __future__ import annotations

import re
from typing import Any

from common.errors import InvalidInput

__all__ = [
    "ID_PATTERN",
    "is_valid_id",
    "validate_module_id",
    "validate_room_id",
]

# ECMA/JSON-Schema spelling, reused by common.contracts; matched with fullmatch below so a
# trailing newline cannot slip past ``$`` as it would with re.match.
ID_PATTERN = "^[A-Za-z0-9_-]{3,32}$"
ID_REGEX = re.compile(r"[A-Za-z0-9_-]{3,32}", re.ASCII)

# Cap what goes into an error message: ids can come from untrusted request bodies.
_MAX_ECHO = 64


def _echo(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _MAX_ECHO:
        return value[:_MAX_ECHO] + "..."
    return value


def is_valid_id(value: object) -> bool:
    """True when ``value`` is a str usable as a room or module id."""
    return isinstance(value, str) and ID_REGEX.fullmatch(value) is not None


def _validate_id(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string", field=field, value=_echo(value))
    if ID_REGEX.fullmatch(value) is None:
        raise InvalidInput(
            f"{field} must be 3-32 characters of A-Z a-z 0-9 _ -", field=field, value=_echo(value)
        )
    return value


def validate_room_id(value: object, *, field: str = "roomId") -> str:
    """Return ``value`` if it is a valid room id, else raise ``InvalidInput``."""
    return _validate_id(value, field)


def validate_module_id(value: object, *, field: str = "moduleId") -> str:
    """Return ``value`` if it is a valid Janus/mixer id (hyphens allowed), else raise."""
    return _validate_id(value, field)
