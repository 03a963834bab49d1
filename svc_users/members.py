"""The Redis store of room users: every write is one Lua script, so it is atomic.

Layout: common/userkeys.py. The scripts are registered once (redis-py ``register_script``:
EVALSHA, with a fallback to EVAL after a Redis restart flushed its script cache). Times are
unix milliseconds from the caller's clock (tests inject one), never Redis' own ``TIME``.

- ``create``: refuses (``Conflict``) when the users holding a place (common/members.py: connected,
  or created less than ``fresh`` ago without a status) already reach ``maxAnchors``; else writes
  role, created time and display name, and the room's entry in ``{p}:rooms``.
- ``report``: a connection's status ``"<ts>,<status>,<gen>"``; a ``gen`` older than the stored
  one is ignored (a late report of a replaced connection), ``talking`` / ``muted`` are stored
  when given. Returns whether anything a member list shows changed. ``report_many`` runs it for
  a batch of reports in one pipeline.
- ``expire``: ``idle``/``onair`` statuses older than the timeout become ``left`` (gen kept);
  a room whose latest change is older than the room TTL and that has nobody connected is
  dropped.
- ``remove_user`` (kick), ``set_muted``, ``remove_room``.

Redis failures become ``Unavailable`` / ``DependencyTimeout`` (common.members.redis_errors).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from common.errors import Conflict, NotFound
from common.members import RoomUsers, read_room, redis_errors
from common.records import MemberRole, MemberStatus, UserStatusReport
from common.userkeys import UserKeys

__all__ = ["ExpireResult", "MemberStore", "ReportResult"]

# Shared by the scripts: is a stored status "connected" at `now` (ms) with `timeout` (ms)?
_LUA_CONNECTED = """
local function connected(value, now, timeout)
  if not value then return false end
  local ts, st = string.match(value, '^(%d+),(%a+),%d+$')
  if not ts then return false end
  return (st == 'idle' or st == 'onair') and now - tonumber(ts) < timeout
end
"""

# KEYS: room hash, rooms hash. ARGV: uid, role, now, name, maxAnchors, fresh, timeout, roomId.
# Returns 1 created, 0 full, -1 the id exists.
_CREATE = (
    _LUA_CONNECTED
    + """
local uid, now, fresh, timeout = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[6]), tonumber(ARGV[7])
if redis.call('HEXISTS', KEYS[1], 'm:' .. uid) == 1 then return -1 end
local roles, statuses, created = {}, {}, {}
local h = redis.call('HGETALL', KEYS[1])
for i = 1, #h, 2 do
  local kind, id = string.match(h[i], '^(%a+):(.+)$')
  if kind == 'm' then roles[id] = true
  elseif kind == 's' then statuses[id] = h[i + 1]
  elseif kind == 't' then created[id] = tonumber(h[i + 1]) end
end
local held = 0
for id, _ in pairs(roles) do
  if statuses[id] then
    if connected(statuses[id], now, timeout) then held = held + 1 end
  elseif created[id] and now - created[id] < fresh then
    held = held + 1
  end
end
if held >= tonumber(ARGV[5]) then return 0 end
redis.call('HSET', KEYS[1], 'm:' .. uid, ARGV[2], 't:' .. uid, ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'n:' .. uid, ARGV[4]) end
redis.call('HSET', KEYS[2], ARGV[8], ARGV[3])
return 1
"""
)

# Set ("1") or clear a flag field; returns 1 when it changed.
_LUA_FLAG = """
local function flag(key, field, value)
  if value == '' then return 0 end
  if value == '1' then
    if redis.call('HGET', key, field) == '1' then return 0 end
    redis.call('HSET', key, field, '1')
    return 1
  end
  return redis.call('HDEL', key, field)
end
"""

# KEYS: room hash, rooms hash. ARGV: uid, status, gen, now, talking ('', '0', '1'), muted, roomId.
# Returns -1 unknown user, -2 stale gen (ignored), 0 refreshed only, 1 changed.
_REPORT = (
    _LUA_FLAG
    + """
local uid, status, gen = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('HEXISTS', KEYS[1], 'm:' .. uid) == 0 then return -1 end
local changed = 0
local cur = redis.call('HGET', KEYS[1], 's:' .. uid)
if cur then
  local cst, cgen = string.match(cur, '^%d+,(%a+),(%d+)$')
  if cgen and gen < tonumber(cgen) then return -2 end
  if cst ~= status then changed = 1 end
else
  changed = 1
