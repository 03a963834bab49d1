"""The JSON-RPC methods of one anchor connection (the reference's section 7.2, without its bugs).

``join {pin?, clientId, jtoken?}`` -> ``{jtoken, resume}``; ``offer {sdp}`` -> ``{sdp}``;
``icecandidate {candidate}`` -> null; ``keepalive {status?}`` (alias ``status``) -> null;
``mute {muted}`` -> null; ``leave`` -> null, then the socket closes (1000).

Every method but ``join`` needs a joined connection (-32600 ``not joined yet``). Errors carry
the reference's messages (docs/svc_gateway.md, Errors). An ``Anchor`` also takes what reaches
its user from outside: its Janus handle's events (``talking``, ``gone``), ``reconnect`` requests
from room events, and kick/mute commands from svc_users (svc_gateway.fanout).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import attrs

from common import records
from common.errors import AppError, Conflict, InvalidInput, Unavailable
from common.records import MemberStatus
from common.usertoken import UserClaims
from svc_gateway.connection import Connection, ReplyThen
from svc_gateway.jsonrpc import InvalidRequest, MethodNotFound
from svc_gateway.lock import ConnectionLocks, LockResult
from svc_gateway.metrics import JANUS_LATENCY, JOINS
from svc_gateway.rooms import JoinTarget, RoomDirectory
from svc_gateway.users import UserState

__all__ = [
    "CLOSE_KICKED",
    "CLOSE_LEFT",
    "CLOSE_LOCKED",
    "Anchor",
    "JanusLeg",
    "LegPool",
    "Services",
]

logger = logging.getLogger(__name__)

CLOSE_LEFT = 1000
CLOSE_KICKED = 4403
CLOSE_LOCKED = 4409

KEEPALIVE_STATUSES = {"onair": MemberStatus.ONAIR, "idle": MemberStatus.IDLE}


class JanusLeg(Protocol):
    """svc_gateway.janus_pool.AnchorLeg, as this module uses it."""

    session_id: int
    handle_id: int
    janus_id: str
    on_event: Callable[[str, dict[str, Any]], None] | None

    async def join(
        self, *, room: int, pin: str, display: str, muted: bool, offer: dict[str, Any]
    ) -> dict[str, Any]: ...
    async def trickle(self, candidate: dict[str, Any] | None) -> None: ...
    async def keepalive(self) -> None: ...
    async def configure(self, *, muted: bool) -> None: ...
    async def leave(self) -> None: ...
    def release(self) -> None: ...


class LegPool(Protocol):
    """svc_gateway.janus_pool.JanusPool, as this module uses it."""

    async def open_leg(
        self, *, janus_id: str, host: str, resume: tuple[int, int] | None
    ) -> tuple[Any, bool]: ...

    def participant_user(self, display: str) -> str | None: ...


@attrs.frozen(kw_only=True)
class Services:
    """What every connection of this process shares."""

    rooms: RoomDirectory
    pool: LegPool
    locks: ConnectionLocks
    users: UserState
    report: Callable[[records.UserStatusReport], Awaitable[bool]]
    token_key: bytes
    encode_jtoken: Callable[[bytes, int, int, bytes], str]
    decode_jtoken: Callable[[bytes, str, bytes], tuple[int, int] | None]


def _params(method: str, params: Any, *, allowed: set[str]) -> dict[str, Any]:
    """The params object of ``method``; -32602 ``invalid <method> parameters`` otherwise."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidInput(f"invalid {method} parameters", reason="params must be an object")
    extra = set(params) - allowed
    if extra:
        raise InvalidInput(f"invalid {method} parameters", reason=f"unknown {sorted(extra)}")
    return params


def _bad(method: str, reason: str) -> InvalidInput:
    return InvalidInput(f"invalid {method} parameters", reason=reason)


def _optional_str(method: str, params: Mapping[str, Any], key: str) -> str | None:
    value = params.get(key)
    if value is not None and not isinstance(value, str):
        raise _bad(method, f"{key} must be a string")
    return value


