"""What a join and an offer need to know about a room, read from etcd when asked.

A join is rare next to keepalives, and each read is one small etcd get, so nothing is cached
(no cache to keep right across migrations). The errors carry the reference's messages, which
clients show (docs/svc_gateway.md, Errors).
"""

from __future__ import annotations

import hmac

import attrs

from common import records
from common.errors import AppError, Forbidden, NotFound, Unavailable
from common.keys import StateKey
from common.state import StateStore

__all__ = ["JoinTarget", "RoomDirectory"]


@attrs.frozen(kw_only=True)
class JoinTarget:
    """An on-air room an anchor may join, and where its Janus is."""

    room_id: str
    pin: str
    janus_id: str
    janus_host: str
    nonce: str


class RoomDirectory:
    def __init__(self, store: StateStore) -> None:
        self._store = store

    async def _get(self, skey: StateKey) -> object | None:
        try:
            found = await self._store.get(skey)
        except AppError:
            raise
        except Exception as exc:
            raise Unavailable(f"etcd read failed: {exc}", key=str(skey)) from exc
        return None if found is None else found.record

    async def meta(self, room_id: str) -> records.RoomMeta:
        meta = await self._get(StateKey("rooms", room_id, "meta"))
        if not isinstance(meta, records.RoomMeta):
            raise NotFound("no room found", room_id=room_id)
        return meta

    async def join_target(self, room_id: str, pin: str | None) -> JoinTarget:
        """meta -> livemeta on air -> pin -> the Janus heartbeat's host, as the reference checks."""
        meta = await self.meta(room_id)
        live = await self._get(StateKey("rooms", room_id, "livemeta"))
        if not isinstance(live, records.LiveMeta) or live.status is not records.LiveStatus.ONAIR:
            raise NotFound("room does not exist or not allowed to join", room_id=room_id)
        if meta.pin and not hmac.compare_digest((pin or "").encode(), meta.pin.encode()):
            raise Forbidden("invalid room pin", room_id=room_id)
        heartbeat = await self._get(StateKey("januses", live.janus_id, "heartbeat"))
        if (
            not isinstance(heartbeat, records.Heartbeat)
            or heartbeat.status is not records.ModuleStatus.HEALTHY
        ):
            raise Unavailable("fail to get janus api", room_id=room_id, janus_id=live.janus_id)
        return JoinTarget(
            room_id=room_id,
            pin=meta.pin,
            janus_id=live.janus_id,
            janus_host=heartbeat.host,
            nonce=live.nonce,
        )

    async def janus_room_id(self, room_id: str) -> int:
        record = await self._get(StateKey("rooms", room_id, "janus"))
        if not isinstance(record, records.JanusRecord) or not record.janus_room_id:
            raise Unavailable("no janus room found", room_id=room_id)
        return record.janus_room_id
