"""Reading the users of a room out of its Redis hash (common/userkeys.py has the layout).

svc_users owns the hashes (it writes them with Lua scripts); svc_rooms only counts the live
anchors of a room for its stats. Both read them through this module, so "connected" means
the same everywhere:

- a user *is connected* while its status is ``idle`` or ``onair`` and was written less than
  ``status_timeout_s`` ago (a status older than that is shown as ``left``: the expiry loop of
  svc_users rewrites it so a moment later);
- a user *holds a place* (counts against the room's ``maxAnchors``) while it is connected, or
  was created less than ``fresh_s`` ago and never reported a status (it is still on its way to
  the gateway).

The parsing part is pure; :func:`read_room` and :func:`live_count` do one ``HGETALL`` and
translate Redis failures into ``Unavailable`` / ``DependencyTimeout``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import attrs
import redis.exceptions

from common.errors import DependencyTimeout, Unavailable
from common.ids import is_valid_user_id
from common.records import Member, MemberRole, MemberStatus
from common.userkeys import UserKeys

__all__ = [
    "DEFAULT_FRESH_S",
    "DEFAULT_STATUS_TIMEOUT_S",
    "RoomUsers",
    "StoredStatus",
    "UserEntry",
    "live_count",
    "parse_room_hash",
    "parse_status",
    "read_room",
    "redis_errors",
]

DEFAULT_STATUS_TIMEOUT_S = 30.0
DEFAULT_FRESH_S = 30.0
_CONNECTED = frozenset({MemberStatus.IDLE, MemberStatus.ONAIR})


@attrs.frozen(kw_only=True)
class StoredStatus:
    """``s:{uid}`` = ``"<ts ms>,<status>,<gen>"``."""

    ts_ms: int
    status: MemberStatus
    gen: int


def parse_status(value: str | None) -> StoredStatus | None:
    """The parts of a stored status; None for a missing or malformed value (the user is then
    treated as never connected, as the reference did)."""
    if value is None:
        return None
    parts = value.split(",")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[2].isdigit():
        return None
    try:
        status = MemberStatus(parts[1])
    except ValueError:
        return None
    return StoredStatus(ts_ms=int(parts[0]), status=status, gen=int(parts[2]))


@attrs.frozen(kw_only=True)
class UserEntry:
    """Every field one user has in the room hash."""

    user_id: str
    role: MemberRole
    created_ms: int = 0
    status: StoredStatus | None = None
    display_name: str = ""
    muted: bool = False
    talking: bool = False

    def is_connected(self, now_ms: int, status_timeout_s: float = DEFAULT_STATUS_TIMEOUT_S) -> bool:
        s = self.status
        return s is not None and s.status in _CONNECTED and now_ms - s.ts_ms < status_timeout_s * 1000

    def holds_place(
        self,
        now_ms: int,
        *,
        status_timeout_s: float = DEFAULT_STATUS_TIMEOUT_S,
        fresh_s: float = DEFAULT_FRESH_S,
    ) -> bool:
        """Counts against ``maxAnchors`` (the Lua create script applies the same rule)."""
        if self.status is None:
            return now_ms - self.created_ms < fresh_s * 1000
        return self.is_connected(now_ms, status_timeout_s)

    def member(self, now_ms: int, status_timeout_s: float = DEFAULT_STATUS_TIMEOUT_S) -> Member:
        connected = self.is_connected(now_ms, status_timeout_s)
        status = None if self.status is None else self.status.status
        if status in _CONNECTED and not connected:
            status = MemberStatus.LEFT  # stale: what the expiry loop is about to write
        return Member(
            user_id=self.user_id,
            role=self.role,
            status=status,
            connected=connected,
            talking=self.talking and connected,
            muted=self.muted,
            display_name=self.display_name,
        )


@attrs.frozen(kw_only=True)
class RoomUsers:
    """The parsed users of one room, oldest first."""

    room_id: str
    users: tuple[UserEntry, ...] = ()

    def get(self, user_id: str) -> UserEntry | None:
        return next((u for u in self.users if u.user_id == user_id), None)

    def members(self, now_ms: int, status_timeout_s: float = DEFAULT_STATUS_TIMEOUT_S) -> list[Member]:
        return [u.member(now_ms, status_timeout_s) for u in self.users]

    def connected(self, now_ms: int, status_timeout_s: float = DEFAULT_STATUS_TIMEOUT_S) -> int:
        return sum(1 for u in self.users if u.is_connected(now_ms, status_timeout_s))


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def parse_room_hash(room_id: str, fields: Mapping[Any, Any]) -> RoomUsers:
    """The users of a room hash (``HGETALL``, bytes or str). A user exists while its ``m:`` role
    field does; fields of other users, unknown roles and foreign fields are ignored."""
    by_user: dict[str, dict[str, str]] = {}
    for raw_field, raw_value in fields.items():
        kind, sep, user_id = _text(raw_field).partition(":")
        if sep and is_valid_user_id(user_id):
            by_user.setdefault(user_id, {})[kind] = _text(raw_value)
    users: list[UserEntry] = []
    for user_id, f in by_user.items():
        try:
            role = MemberRole(f.get("m", ""))
        except ValueError:
            continue
        created = f.get("t", "0")
        users.append(
            UserEntry(
                user_id=user_id,
                role=role,
                created_ms=int(created) if created.isdigit() else 0,
                status=parse_status(f.get("s")),
                display_name=f.get("n", "")[:64],
                muted=f.get("mu") == "1",
                talking=f.get("tk") == "1",
            )
        )
    users.sort(key=lambda u: (u.created_ms, u.user_id))
    return RoomUsers(room_id=room_id, users=tuple(users))


@contextlib.contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Translate redis-py failures into ``DependencyTimeout`` / ``Unavailable``."""
    try:
        yield
    except redis.exceptions.TimeoutError as exc:
        raise DependencyTimeout(f"Redis did not answer: {what}", op=what) from exc
    except TimeoutError as exc:
        raise DependencyTimeout(f"Redis did not answer: {what}", op=what) from exc
    except (redis.exceptions.RedisError, OSError) as exc:
        raise Unavailable(f"Redis failed: {what}: {type(exc).__name__}: {exc}", op=what) from exc


async def read_room(client: Any, keys: UserKeys, room_id: str) -> RoomUsers:
    """``HGETALL`` of the room's hash, parsed (``client``: a redis.asyncio client)."""
    with redis_errors(f"read users of {room_id}"):
        fields = await client.hgetall(keys.room_users(room_id))
    return parse_room_hash(room_id, fields)


async def live_count(
    client: Any,
    keys: UserKeys,
    room_id: str,
    now_ms: int,
    status_timeout_s: float = DEFAULT_STATUS_TIMEOUT_S,
) -> int:
    """How many users of the room are connected now."""
    return (await read_room(client, keys, room_id)).connected(now_ms, status_timeout_s)
