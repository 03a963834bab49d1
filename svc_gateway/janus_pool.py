"""The gateway's side of Janus: one WebSocket per Janus instance, one session per anchor on it.

``JanusPool.open_leg`` returns an :class:`AnchorLeg`: a Janus session with one AudioBridge
handle, the anchor's way into its room (join with the SDP offer, trickle, keepalive, mute,
leave). All legs on one Janus share one :class:`common.janus_ws.JanusConnection`, opened
lazily by the first leg and matched to replies by transaction.

Janus facts this relies on (checked against Janus 1.1.2):

- The gateway never keeps sessions alive by itself: the client's ``keepalive`` RPC does
  (:meth:`AnchorLeg.keepalive`). Without it Janus destroys the session after
  ``session_timeout`` and sends ``{"janus": "timeout", "session_id"}`` on the connection that
  owns it: the leg reports ``gone``.
- Janus destroys every session of a WebSocket when that WebSocket closes; so when the
  connection drops (Janus killed, network), every leg on it is ``gone`` and the next
  ``open_leg`` reconnects.
- ``claim`` moves a live session to the calling connection (458 if it does not exist); the
  connection that lost it is not told. A resume on another gateway process therefore leaves
  the first process's leg orphaned: an owner drops a leg it no longer serves with
  :meth:`AnchorLeg.release` (never ``leave``, which would destroy the session the other
  process now uses).
- AudioBridge events of a handle (``talking``, ``stopped-talking``, participant lists, leaving)
  carry ``sender`` = the handle id; ``talking`` needs ``audiolevel_event`` on the room, which
  svc_janus sets.

Events reach the leg's owner through ``leg.on_event(kind, data)``, called from the
connection's reader: it must return at once (schedule work, never await or block).

====================  ===========================================================================
kind                  data
====================  ===========================================================================
``joined``            ``{"participants": [{"id", "display", "muted", ...}]}``: participants that
                      are in the room or changed (AudioBridge sends both kinds in one shape);
                      after our own join, the ones already there
``leaving``           ``{"id", "display"}`` (display when known)
``talking``           ``{"id", "display", "talking": bool}``
``hangup``            ``{"reason"}``: the PeerConnection of a successful join closed
``webrtcup``          ``{}``
``media``             ``{"type", "receiving"}``
``slowlink``          Janus's fields
``destroyed``         ``{"room"}``: the AudioBridge room was destroyed
``kicked``            ``{"id"}``
``gone``              ``{"reason": "timeout" | "disconnected" | "detached" | "lost" | "closed"}``:
                      the session is no more (timed out; the connection dropped; the handle was
                      detached; Janus answered 458/459; the pool closed); the leg refuses
                      requests from now on
====================  ===========================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from common.errors import AppError, Unavailable
from common.ids import is_valid_user_id
from common.janus_ws import AUDIOBRIDGE, JanusConnection, SessionLost, plugin_data

__all__ = ["AnchorLeg", "EventCallback", "JanusPool", "participant_display"]

logger = logging.getLogger(__name__)

DISPLAY_PREFIX = "user-"
# The AudioBridge room the resume probe asks about; any number works, the answer is not read.
_PROBE_ROOM = 1

EventCallback = Callable[[str, dict[str, Any]], None]


def participant_display(user_id: str) -> str:
    """The AudioBridge display name of a user: ``user-<uuid>``."""
    return f"{DISPLAY_PREFIX}{user_id}"


class AnchorLeg:
    """One anchor's Janus session and AudioBridge handle (made by :meth:`JanusPool.open_leg`)."""

    def __init__(self, link: _Link, session_id: int, handle_id: int) -> None:
        self.janus_id = link.janus_id
        self.session_id = session_id
        self.handle_id = handle_id
        # Set by the owner; replaced by a new owner after a resume.
        self.on_event: EventCallback | None = None
        # Our AudioBridge participant id (after join) and what we heard of the others.
        self.participant_id: int | None = None
        self.participants: dict[int, str] = {}
        self._link = link
        # when Janus last answered a request of this session (monotonic): any request resets
        # Janus's session timer, so a keepalive soon after one is redundant
        self._answered_at = time.monotonic()
        self._gone: str | None = None
        self._left = False
        self._leaving = False  # leave() runs: its own hangup/detached/gone are not news
        # A successful join's media may be up: only then is a Janus "hangup" news to the owner
        # (a failed join's reset hangs up too, and its event may come after the reply).
        self._joined = False

    def __repr__(self) -> str:
        return f"AnchorLeg({self.janus_id!r}, session={self.session_id}, handle={self.handle_id})"

    @property
    def is_alive(self) -> bool:
        """False once the session is gone, left or released."""
        return self._gone is None and not self._left

    # -- requests ----------------------------------------------------------------------------

    async def _call(
        self, payload: Mapping[str, Any], request: str, *, wants_event: bool = False
    ) -> dict[str, Any]:
        if self._gone is not None or self._left:
            raise SessionLost(
                f"Janus {request}: session {self.session_id} is gone ({self._gone or 'left'})",
                request=request,
                janus_id=self.janus_id,
            )
        try:
            reply = await self._link.conn.call(
                {"session_id": self.session_id, **payload}, request, wants_event=wants_event
            )
        except SessionLost:
            self._lost("lost")
            raise
        self._answered_at = time.monotonic()
        return reply

    async def _message(
        self, body: dict[str, Any], *, jsep: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """An asynchronous AudioBridge request: (the event's data, the whole reply)."""
        request = str(body["request"])
        payload: dict[str, Any] = {"janus": "message", "handle_id": self.handle_id, "body": body}
        if jsep is not None:
            payload["jsep"] = dict(jsep)
        reply = await self._call(payload, request, wants_event=True)
        return plugin_data(reply, request), reply

    async def join(
        self, *, room: int, pin: str, display: str, muted: bool, offer: Mapping[str, Any]
    ) -> dict[str, Any]:
        """AudioBridge ``join`` with the client's SDP offer; returns Janus's answer jsep.

        Errors are typed (wrong pin 489 -> ``Unauthorized``, no such room -> ``NotFound``). The
        leg stays usable after a failed join: Janus applies the offer to the handle before
        AudioBridge looks at the request, and would refuse the next offer (490 "Error setting
        ICE locally"), so a failed join hangs the handle's media up again.
        """
        body: dict[str, Any] = {"request": "join", "room": room, "display": display, "muted": muted}
        if pin:
            body["pin"] = pin
        self._joined = False
        try:
            data, reply = await self._message(body, jsep=offer)
            jsep = reply.get("jsep")
            if not isinstance(jsep, Mapping) or jsep.get("type") != "answer":
                raise Unavailable("Janus join: no SDP answer", request="join", janus_id=self.janus_id)
        except SessionLost:
            raise
        except AppError:
            await self._reset_media()
            raise
        self._joined = True
        if isinstance(data.get("id"), int):
            self.participant_id = data["id"]
        self._note_participants(data.get("participants"), "joined")
        return dict(jsep)

    async def _reset_media(self) -> None:
        """Janus ``hangup`` of the handle: forget the offer of a failed join (best effort)."""
        with contextlib.suppress(AppError):
            await self._call({"janus": "hangup", "handle_id": self.handle_id}, "hangup")

    async def trickle(self, candidate: Mapping[str, Any] | None) -> None:
        """One ICE candidate of the client; None or ``{"completed": true}`` ends gathering."""
        if candidate is None or candidate.get("completed") is True:
            candidate = {"completed": True}
        await self._call(
            {"janus": "trickle", "handle_id": self.handle_id, "candidate": dict(candidate)}, "trickle"
        )

    async def keepalive(self) -> None:
        """Keep the session past Janus's session timeout (the client's keepalive RPC).

        Sent only when Janus answered nothing of this session for the pool's
        ``keepalive_interval_s`` (a third of Janus's 60 s session timeout by default): with
        clients keeping alive every 15 s, every other one reaches Janus, and the session still
        hears from us at least every 30 s.
        """
        if self.is_alive and time.monotonic() - self._answered_at < self._link.pool.keepalive_interval_s:
            return
        await self._call({"janus": "keepalive"}, "keepalive")

    async def configure(self, *, muted: bool) -> None:
        """AudioBridge ``configure {muted}`` of our participant."""
        await self._message({"request": "configure", "muted": muted})

    async def leave(self) -> None:
        """AudioBridge ``leave`` and destroy the session; idempotent, never raises.

        Every failure here means the session is gone already (or soon: Janus times it out),
        which is what the caller wants; it is logged.
        """
        if self._left:
            return
        self._leaving = True
        if self._gone is None:
            with contextlib.suppress(AppError):
                # 487 "not joined" when no offer came: nothing to leave, the destroy still runs.
                await self._message({"request": "leave"})
            try:
                await self._call({"janus": "destroy"}, "destroy")
            except SessionLost:
                pass
            except AppError as exc:
                logger.info("Janus %s: destroying session %d failed: %s", self.janus_id, self.session_id, exc)
        self._left = True
        self._link.forget(self)

    def release(self) -> None:
        """Stop tracking this leg here without touching Janus (no events, no requests).

        For a leg this process no longer serves: the session lives on until it times out or
        another connection claims it (a resume elsewhere).
        """
        self._left = True
        self._link.forget(self)

    # -- events ------------------------------------------------------------------------------

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        callback = self.on_event
        if callback is None or self._leaving:
            return
        try:
            callback(kind, data)
        except Exception:
            logger.exception("AnchorLeg event callback failed (%s)", kind)

    def _lost(self, reason: str) -> None:
        """The session is no more: tell the owner once."""
        if self._gone is not None or self._left:
            return
        self._gone = reason
        self._link.forget(self)
        self._emit("gone", {"reason": reason})

    def _note_participants(self, raw: object, kind: str) -> None:
        if not isinstance(raw, list):
            return
        changed = []
        for p in raw:
            if isinstance(p, Mapping) and isinstance(p.get("id"), int):
                if isinstance(p.get("display"), str):
                    self.participants[p["id"]] = p["display"]
                changed.append(dict(p))
        if changed:
            self._emit(kind, {"participants": changed})

    def _on_janus(self, msg: Mapping[str, Any]) -> None:
        """A message from Janus about this handle (``sender`` = our handle id)."""
        kind = msg.get("janus")
        if kind == "event":
            plugin = msg.get("plugindata")
            data = plugin.get("data") if isinstance(plugin, Mapping) else None
            if isinstance(data, Mapping):
                self._on_audiobridge(data)
        elif kind == "hangup" and self._joined:
            self._joined = False
            self._emit("hangup", {"reason": str(msg.get("reason", ""))})
        elif kind == "webrtcup":
            self._emit("webrtcup", {})
        elif kind == "media":
            self._emit("media", {"type": msg.get("type"), "receiving": bool(msg.get("receiving"))})
        elif kind == "slowlink":
            self._emit(
                "slowlink", {k: v for k, v in msg.items() if k not in ("janus", "session_id", "sender")}
            )
        elif kind == "detached":
            self._lost("detached")

    def _on_audiobridge(self, data: Mapping[str, Any]) -> None:
        what = data.get("audiobridge")
        if what in ("talking", "stopped-talking"):
            pid = data.get("id")
            event: dict[str, Any] = {"id": pid, "talking": what == "talking"}
            display = data.get("display") or (self.participants.get(pid) if isinstance(pid, int) else None)
            if display is not None:
                event["display"] = display
            self._emit("talking", event)
        elif what == "destroyed":
            self._emit("destroyed", {"room": data.get("room")})
        elif what == "event":
            self._note_participants(data.get("participants"), "joined")
            if "leaving" in data:
                pid = data["leaving"]
                event = {"id": pid}
                display = self.participants.pop(pid, None) if isinstance(pid, int) else None
                if display is not None:
                    event["display"] = display
                self._emit("leaving", event)
            if "kicked" in data:
                self._emit("kicked", {"id": data["kicked"]})


class _Link:
    """One Janus instance: its connection and the legs on it."""

    def __init__(self, pool: JanusPool, janus_id: str, url: str) -> None:
        self.pool = pool
        self.janus_id = janus_id
        self.url = url
        self.conn = JanusConnection(
            url,
            request_timeout_s=pool.request_timeout_s,
            on_message=self.on_message,
            name=f"janus-{janus_id}",
        )
        self.by_session: dict[int, AnchorLeg] = {}
        self.by_handle: dict[int, AnchorLeg] = {}
        self.watcher: asyncio.Task[None] | None = None

    def add(self, leg: AnchorLeg) -> None:
        self.by_session[leg.session_id] = leg
        self.by_handle[leg.handle_id] = leg

    def forget(self, leg: AnchorLeg) -> None:
        if self.by_session.get(leg.session_id) is leg:
            del self.by_session[leg.session_id]
        if self.by_handle.get(leg.handle_id) is leg:
            del self.by_handle[leg.handle_id]

    def on_message(self, msg: dict[str, Any]) -> None:
        if msg.get("janus") == "timeout":
            timed_out = self.by_session.get(msg.get("session_id"))  # type: ignore[arg-type]
            if timed_out is not None:
                timed_out._lost("timeout")
            return
        leg = self.by_handle.get(msg.get("sender"))  # type: ignore[arg-type]
        if leg is not None and msg.get("session_id") in (None, leg.session_id):
            leg._on_janus(msg)

    async def watch(self) -> None:
        """Wait for the connection to end, then tell every leg on it."""
        await self.conn.wait_closed()
        reason = "closed" if self.pool.is_closed else "disconnected"
        if not self.pool.is_closed:
            logger.warning(
                "Janus %s (%s): connection lost; %d legs gone", self.janus_id, self.url, len(self.by_session)
            )
        for leg in list(self.by_session.values()):
            leg._lost(reason)
        self.pool._drop_link(self)


class JanusPool:
    """One multiplexed Janus WebSocket per Janus instance (per process), and the legs on them."""

    def __init__(
        self, *, ws_port: int, request_timeout_s: float = 10.0, keepalive_interval_s: float = 20.0
    ) -> None:
        self.ws_port = ws_port
        self.request_timeout_s = request_timeout_s
        self.keepalive_interval_s = keepalive_interval_s
        self._links: dict[str, _Link] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    @property
    def is_closed(self) -> bool:
        return self._closed

    def url_of(self, host: str) -> str:
        # An IPv6 literal needs brackets in a URL.
        shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"ws://{shown}:{self.ws_port}"

    def legs(self, janus_id: str) -> list[AnchorLeg]:
        """The live legs on one Janus (for metrics and tests)."""
        link = self._links.get(janus_id)
        return list(link.by_session.values()) if link is not None else []

    @staticmethod
    def participant_user(display: str) -> str | None:
        """The user id in an AudioBridge display name ``user-<uuid>``, or None."""
        if not isinstance(display, str) or not display.startswith(DISPLAY_PREFIX):
            return None
        user_id = display[len(DISPLAY_PREFIX) :]
        return user_id if is_valid_user_id(user_id) else None

    async def open_leg(
        self, *, janus_id: str, host: str, resume: tuple[int, int] | None
    ) -> tuple[AnchorLeg, bool]:
        """A leg on Janus ``janus_id`` at ``host``; ``(leg, True)`` when ``resume`` = (session,
        handle) was still alive and is reused, else a new session: ``(leg, False)``.

        ``Unavailable`` (or ``DependencyTimeout``) when Janus cannot be reached or refuses.
        """
        link = await self._link(janus_id, host)
        if resume is not None:
            leg = await self._resume(link, *resume)
            if leg is not None:
                return leg, True
        return await self._new_leg(link), False

    async def _resume(self, link: _Link, session_id: int, handle_id: int) -> AnchorLeg | None:
        known = link.by_session.get(session_id)
        if known is not None:
            # Ours already (the client reconnected to this process): the same leg, new owner.
            return known if known.handle_id == handle_id and known.is_alive else None
        try:
            await link.conn.call({"janus": "claim", "session_id": session_id}, "claim")
        except AppError as exc:
            # 458 (the session timed out, Janus restarted) is the usual answer.
            logger.info("Janus %s: no resume of session %d: %s", link.janus_id, session_id, exc)
            return None
        leg = AnchorLeg(link, session_id, handle_id)
        link.add(leg)
        try:
            # The handle must still be an AudioBridge handle of that session: a cheap request
            # that needs no room and no key answers for it (459 when it is not there).
            reply = await leg._call(
                {
                    "janus": "message",
                    "handle_id": handle_id,
                    "body": {"request": "exists", "room": _PROBE_ROOM},
                },
                "exists",
            )
            plugin_data(reply, "exists")
        except AppError as exc:
            logger.info(
                "Janus %s: claimed session %d has no handle %d: %s", link.janus_id, session_id, handle_id, exc
            )
            # The token was genuine, so the session was this user's: destroy it rather than
            # leave it to time out. (leave() would not: the 459 marked the leg gone.)
            leg.release()
            with contextlib.suppress(AppError):
                await link.conn.call({"janus": "destroy", "session_id": session_id}, "destroy")
            return None
        return leg

    async def _new_leg(self, link: _Link) -> AnchorLeg:
        created = await link.conn.call({"janus": "create"}, "create")
        session_id = int(created["data"]["id"])
        try:
            attached = await link.conn.call(
                {"janus": "attach", "session_id": session_id, "plugin": AUDIOBRIDGE}, "attach"
            )
        except AppError:
            with contextlib.suppress(AppError):
                await link.conn.call({"janus": "destroy", "session_id": session_id}, "destroy")
            raise
        leg = AnchorLeg(link, session_id, int(attached["data"]["id"]))
        link.add(leg)
        return leg

    async def _link(self, janus_id: str, host: str) -> _Link:
        if self._closed:
            raise Unavailable("the Janus pool is closed", janus_id=janus_id)
        url = self.url_of(host)
        lock = self._locks.setdefault(janus_id, asyncio.Lock())
        async with lock:
            link = self._links.get(janus_id)
            if link is not None and link.conn.is_open and link.url == url:
                return link
            if link is not None:
                # Dropped (its watcher has not run yet) or moved to another host: a Janus id
                # names one process, so the old connection's sessions are of no use.
                await self._close_link(link)
            link = _Link(self, janus_id, url)
            await link.conn.connect()
            link.watcher = asyncio.create_task(link.watch(), name=f"janus-{janus_id}-watch")
            self._links[janus_id] = link
            logger.info("Janus %s: connected to %s", janus_id, url)
            return link

    def _drop_link(self, link: _Link) -> None:
        if self._links.get(link.janus_id) is link:
            del self._links[link.janus_id]

    async def _close_link(self, link: _Link) -> None:
        await link.conn.aclose()
        if link.watcher is not None:
            # The watcher tells the legs and drops the link; wait for it so that no leg of
            # the old connection is reported after this returns.
            await asyncio.wait({link.watcher})
        self._drop_link(link)

    async def aclose(self) -> None:
        """Close every connection (Janus destroys their sessions); every leg gets ``gone``."""
        self._closed = True
        for link in list(self._links.values()):
            await self._close_link(link)

    async def __aenter__(self) -> JanusPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
