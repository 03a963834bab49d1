"""Room users: creation with its token, the member list, kick, mute, status reports, expiry.

Who may do what (``authorization`` is the request's ``Authorization`` header):

- create: ``Bearer <API token>`` (any role), or the room's pin (``anchor``/``guest`` only; a
  ``host`` needs the API token: 403). No token and no pin: 401; a wrong API token or pin: 403.
- list: the API token, or a user token of that room whose user still exists.
- kick, mute: the API token, or a ``host`` user token of that room whose user still exists.

A user token is checked with ``common.usertoken`` (HS256, audience ``rtc-gateway``,
``JWT_SECRET``): a viewer token (other secret, audience ``hls``) is refused with 401. The room
must exist and be on air (its etcd meta and livemeta, read per request): 404 otherwise.

After every change the full member list is published as ``rtc.events.rooms.<roomId>.members``;
one lock per room makes the read-then-publish of one process ordered, so its last event shows
the latest state. A publish that fails is logged and does not fail the change (the next change
or the expiry pass republishes). Kick and mute are also sent to the gateway process holding the
user's connection lock; no lock or no answer means ``delivered: false`` (a mute is stored and
applied at the user's next join). This module imports no web framework, NATS or Redis client.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import attrs

from common import keys, records
from common.errors import AppError, Forbidden, InvalidInput, NotFound, Unauthorized, log_error
from common.ids import new_user_id, validate_room_id, validate_user_id
from common.records import Member, MemberRole, RoomMeta, UserAction, UserCommand, UserStatusReports
from common.usertoken import UserClaims, bearer_token, issue_user_token, parse_role, verify_user_token
from svc_users.members import ExpireResult, MemberStore, ReportResult

__all__ = ["CreatedUser", "RoomReader", "UserService"]

logger = logging.getLogger(__name__)

DEFAULT_COMMAND_TIMEOUT_S = 2.0

# (meta, livemeta) of a room, each None when absent
RoomReader = Callable[[str], Awaitable[tuple[RoomMeta | None, records.LiveMeta | None]]]
Publish = Callable[[str, bytes], Awaitable[object]]
Request = Callable[[str, bytes, float], Awaitable[bytes]]


@attrs.frozen(kw_only=True)
class CreatedUser:
    user_id: str
    token: str
    expires_in_s: int
    claims: UserClaims


class UserService:
    def __init__(
        self,
        store: MemberStore,
        *,
        room: RoomReader,
        publish: Publish,
        request: Request,
        api_token: str,
        jwt_secret: str,
        jwt_ttl_s: float,
        status_timeout_s: float = 30.0,
        command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._room = room
        self._publish = publish
        self._request = request
        self._api_token = api_token.encode()
        self._jwt_secret = jwt_secret
        self._jwt_ttl_s = jwt_ttl_s
        self.status_timeout_s = status_timeout_s
        self.command_timeout_s = command_timeout_s
        self.clock = clock
        self._room_locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- authorization ----------------------------------------------------------------------

    def _is_api_token(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self._api_token)

    async def _caller(self, room_id: str, authorization: str | None, *, host_only: bool) -> None:
        token = bearer_token(authorization)
        if token is None:
            raise Unauthorized("Authorization: Bearer <API token or user token> required")
        if self._is_api_token(token):
            return
        claims = verify_user_token(self._jwt_secret, token, clock=self.clock)
        if claims.room_id != room_id:
            raise Forbidden("user token is for another room")
        if host_only and claims.role is not MemberRole.HOST:
            raise Forbidden("only a host may do this")
        if (await self.store.read(room_id)).get(claims.user_id) is None:
            raise Unauthorized("user no longer exists (kicked or room removed)", reason="removed")

    async def _onair_meta(self, room_id: str) -> RoomMeta:
        meta, live = await self._room(room_id)
        if meta is None or live is None or live.status is not records.LiveStatus.ONAIR:
            raise NotFound("room does not exist or is not on air", room_id=room_id)
        return meta

    # -- REST -------------------------------------------------------------------------------

    async def create_user(
        self,
        room_id: str,
        *,
        role: str,
        pin: str | None,
        display_name: str,
        authorization: str | None,
    ) -> CreatedUser:
        validate_room_id(room_id)
        member_role = parse_role(role)
        if member_role is None:
            raise InvalidInput("role must be host, anchor or guest", field="role", value=role)
        token = bearer_token(authorization)
        by_api = self._is_api_token(token)
        if not by_api:
            if pin is None:
                if token is not None:
                    raise Forbidden("wrong API token")
                raise Unauthorized("Authorization: Bearer <API token> or the room's pin required")
            if member_role is MemberRole.HOST:
                raise Forbidden("a host user needs the API token")
        meta = await self._onair_meta(room_id)
        if not by_api and (not meta.pin or not hmac.compare_digest((pin or "").encode(), meta.pin.encode())):
            raise Forbidden("invalid room pin")
        user_id = new_user_id()
        await self.store.create(
            room_id,
            user_id,
            member_role,
            display_name=display_name,
            max_anchors=meta.max_anchors,
            now_ms=self.now_ms(),
        )
        logger.info("room %s: user %s created (%s)", room_id, user_id, member_role.value)
        token_text, claims = issue_user_token(
            self._jwt_secret,
            user_id=user_id,
            room_id=room_id,
            role=member_role,
            ttl_s=self._jwt_ttl_s,
            clock=self.clock,
        )
        await self.publish_members(room_id)
        return CreatedUser(
            user_id=user_id, token=token_text, expires_in_s=int(self._jwt_ttl_s), claims=claims
        )

    async def members(self, room_id: str, authorization: str | None) -> list[Member]:
        validate_room_id(room_id)
        await self._caller(room_id, authorization, host_only=False)
        return (await self.store.read(room_id)).members(self.now_ms(), self.status_timeout_s)

    async def kick(self, room_id: str, user_id: str, authorization: str | None) -> bool:
        """Remove the user; whether its gateway got the kick."""
        validate_room_id(room_id)
        validate_user_id(user_id)
        await self._caller(room_id, authorization, host_only=True)
        if not await self.store.remove_user(room_id, user_id, now_ms=self.now_ms()):
            raise NotFound("no such user in this room", room_id=room_id, user_id=user_id)
        logger.info("room %s: user %s kicked", room_id, user_id)
        await self.publish_members(room_id)
        return await self._deliver(UserCommand(room_id=room_id, user_id=user_id, action=UserAction.KICK))

    async def mute(self, room_id: str, user_id: str, muted: bool, authorization: str | None) -> bool:
        """Store the mute and send it to the user's gateway; whether it was delivered."""
        validate_room_id(room_id)
        validate_user_id(user_id)
        await self._caller(room_id, authorization, host_only=True)
        if await self.store.set_muted(room_id, user_id, muted, now_ms=self.now_ms()):
            await self.publish_members(room_id)
        command = UserCommand(room_id=room_id, user_id=user_id, action=UserAction.MUTE, muted=muted)
        return await self._deliver(command)

    async def _deliver(self, command: UserCommand) -> bool:
        server_id = await self.store.lock_holder(command.user_id)
        if server_id is None:
            return False
        try:
            subject = keys.gateway_users_subject(server_id)
            reply = await self._request(subject, records.encode_record(command), self.command_timeout_s)
            delivered = json.loads(reply).get("delivered") is True
        except AppError as exc:
            log_error(logger, exc, f"{command.action.value} of {command.user_id} not delivered")
            return False
        except (ValueError, AttributeError) as exc:
            logger.warning("gateway %s gave an unreadable reply: %s", server_id, exc)
            return False
        return delivered

    # -- NATS -------------------------------------------------------------------------------

    async def report(self, payload: bytes) -> dict[str, Any]:
        """``rtc.users.status``: decode the batch strictly, write it in one pipeline, publish
        each changed room once, answer one result per report, in order."""
        batch = records.decode_payload(UserStatusReports, payload, key=keys.USERS_STATUS_SUBJECT)
        outcomes = await self.store.report_many(batch.reports, now_ms=self.now_ms())
        results: list[dict[str, Any]] = []
        changed_rooms: dict[str, None] = {}  # ordered: events go out in the batch's room order
        for report, outcome in zip(batch.reports, outcomes, strict=True):
            if isinstance(outcome, AppError):
                log_error(logger, outcome, "status report refused", user_id=report.user_id)
                results.append({"error": outcome.detail, "code": outcome.status_code})
                continue
            if outcome is ReportResult.STALE:
                logger.debug("user %s: report of gen %d ignored (older)", report.user_id, report.gen)
            changed = outcome is ReportResult.CHANGED
            if changed:
                changed_rooms[report.room_id] = None
            results.append({"changed": changed})
        # one event per room however many of its users changed: each carries the full list
        await asyncio.gather(*(self.publish_members(room_id) for room_id in changed_rooms))
        return {"ok": True, "results": results}

    async def publish_members(self, room_id: str) -> None:
        # one lock per room while someone uses it (a count, so the dict does not grow forever)
        lock, users_of_lock = self._room_locks.get(room_id, (asyncio.Lock(), 0))
        self._room_locks[room_id] = (lock, users_of_lock + 1)
        try:
            async with lock:
                users = await self.store.read(room_id)
                event = records.RoomMembers(
                    room_id=room_id,
                    members=users.members(self.now_ms(), self.status_timeout_s),
                    at=datetime.fromtimestamp(self.clock(), UTC),
                )
                subject = keys.event_subject("rooms", room_id, "members")
                await self._publish(subject, records.encode_record(event))
        except AppError as exc:
            log_error(logger, exc, "members event not published", room_id=room_id)
        finally:
            lock, users_of_lock = self._room_locks[room_id]
            if users_of_lock <= 1:
                del self._room_locks[room_id]
            else:
                self._room_locks[room_id] = (lock, users_of_lock - 1)

    # -- housekeeping -----------------------------------------------------------------------

    async def expire_once(self) -> list[str]:
        """One expiry pass over every room with users; the rooms that changed."""
        changed: list[str] = []
        for room_id in await self.store.rooms():
            try:
                result = await self.store.expire(room_id, now_ms=self.now_ms())
            except AppError as exc:
                log_error(logger, exc, "expiry of a room failed", room_id=room_id)
                continue
            if result is ExpireResult.NOTHING:
                continue
            if result is ExpireResult.DROPPED:
                logger.info("room %s: idle users dropped (room TTL)", room_id)
            changed.append(room_id)
            await self.publish_members(room_id)
        return changed

    async def remove_room(self, room_id: str) -> bool:
        """The room's meta is gone: remove its users and publish an empty member list."""
        if not await self.store.remove_room(room_id):
            return False
        logger.info("room %s deleted: its users removed", room_id)
        await self.publish_members(room_id)
        return True
