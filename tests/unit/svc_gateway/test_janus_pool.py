"""The pool without Janus: display names, URLs and how Janus messages become leg events (fed to
the connection's handler as the reader would)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from common.errors import Unavailable
from common.janus_ws import SessionLost
from svc_gateway.janus_pool import AnchorLeg, JanusPool, _Link, participant_display


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, data: dict[str, Any]) -> None:
        self.seen.append((kind, data))


def make_leg(session_id: int = 10, handle_id: int = 20) -> tuple[_Link, AnchorLeg, Events]:
    link = _Link(JanusPool(ws_port=8188), "j1", "ws://127.0.0.1:8188")
    leg = AnchorLeg(link, session_id, handle_id)
    link.add(leg)
    events = Events()
    leg.on_event = events
    return link, leg, events


def another_leg(link: _Link, session_id: int, handle_id: int) -> tuple[AnchorLeg, Events]:
    leg = AnchorLeg(link, session_id, handle_id)
    link.add(leg)
    events = Events()
    leg.on_event = events
    return leg, events


def plugin_event(handle_id: int, data: dict[str, Any], session_id: int = 10) -> dict[str, Any]:
    return {
        "janus": "event",
        "session_id": session_id,
        "sender": handle_id,
        "plugindata": {"plugin": "janus.plugin.audiobridge", "data": data},
    }


def test_participant_user() -> None:
    user = str(uuid.uuid4())
    assert participant_display(user) == f"user-{user}"
    assert JanusPool.participant_user(participant_display(user)) == user
    pool = JanusPool(ws_port=8188)
    assert pool.participant_user(f"user-{user}") == user
    for bad in ["tone", "user-", "user-not-a-uuid", user, f"user-{user.upper()}", f"User-{user}"]:
        assert pool.participant_user(bad) is None


def test_url_of() -> None:
    pool = JanusPool(ws_port=8188)
    assert pool.url_of("10.0.0.5") == "ws://10.0.0.5:8188"
    assert pool.url_of("::1") == "ws://[::1]:8188"
    assert pool.url_of("janus-1.internal") == "ws://janus-1.internal:8188"


def test_participants_joined_talking_leaving() -> None:
    link, leg, events = make_leg()
    link.on_message(
        plugin_event(
            20,
            {
                "audiobridge": "event",
                "room": 5,
                "participants": [{"id": 7, "display": "user-x", "setup": True, "muted": False}],
            },
        )
    )
    link.on_message(plugin_event(20, {"audiobridge": "talking", "room": 5, "id": 7}))
    link.on_message(plugin_event(20, {"audiobridge": "stopped-talking", "room": 5, "id": 7}))
    link.on_message(plugin_event(20, {"audiobridge": "talking", "room": 5, "id": 8}))  # never heard of
    link.on_message(plugin_event(20, {"audiobridge": "event", "room": 5, "leaving": 7}))
    link.on_message(plugin_event(20, {"audiobridge": "event", "room": 5, "kicked": 9}))
    link.on_message(plugin_event(20, {"audiobridge": "destroyed", "room": 5}))
    assert events.seen == [
        ("joined", {"participants": [{"id": 7, "display": "user-x", "setup": True, "muted": False}]}),
        ("talking", {"id": 7, "talking": True, "display": "user-x"}),
        ("talking", {"id": 7, "talking": False, "display": "user-x"}),
        ("talking", {"id": 8, "talking": True}),
        ("leaving", {"id": 7, "display": "user-x"}),
        ("kicked", {"id": 9}),
        ("destroyed", {"room": 5}),
    ]
    assert leg.participants == {}


def test_core_events_and_routing() -> None:
    link, leg, events = make_leg()
    _, other_events = another_leg(link, 11, 21)
    link.on_message({"janus": "webrtcup", "session_id": 10, "sender": 20})
    link.on_message({"janus": "media", "session_id": 10, "sender": 20, "type": "audio", "receiving": True})
    link.on_message({"janus": "slowlink", "session_id": 10, "sender": 20, "uplink": True, "lost": 3})
    # hangup counts only after a successful join (a failed join's reset hangs up too)
    link.on_message({"janus": "hangup", "session_id": 10, "sender": 20, "reason": "Janus API"})
    leg._joined = True
    link.on_message({"janus": "hangup", "session_id": 10, "sender": 20, "reason": "DTLS alert"})
    link.on_message({"janus": "webrtcup", "session_id": 99, "sender": 20})  # another session's handle id
    link.on_message({"janus": "webrtcup", "session_id": 10, "sender": 999})  # nobody's
    assert events.seen == [
        ("webrtcup", {}),
        ("media", {"type": "audio", "receiving": True}),
        ("slowlink", {"uplink": True, "lost": 3}),
        ("hangup", {"reason": "DTLS alert"}),
    ]
    assert other_events.seen == []


async def test_timeout_and_detached_make_a_leg_gone_once() -> None:
    link, leg, events = make_leg()
    _, other_events = another_leg(link, 11, 21)
    link.on_message({"janus": "timeout", "session_id": 10})
    link.on_message({"janus": "timeout", "session_id": 10})
    link.on_message({"janus": "detached", "session_id": 11, "sender": 21})
    assert events.seen == [("gone", {"reason": "timeout"})]
    assert other_events.seen == [("gone", {"reason": "detached"})]
    assert not leg.is_alive and link.by_session == {} and link.by_handle == {}
    with pytest.raises(SessionLost, match="gone"):
        await leg.keepalive()
    await leg.leave()  # never raises


async def test_callback_failures_stay_in_the_callback() -> None:
    link, leg, _ = make_leg()

    def broken(kind: str, data: dict[str, Any]) -> None:
        raise RuntimeError("owner bug")

    leg.on_event = broken
    link.on_message({"janus": "webrtcup", "session_id": 10, "sender": 20})
    link.on_message({"janus": "timeout", "session_id": 10})
    assert not leg.is_alive


async def test_release_forgets_without_requests() -> None:
    link, leg, events = make_leg()
    leg.release()
    assert link.by_session == {} and not leg.is_alive
    link.on_message({"janus": "timeout", "session_id": 10})
    assert events.seen == []
    with pytest.raises(SessionLost):
        await leg.configure(muted=True)


async def test_requests_on_a_closed_connection_are_unavailable() -> None:
    _, leg, _ = make_leg()
    with pytest.raises(Unavailable, match="not connected"):
        await leg.trickle(None)
