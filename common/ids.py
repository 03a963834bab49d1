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
import uuid
from typing import Any

from common.errors import InvalidInput

__all__ = [
    "ID_PATTERN",
    "USER_ID_PATTERN",
    "is_valid_id",
    "is_valid_user_id",
    "new_user_id",
    "validate_module_id",
    "validate_room_id",
    "validate_user_id",
]

# ECMA/JSON-Schema spelling, reused by common.contracts; matched with fullmatch below so a
# trailing newline cannot slip past ``$`` as it would with re.match.
ID_PATTERN = "^[A-Za-z0-9_-]{3,32}$"
ID_REGEX = re.compile(r"[A-Za-z0-9_-]{3,32}", re.ASCII)
# User ids are canonical lowercase uuid4 strings (the reference's userID): also a safe subject
# token and key segment, and unguessable.
USER_ID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
USER_ID_REGEX = re.compile(USER_ID_PATTERN[1:-1], re.ASCII)

# Cap what goes into an error message: ids can come from untrusted request bodies.
_MAX_ECHO = 64


def _echo(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _MAX_ECHO:
        return value[:_MAX_ECHO] + "..."
    return value


def is_valid_id(value: object) -> bool:
    """True when ``value`` is a str usable as a room or module id."""
    return isinstance(value, str) and ID_REGEX.fullmatch(value) is not None


def is_valid_user_id(value: object) -> bool:
    """True when ``value`` is a canonical lowercase uuid4 string."""
    return isinstance(value, str) and USER_ID_REGEX.fullmatch(value) is not None


def new_user_id() -> str:
    return str(uuid.uuid4())


def validate_user_id(value: object, *, field: str = "userId") -> str:
    """Return ``value`` if it is a valid user id (a uuid4), else raise ``InvalidInput``."""
    if not is_valid_user_id(value):
        raise InvalidInput(f"{field} must be a lowercase uuid4", field=field, value=_echo(value))
    assert isinstance(value, str)
    return value


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