end
redis.call('HSET', KEYS[1], 's:' .. uid, ARGV[4] .. ',' .. status .. ',' .. ARGV[3])
local talking = ARGV[5]
if status == 'left' then talking = '0' end
if flag(KEYS[1], 'tk:' .. uid, talking) == 1 then changed = 1 end
if flag(KEYS[1], 'mu:' .. uid, ARGV[6]) == 1 then changed = 1 end
redis.call('HSET', KEYS[2], ARGV[7], ARGV[4])
return changed
"""
)

# KEYS: room hash, rooms hash. ARGV: roomId, now, status timeout, room max ttl (all ms).
# Returns 2 room dropped, 1 statuses expired, 0 nothing.
_EXPIRE = (
    _LUA_CONNECTED
    + """
local now, timeout, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local h = redis.call('HGETALL', KEYS[1])
local expired, live = 0, 0
for i = 1, #h, 2 do
  local uid = string.match(h[i], '^s:(.+)$')
  if uid then
    local ts, st, gen = string.match(h[i + 1], '^(%d+),(%a+),(%d+)$')
    if ts and (st == 'idle' or st == 'onair') then
      if now - tonumber(ts) >= timeout then
        redis.call('HSET', KEYS[1], h[i], ARGV[2] .. ',left,' .. gen)
        redis.call('HDEL', KEYS[1], 'tk:' .. uid)
        expired = expired + 1
      else
        live = live + 1
      end
    end
  end
