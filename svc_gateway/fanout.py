"""What reaches local connections from NATS: room members, room events and user commands.

Each gateway process holds, on core NATS (no consumer state; a notification missed while NATS
is away is replaced by the next one, and svc_users publishes the full list every time):

- ``rtc.events.rooms.*.members`` (``RoomMembers``) -> ``roomStatus`` (the member list) to every
  local connection of the room;
- ``rtc.events.rooms.*.migrated`` (``RoomMigrated``, kind ``janus``) -> ``reconnect {reason:
  "migrated"}``; a mixer migration does not touch the anchors' Janus room, so it is not sent;
- ``rtc.events.rooms.*.janus_restarted`` -> ``reconnect {reason: "janus_restarted"}``;
- a responder on ``rtc.gateway.{serverId}.users`` (``UserCommand`` from svc_users): ``kick``
  -> ``kicked`` + close 4403, ``mute`` -> AudioBridge configure + ``muted``; the reply is
  ``{"delivered": bool}`` (false: the user has no connection here).

Every process subscribes to the room subjects (no queue group), so members of one room on
several gateways all get the same notifications.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from common import keys, records
from common.bus import Bus, Message, Subscription
from common.errors import AppError
from svc_gateway.methods import Anchor

__all__ = ["Fanout", "Registry"]

logger = logging.getLogger(__name__)


class Registry:
    """This process's connections, by room and by user."""

    def __init__(self) -> None:
        self._rooms: dict[str, set[Anchor]] = {}
        self._users: dict[str, Anchor] = {}

    def add(self, anchor: Anchor) -> None:
        self._rooms.setdefault(anchor.room_id, set()).add(anchor)
        self._users[anchor.user_id] = anchor

    def remove(self, anchor: Anchor) -> None:
        members = self._rooms.get(anchor.room_id)
        if members is not None:
            members.discard(anchor)
            if not members:
                del self._rooms[anchor.room_id]
        if self._users.get(anchor.user_id) is anchor:
            del self._users[anchor.user_id]

    def room(self, room_id: str) -> list[Anchor]:
        return list(self._rooms.get(room_id, ()))

    def user(self, user_id: str) -> Anchor | None:
        return self._users.get(user_id)

    def all(self) -> list[Anchor]:
        return [a for members in self._rooms.values() for a in members]

    def __len__(self) -> int:
        return sum(len(m) for m in self._rooms.values())


def _decode(cls: type[Any], msg: Message) -> Any | None:
    try:
        return records.decode_payload(cls, msg.data, key=msg.subject)
    except AppError as exc:
        logger.warning("undecodable %s on %s skipped: %s", cls.__name__, msg.subject, exc)
        return None


class Fanout:
    def __init__(self, bus: Bus, registry: Registry, *, server_id: str) -> None:
        self._bus = bus
        self._registry = registry
        self.commands_subject = keys.gateway_users_subject(server_id)
        self._subs: list[Subscription] = []

    async def start(self) -> None:
        plan: list[tuple[str, Callable[[Message], Any]]] = [
            (keys.event_filter("rooms", "members"), self._on_members),
            (keys.event_filter("rooms", "migrated"), self._on_migrated),
            (keys.event_filter("rooms", "janus_restarted"), self._on_janus_restarted),
            (self.commands_subject, self._on_command),
        ]
        try:
            for subject, handler in plan:
                self._subs.append(await self._bus.subscribe(subject, handler))
            # the subscriptions are in place on the server before we report ready
            await self._bus.nc.flush()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def __aenter__(self) -> Fanout:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _on_members(self, msg: Message) -> None:
        event = _decode(records.RoomMembers, msg)
        if event is None:
            return
        params = [records.unstructure(m) for m in event.members]
        for anchor in self._registry.room(event.room_id):
            anchor.conn.notify("roomStatus", params)

    async def _on_migrated(self, msg: Message) -> None:
        event = _decode(records.RoomMigrated, msg)
        if event is None or event.kind is not records.MigrationKind.JANUS:
            return
        for anchor in self._registry.room(event.room_id):
            anchor.request_reconnect("migrated")

    async def _on_janus_restarted(self, msg: Message) -> None:
        event = _decode(records.JanusRestarted, msg)
        if event is None:
            return
        for anchor in self._registry.room(event.room_id):
            anchor.request_reconnect("janus_restarted")

    async def _on_command(self, msg: Message) -> None:
        delivered = False
        command = _decode(records.UserCommand, msg)
        if command is not None:
            anchor = self._registry.user(command.user_id)
            if anchor is not None and anchor.room_id == command.room_id:
                delivered = await self._apply(anchor, command)
        if msg.reply:
            with contextlib.suppress(Exception):
                await msg.respond(json.dumps({"delivered": delivered}).encode())

    async def _apply(self, anchor: Anchor, command: records.UserCommand) -> bool:
        logger.info("command %s for user %s of room %s", command.action, command.user_id, command.room_id)
        try:
            if command.action == records.UserAction.KICK:
                await anchor.kick()
            elif command.muted is not None:
                await anchor.apply_mute(command.muted)
            else:
                return False
        except AppError as exc:
            logger.warning("command %s for user %s failed: %s", command.action, command.user_id, exc)
            return False
        return True