class Anchor:
    """One authenticated connection of a user and the Janus leg it speaks through."""

    def __init__(self, conn: Connection, claims: UserClaims, services: Services) -> None:
        self.conn = conn
        self.user_id = claims.user_id
        self.room_id = claims.room_id
        self.role = claims.role
        self._svc = services
        self.leg: JanusLeg | None = None
        self.target: JoinTarget | None = None
        self.gen = 0
        self.status = MemberStatus.IDLE
        self.muted: bool | None = None  # set by mute on this connection, else Redis decides
        self.in_room = False  # the offer joined the AudioBridge room
        self._participants: dict[int, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._methods: dict[str, Callable[[Any], Awaitable[Any]]] = {
            "join": self.join,
            "offer": self.offer,
            "icecandidate": self.icecandidate,
            "keepalive": self.keepalive,
            "status": self.keepalive,
            "mute": self.mute,
            "leave": self.leave,
        }

    @property
    def is_joined(self) -> bool:
        return self.leg is not None

    async def handle(self, method: str, params: Any) -> Any:
        fn = self._methods.get(method)
        if fn is None:
            raise MethodNotFound(f"method not found: {method}")
        if method != "join" and self.leg is None:
            raise InvalidRequest("not joined yet")
        return await fn(params)

    def _joined_leg(self) -> JanusLeg:
        if self.leg is None:
            # the leg went away (reconnect) while this request waited in the queue
            raise InvalidRequest("not joined yet")
        return self.leg

    async def _janus(self, op: str, call: Awaitable[Any], message: str) -> Any:
        """One Janus call, timed; its failure is -32603 with the reference's message."""
        started = time.perf_counter()
        try:
            return await call
        except AppError as exc:
            raise Unavailable(message, reason=exc.detail, janus_error=type(exc).__name__) from exc
        finally:
            JANUS_LATENCY.labels(op=op).observe(time.perf_counter() - started)

    async def _report(self, status: MemberStatus, **extra: Any) -> None:
        self.status = status
        await self._svc.report(
            records.UserStatusReport(
                room_id=self.room_id, user_id=self.user_id, status=status, gen=self.gen, **extra
            )
        )

    # -- methods --------------------------------------------------------------------------

    async def join(self, params: Any) -> dict[str, Any]:
        p = _params("join", params, allowed={"pin", "clientId", "jtoken", "displayName"})
        client_id = p.get("clientId")
        try:
            uuid.UUID(str(client_id)) if isinstance(client_id, str) else None
        except ValueError:
            client_id = None
        if not isinstance(client_id, str):
            raise _bad("join", "clientId must be a uuid")
        pin = _optional_str("join", p, "pin")
        token = _optional_str("join", p, "jtoken")
        if self.leg is not None:
            raise Conflict("already joined")
        target = await self._svc.rooms.join_target(self.room_id, pin)
        aad = target.nonce.encode()
        resume = self._svc.decode_jtoken(self._svc.token_key, token, aad) if token else None
        started = time.perf_counter()
        try:
            leg, resumed = await self._svc.pool.open_leg(
                janus_id=target.janus_id, host=target.janus_host, resume=resume
            )
        except AppError as exc:
            raise Unavailable("fail to create janus instance", reason=exc.detail) from exc
        finally:
            JANUS_LATENCY.labels(op="open_leg").observe(time.perf_counter() - started)
        try:
            jtoken = self._svc.encode_jtoken(self._svc.token_key, leg.session_id, leg.handle_id, aad)
            self.gen = await self._svc.users.next_generation(self.user_id)
        except BaseException:
            await _quietly(leg.leave(), "leave after a failed join")
            raise
        leg.on_event = self._on_leg_event
        self.leg, self.target, self.in_room = leg, target, bool(resumed)
        self._participants.clear()
        JOINS.labels(resume=str(bool(resumed)).lower()).inc()
        await self._report(MemberStatus.IDLE)
        return {"jtoken": jtoken, "resume": bool(resumed)}

    async def offer(self, params: Any) -> dict[str, Any]:
        p = _params("offer", params, allowed={"sdp"})
        sdp = p.get("sdp")
        if (
            not isinstance(sdp, dict)
            or not isinstance(sdp.get("sdp"), str)
            or sdp.get("type", "offer") != "offer"
        ):
            raise _bad("offer", "sdp must be {type: offer, sdp: <string>}")
        leg = self._joined_leg()
        room = await self._svc.rooms.janus_room_id(self.room_id)
        meta = await self._svc.rooms.meta(self.room_id)
        muted = (
            self.muted
            if self.muted is not None
            else await self._svc.users.is_muted(self.room_id, self.user_id)
        )
        answer = await self._janus(
            "join",
            leg.join(room=room, pin=meta.pin, display=f"user-{self.user_id}", muted=muted, offer=dict(sdp)),
            "failed to join janus room",
        )
        self.in_room = True
        return {"sdp": answer}

    async def icecandidate(self, params: Any) -> None:
        p = _params("icecandidate", params, allowed={"candidate"})
        candidate = p.get("candidate")
        if candidate is None or (isinstance(candidate, dict) and candidate.get("completed") is True):
            # end of candidates: null (the browser's last onicecandidate) or {completed: true}
            await self._janus("trickle", self._joined_leg().trickle(None), "failed to exchange ice candidate")
            return
        if not isinstance(candidate, dict) or not isinstance(candidate.get("candidate"), str):
            raise _bad("icecandidate", "candidate must be {candidate, sdpMid, sdpMLineIndex} or null")
        mid, index = candidate.get("sdpMid"), candidate.get("sdpMLineIndex")
        if (mid is not None and not isinstance(mid, str)) or (
            index is not None and (not isinstance(index, int) or isinstance(index, bool))
        ):
            raise _bad("icecandidate", "sdpMid must be a string, sdpMLineIndex an integer")
        await self._janus(
            "trickle", self._joined_leg().trickle(dict(candidate)), "failed to exchange ice candidate"
        )

    async def keepalive(self, params: Any) -> None:
        p = _params("keepalive", params, allowed={"status"})
        raw = p.get("status")
        if raw is None:
            status = self.status
        elif isinstance(raw, str) and raw in KEEPALIVE_STATUSES:
            status = KEEPALIVE_STATUSES[raw]
        else:
            raise _bad("keepalive", "status must be onair or idle")
        await self._janus("keepalive", self._joined_leg().keepalive(), "janus keepalive failed")
        try:
            held = await self._svc.locks.acquire(self.user_id, self.conn.conn_id)
        except Unavailable as exc:
            # Redis away: the lock keeps its TTL; the user keeps talking meanwhile
            logger.warning("lock of %s not refreshed: %s", self.user_id, exc)
        else:
            if held is LockResult.REFUSED:
                self.conn.close(CLOSE_LOCKED, "another connection of this user holds the lock")
                return
        await self._report(status)

    async def mute(self, params: Any) -> None:
        p = _params("mute", params, allowed={"muted"})
        muted = p.get("muted")
        if not isinstance(muted, bool):
            raise _bad("mute", "muted must be a boolean")
        await self.apply_mute(muted)
        await self._report(self.status, muted=muted)

    async def leave(self, params: Any) -> ReplyThen:
        _params("leave", params, allowed=set())
        leg = self._joined_leg()
        # Leave Janus and report before the reply: a client may close as soon as it reads the
        # reply, which ends this connection's tasks; work left for after it would be lost and
        # the user would hold a place in the room until its status expires.
        self._drop_leg()
        await _quietly(self._janus("leave", leg.leave(), "janus leave failed"), "leave")
        await self._report(MemberStatus.LEFT)

        async def close() -> None:
            self.conn.close(CLOSE_LEFT, "bye")

        return ReplyThen(None, close)

    # -- what reaches the user from outside ----------------------------------------------

    async def apply_mute(self, muted: bool) -> None:
        """Mute in the AudioBridge room (once the offer joined it) and tell the client."""
        self.muted = muted
        if self.leg is not None and self.in_room:
            await self._janus("configure", self.leg.configure(muted=muted), "failed to configure janus")
        self.conn.notify("muted", {"userId": self.user_id, "muted": muted})

    async def kick(self) -> None:
        """svc_users removed the user: say so, close 4403, and take its voice out of the room."""
        self.conn.notify("kicked", {"reason": "removed from the room"})
        self.conn.close(CLOSE_KICKED, "kicked")
        leg = self._drop_leg()
        if leg is not None:
            await _quietly(leg.leave(), "leave of a kicked user")

    def request_reconnect(self, reason: str) -> None:
        """The room moved or its Janus restarted: the client must join again (same socket or new)."""
        self._drop_leg(release=True)
        self.conn.notify("reconnect", {"reason": reason})

    def _drop_leg(self, *, release: bool = False) -> JanusLeg | None:
        leg, self.leg, self.in_room = self.leg, None, False
        if leg is not None:
            leg.on_event = None
            if release:
                # not served here any more; the session lives on for a resume until it times out
                leg.release()
        return leg

    def _on_leg_event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "talking":
            user = self._user_of(data)
            if user is not None:
                talking = bool(data.get("talking"))
                self.conn.notify("talking", {"userId": user, "talking": talking})
                if user == self.user_id:
                    self._report_talking(talking)
        elif kind in ("joined", "leaving"):
            entries = data.get("participants")
            for entry in entries if isinstance(entries, list) else [data]:
                if isinstance(entry, dict) and isinstance(entry.get("id"), int):
                    user = self._svc.pool.participant_user(str(entry.get("display", "")))
                    if kind == "joined" and user is not None:
                        self._participants[entry["id"]] = user
                    else:
                        self._participants.pop(entry["id"], None)
        elif kind == "gone":
            logger.info("janus leg of %s in room %s gone: asking for a reconnect", self.user_id, self.room_id)
            self.request_reconnect("janus_restarted")

    def _user_of(self, data: Mapping[str, Any]) -> str | None:
        display = data.get("display")
        if isinstance(display, str) and (user := self._svc.pool.participant_user(display)):
            return user
        pid = data.get("id")
        if not isinstance(pid, int):
            return None
        if self.leg is not None and pid == getattr(self.leg, "participant_id", None):
            return self.user_id  # AudioBridge lists the others to a participant, never itself
        return self._participants.get(pid)

    def _report_talking(self, talking: bool) -> None:
        # on_event must not wait: the report runs in a task this anchor owns
        if self.gen < 1:
            return
        task = asyncio.create_task(self._report(self.status, talking=talking))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def dispose(self) -> None:
        """The socket is gone without ``leave``: keep the Janus session for a resume (it times out
        in Janus when nobody keeps it alive) and report nothing: svc_users expires the status."""
        self._drop_leg(release=True)
        for task in self._tasks:
            task.cancel()


async def _quietly(call: Awaitable[Any], what: str) -> None:
    try:
        await call
    except AppError as exc:
        logger.info("%s failed: %s", what, exc)
