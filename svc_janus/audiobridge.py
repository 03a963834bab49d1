"""The AudioBridge plugin requests svc_janus makes, typed (replies decoded open-world).

Every room-changing request carries the room's ``secret``; ``create`` and the RTP forwarder
requests also carry the ``admin_key`` (the Janus config sets ``admin_key`` and
``lock_rtp_forward = true``, so nobody else can create rooms or forward a room's audio).
Janus's replies are data we do not own: only the fields used here are read (docs/conventions.md, Records).
Errors are the typed errors of :mod:`svc_janus.janus_ws` (485 -> NotFound, 486 -> Conflict,
489 -> Unauthorized, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import attrs

from common.errors import Unavailable
from common.media import OPUS_PAYLOAD_TYPE

__all__ = ["AudioBridge", "Forwarder", "MessageClient", "RoomInfo"]

SAMPLING_RATE_HZ = 48_000


class MessageClient(Protocol):
    """What AudioBridge needs of a Janus client (JanusClient implements it)."""

    async def message(self, body: Mapping[str, Any], *, handle_id: int | None = None) -> dict[str, Any]: ...


@attrs.frozen
class RoomInfo:
    """One entry of ``list``."""

    room: int
    description: str
    num_participants: int
    pin_required: bool

    @classmethod
    def from_janus(cls, data: Mapping[str, Any]) -> RoomInfo:
        return cls(
            room=int(data["room"]),
            description=str(data.get("description", "")),
            num_participants=int(data.get("num_participants", 0)),
            pin_required=bool(data.get("pin_required", False)),
        )


@attrs.frozen
class Forwarder:
    """One entry of ``listforwarders`` (or the result of ``rtp_forward``)."""

    stream_id: int
    host: str
    port: int
    ptype: int | None = None

    @classmethod
    def from_janus(cls, data: Mapping[str, Any]) -> Forwarder:
        ptype = data.get("ptype")
        return cls(
            stream_id=int(data["stream_id"]),
            host=str(data.get("ip", data.get("host", ""))),
            port=int(data.get("port", 0)),
            ptype=int(ptype) if ptype is not None else None,
        )


class AudioBridge:
    """AudioBridge requests over one Janus client (its default handle)."""

    def __init__(self, client: MessageClient, *, admin_key: str) -> None:
        self._client = client
        self._admin_key = admin_key

    async def _message(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._client.message(body)

    async def create_audiobridge_room(
        self,
        room: int,
        *,
        description: str,
        secret: str,
        pin: str = "",
        allow_rtp_participants: bool = True,
        audiolevel_event: bool = True,
    ) -> None:
        """Create a non-permanent Opus 48 kHz room; ``Conflict`` if the id is taken."""
        body: dict[str, Any] = {
            "request": "create",
            "room": room,
            "admin_key": self._admin_key,
            "description": description,
            "secret": secret,
            "sampling_rate": SAMPLING_RATE_HZ,
            "permanent": False,
            "is_private": False,
            "audiolevel_event": audiolevel_event,
            "allow_rtp_participants": allow_rtp_participants,
        }
        if pin:
            body["pin"] = pin
        await self._message(body)

    async def edit_pin(self, room: int, *, secret: str, pin: str) -> None:
        """Change the room's pin (an empty pin removes it)."""
        await self._message({"request": "edit", "room": room, "secret": secret, "new_pin": pin})

    async def destroy_audiobridge_room(self, room: int, *, secret: str) -> None:
        """Destroy the room (its forwarders go with it); ``NotFound`` if there is none."""
        await self._message({"request": "destroy", "room": room, "secret": secret, "permanent": False})

    async def exists(self, room: int) -> bool:
        data = await self._message({"request": "exists", "room": room})
        return bool(data.get("exists", False))

    async def list_audiobridge_rooms(self) -> list[RoomInfo]:
        data = await self._message({"request": "list", "admin_key": self._admin_key})
        return [RoomInfo.from_janus(r) for r in data.get("list", [])]

    async def list_participants(self, room: int) -> list[dict[str, Any]]:
        data = await self._message({"request": "listparticipants", "room": room})
        return list(data.get("participants", []))

    async def rtp_forward(
        self, room: int, *, secret: str, host: str, port: int, ptype: int = OPUS_PAYLOAD_TYPE
    ) -> Forwarder:
        """Forward the room's mix as Opus RTP to host:port, silence included (always_on)."""
        data = await self._message(
            {
                "request": "rtp_forward",
                "room": room,
                "secret": secret,
                "admin_key": self._admin_key,
                "host": host,
                "port": port,
                "codec": "opus",
                "ptype": ptype,
                "always_on": True,
            }
        )
        stream_id = int(data.get("stream_id", 0))
        if stream_id == 0:
            raise Unavailable("Janus rtp_forward returned no stream_id", room=room)
        return Forwarder(stream_id=stream_id, host=host, port=port, ptype=ptype)

    async def stop_rtp_forward(self, room: int, *, secret: str, stream_id: int) -> None:
        """Stop one forwarder (``stop_rtp_forward``: the reference's ``stop_rtp_forwarder`` was wrong)."""
        await self._message(
            {
                "request": "stop_rtp_forward",
                "room": room,
                "secret": secret,
                "admin_key": self._admin_key,
                "stream_id": stream_id,
            }
        )

    async def list_forwarders(self, room: int, *, secret: str) -> list[Forwarder]:
        data = await self._message(
            {"request": "listforwarders", "room": room, "secret": secret, "admin_key": self._admin_key}
        )
        return [Forwarder.from_janus(f) for f in data.get("rtp_forwarders", [])]
