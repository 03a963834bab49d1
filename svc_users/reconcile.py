"""Remove the users of deleted rooms; expire statuses (docs/svc_users.md, Housekeeping).

svc_users follows the rooms' ``meta`` state events (the reconcile runtime, common/reconcile.py).
A room whose meta is gone loses its users (``remove_room``) and gets an empty members event.
The cache may lag behind etcd (a user is created from a direct etcd read), so a room is only
cleared after a fresh etcd read confirms its meta is absent.

:class:`ExpiryLoop` runs every ``EXPIRY_CHECK_INTERVAL``: statuses not refreshed for
``USER_STATUS_TIMEOUT`` become ``left``, rooms idle past ``ROOM_MAX_TTL`` are dropped, and a
room with users in Redis that the cache does not know (deleted while svc_users was down) is
enqueued, so the reconcile above clears it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from common import keys
from common.errors import log_error
from common.reconcile import Interest, StateCache, Target
from common.supervisor import SupervisedTask
from svc_users.users import UserService

__all__ = ["INTERESTS", "SUBSCRIPTIONS", "ExpiryLoop", "UsersReconciler"]

logger = logging.getLogger(__name__)

# What svc_users' reconcile runtime watches, and the core NATS subjects it subscribes to (answers
# on); tests/unit/common/test_contract_consumers.py checks the contract registry against both.
INTERESTS: tuple[Interest, ...] = (Interest(keys.Collection.ROOMS.value, frozenset({keys.Kind.META.value})),)
SUBSCRIPTIONS: tuple[str, ...] = (keys.USERS_STATUS_SUBJECT,)

MetaExists = Callable[[str], Awaitable[bool]]


class UsersReconciler:
    def __init__(self, users: UserService, meta_exists: MetaExists) -> None:
        self.users = users
        self._meta_exists = meta_exists

    async def reconcile(self, target: Target, view: Mapping[str, Any]) -> None:
        if target.collection != keys.Collection.ROOMS or view.get(keys.Kind.META) is not None:
            return
        if await self._meta_exists(target.id):
            return  # the cache is behind; the put event is on its way
        await self.users.remove_room(target.id)


class ExpiryLoop:
    """``expire_once`` every ``interval_s``, plus the orphan check (see the module doc)."""

    def __init__(
        self,
        users: UserService,
        cache: StateCache,
        enqueue: Callable[[Target], None],
        *,
        interval_s: float,
    ) -> None:
        self.users = users
        self.cache = cache
        self._enqueue = enqueue
        self.interval_s = interval_s
        # Supervised: a pass that fails is logged and the next one retries, but something
        # unexpected ending the loop would stop every expiry for good.
        self._task = SupervisedTask("svc_users-expiry", self._run)

    @property
    def is_running(self) -> bool:
        """The expiry loop runs (the ``expiry`` health check)."""
        return self._task.is_running

    async def run_once(self) -> None:
        await self.users.expire_once()
        for room_id in await self.users.store.rooms():
            if self.cache.get(keys.Collection.ROOMS, room_id, keys.Kind.META) is None:
                self._enqueue(Target(keys.Collection.ROOMS.value, room_id))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_error(logger, exc, "expiry pass failed; the next one retries")

    async def __aenter__(self) -> ExpiryLoop:
        self._task.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._task.stop()
