"""The Redis key layout of room users, shared by svc_users (owner of the user hashes) and
svc_gateway (connection locks, generations; it reads a user's role to refuse a kicked user).

All keys start with ``REDIS_USER_SVC_PREFIX`` (default ``rtcus``):

- ``{p}:rooms`` (hash): roomId -> unix ms of the room's latest user change.
- ``{p}:r:{roomId}:us`` (hash), per user: ``m:{uid}`` role; ``s:{uid}`` status
  ``"<ts ms>,<status>,<gen>"``; ``t:{uid}`` created (unix ms); ``n:{uid}`` display name;
  ``mu:{uid}`` / ``tk:{uid}`` ``"1"`` while muted / talking.
- ``{p}:c:{uid}`` (string, TTL): the user's connection lock ``"{serverId}:{connId}"``.
- ``{p}:s:{serverId}`` (string, short TTL): a gateway process's heartbeat.
- ``{p}:g:{uid}`` (string): the user's connection generation counter (INCR at each join).

A user exists in a room exactly while its ``m:{uid}`` field does: kick and room deletion remove
it, and the gateway refuses a token whose user no longer exists.
"""

from __future__ import annotations

import attrs

__all__ = ["UserKeys"]


@attrs.frozen
class UserKeys:
    prefix: str = "rtcus"

    @property
    def rooms(self) -> str:
        return f"{self.prefix}:rooms"

    def room_users(self, room_id: str) -> str:
        return f"{self.prefix}:r:{room_id}:us"

    def conn_lock(self, user_id: str) -> str:
        return f"{self.prefix}:c:{user_id}"

    def server_heartbeat(self, server_id: str) -> str:
        return f"{self.prefix}:s:{server_id}"

    def generation(self, user_id: str) -> str:
        return f"{self.prefix}:g:{user_id}"

    @staticmethod
    def role_field(user_id: str) -> str:
        return f"m:{user_id}"

    @staticmethod
    def status_field(user_id: str) -> str:
        return f"s:{user_id}"

    @staticmethod
    def created_field(user_id: str) -> str:
        return f"t:{user_id}"

    @staticmethod
    def name_field(user_id: str) -> str:
        return f"n:{user_id}"

    @staticmethod
    def muted_field(user_id: str) -> str:
        return f"mu:{user_id}"

    @staticmethod
    def talking_field(user_id: str) -> str:
        return f"tk:{user_id}"