end
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if live == 0 and now - last >= ttl then
  redis.call('DEL', KEYS[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 2
end
if expired > 0 then return 1 end
return 0
"""
)

# KEYS: room hash, rooms hash. ARGV: uid, roomId, now. Returns 1 removed, 0 unknown.
_REMOVE_USER = """
local uid = ARGV[1]
if redis.call('HEXISTS', KEYS[1], 'm:' .. uid) == 0 then return 0 end
redis.call('HDEL', KEYS[1], 'm:' .. uid, 's:' .. uid, 't:' .. uid, 'n:' .. uid, 'mu:' .. uid, 'tk:' .. uid)
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('HDEL', KEYS[2], ARGV[2])
else
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
end
return 1
"""

# KEYS: room hash, rooms hash. ARGV: uid, muted ('0'/'1'), roomId, now.
# Returns -1 unknown user, 0 unchanged, 1 changed.
_SET_MUTED = (
    _LUA_FLAG
    + """
if redis.call('HEXISTS', KEYS[1], 'm:' .. ARGV[1]) == 0 then return -1 end
local changed = flag(KEYS[1], 'mu:' .. ARGV[1], ARGV[2])
if changed == 1 then redis.call('HSET', KEYS[2], ARGV[3], ARGV[4]) end
return changed
"""
)

# KEYS: room hash, rooms hash. ARGV: roomId. Returns 1 when the room had users.
_REMOVE_ROOM = """
local had = redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return had
"""


class ReportResult(enum.Enum):
    CHANGED = "changed"
    REFRESHED = "refreshed"
    STALE = "stale"


class ExpireResult(enum.Enum):
    NOTHING = 0
    EXPIRED = 1
    DROPPED = 2


def _report_result(result: int, room_id: str, user_id: str) -> ReportResult | NotFound:
    if result == -1:
        return NotFound("no such user in this room", room_id=room_id, user_id=user_id)
    if result == -2:
        return ReportResult.STALE
    return ReportResult.CHANGED if result == 1 else ReportResult.REFRESHED


def _flag(value: bool | None) -> str:
    return "" if value is None else "1" if value else "0"


class MemberStore:
    """Room users in Redis (``client``: a redis.asyncio client; the caller owns it)."""

    def __init__(
        self,
        client: Redis,
        keys: UserKeys,
        *,
        status_timeout_s: float = 30.0,
        fresh_s: float = 30.0,
        room_max_ttl_s: float = 6 * 3600.0,
    ) -> None:
        self.client = client
        self.keys = keys
        self.status_timeout_ms = int(status_timeout_s * 1000)
        self.fresh_ms = int(fresh_s * 1000)
        self.room_max_ttl_ms = int(room_max_ttl_s * 1000)
        self._create = client.register_script(_CREATE)
        self._report = client.register_script(_REPORT)
        self._expire = client.register_script(_EXPIRE)
        self._remove_user = client.register_script(_REMOVE_USER)
        self._set_muted = client.register_script(_SET_MUTED)
        self._remove_room = client.register_script(_REMOVE_ROOM)

    def _keys(self, room_id: str) -> list[str]:
        return [self.keys.room_users(room_id), self.keys.rooms]

    async def _run(self, script: Any, what: str, keys: list[str], args: list[Any]) -> int:
        with redis_errors(what):
            return int(await script(keys=keys, args=args))

    async def create(
        self,
        room_id: str,
        user_id: str,
        role: MemberRole,
        *,
        display_name: str,
        max_anchors: int,
        now_ms: int,
    ) -> None:
        args = [
            user_id,
            role.value,
            now_ms,
            display_name,
            max_anchors,
            self.fresh_ms,
            self.status_timeout_ms,
            room_id,
        ]
        result = await self._run(self._create, f"create user in {room_id}", self._keys(room_id), args)
        if result == 0:
            raise Conflict("reached max anchors limit", room_id=room_id, max_anchors=max_anchors)
        if result < 0:
            raise Conflict("user id already exists", room_id=room_id, user_id=user_id)

    async def report(
        self,
        room_id: str,
        user_id: str,
        status: MemberStatus,
        gen: int,
        *,
        now_ms: int,
        talking: bool | None = None,
        muted: bool | None = None,
    ) -> ReportResult:
        """``NotFound`` for a user that does not exist (never created, kicked, room removed)."""
        args = [user_id, status.value, gen, now_ms, _flag(talking), _flag(muted), room_id]
        result = await self._run(self._report, f"status of {user_id}", self._keys(room_id), args)
        outcome = _report_result(result, room_id, user_id)
        if isinstance(outcome, NotFound):
            raise outcome
        return outcome

    async def report_many(
        self, reports: Sequence[UserStatusReport], *, now_ms: int
    ) -> list[ReportResult | NotFound]:
        """The reports in order, in one pipeline of the report script: one round trip for the
        batch. Each script still runs atomically, and in the batch's order, so two reports of
        one user keep the gen rule. Per report its result, or ``NotFound`` (unknown user); a
        Redis failure fails them all (``Unavailable``)."""
        with redis_errors(f"status of {len(reports)} users"):
            # transaction=False: one report's refusal must not undo the others' writes
            async with self.client.pipeline(transaction=False) as pipe:
                for r in reports:
                    flags = [_flag(r.talking), _flag(r.muted)]
                    args = [r.user_id, r.status.value, r.gen, now_ms, *flags, r.room_id]
                    await self._report(keys=self._keys(r.room_id), args=args, client=pipe)
                results = await pipe.execute()
        return [
            _report_result(int(result), r.room_id, r.user_id)
            for r, result in zip(reports, results, strict=True)
        ]

    async def expire(self, room_id: str, *, now_ms: int) -> ExpireResult:
        args = [room_id, now_ms, self.status_timeout_ms, self.room_max_ttl_ms]
        result = await self._run(self._expire, f"expire statuses of {room_id}", self._keys(room_id), args)
        return ExpireResult(result)

    async def remove_user(self, room_id: str, user_id: str, *, now_ms: int) -> bool:
        args = [user_id, room_id, now_ms]
        return await self._run(self._remove_user, f"remove {user_id}", self._keys(room_id), args) == 1

    async def set_muted(self, room_id: str, user_id: str, muted: bool, *, now_ms: int) -> bool:
        """Whether it changed; ``NotFound`` for an unknown user."""
        args = [user_id, _flag(muted), room_id, now_ms]
        result = await self._run(self._set_muted, f"mute {user_id}", self._keys(room_id), args)
        if result == -1:
            raise NotFound("no such user in this room", room_id=room_id, user_id=user_id)
        return result == 1

    async def remove_room(self, room_id: str) -> bool:
        keys = self._keys(room_id)
        return await self._run(self._remove_room, f"remove room {room_id}", keys, [room_id]) == 1

    async def read(self, room_id: str) -> RoomUsers:
        return await read_room(self.client, self.keys, room_id)

    async def rooms(self) -> list[str]:
        """Every room with users (the ``{p}:rooms`` hash)."""
        with redis_errors("list rooms"):
            found = await self.client.hkeys(self.keys.rooms)
        return sorted(r.decode() if isinstance(r, bytes) else str(r) for r in found)

    async def lock_holder(self, user_id: str) -> str | None:
        """The ``serverId`` of the gateway holding the user's connection lock, if any."""
        with redis_errors(f"read lock of {user_id}"):
            value = await self.client.get(self.keys.conn_lock(user_id))
        if value is None:
            return None
        text = value.decode() if isinstance(value, bytes) else str(value)
        server_id, sep, _conn = text.partition(":")
        return server_id if sep and server_id else None
