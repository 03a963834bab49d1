"""The Janus transport: error mapping and transaction routing (no I/O: messages are fed to the
dispatcher)."""

from __future__ import annotations

import asyncio

import pytest

from common.errors import Conflict, InvalidInput, NotFound, Unauthorized, Unavailable
from common.janus_ws import JanusConnection, SessionLost, _Pending, janus_error, plugin_data, plugin_error


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (485, NotFound),
        (486, Conflict),
        (489, Unauthorized),
        (483, InvalidInput),
        (482, InvalidInput),
        (488, Unavailable),
        (499, Unavailable),
        (492, NotFound),
    ],
)
def test_plugin_error_codes_map_to_typed_errors(code: int, cls: type[Exception]) -> None:
    err = plugin_error({"audiobridge": "event", "error_code": code, "error": "why"}, "create")
    assert type(err) is cls
    assert err is not None and err.fields == {"janus_code": code, "request": "create"}
    assert "why" in err.detail


def test_a_success_without_error_code_is_no_error() -> None:
    assert plugin_error({"audiobridge": "success", "list": []}, "list") is None


def test_plugin_data() -> None:
    assert plugin_data({"plugindata": {"data": {"audiobridge": "joined"}}}, "join") == {
        "audiobridge": "joined"
    }
    with pytest.raises(NotFound):
        plugin_data({"plugindata": {"data": {"error_code": 485, "error": "no room"}}}, "join")
    with pytest.raises(Unavailable, match="without plugin data"):
        plugin_data({"janus": "success"}, "join")


def test_core_errors() -> None:
    lost = janus_error({"janus": "error", "error": {"code": 458, "reason": "No such session"}}, "keepalive")
    assert isinstance(lost, SessionLost) and isinstance(lost, Unavailable)
    assert isinstance(janus_error({"error": {"code": 459, "reason": "x"}}, "trickle"), SessionLost)
    assert isinstance(janus_error({"error": {"code": 403, "reason": "x"}}, "create"), Unauthorized)
    assert isinstance(janus_error({"error": {"code": 453, "reason": "x"}}, "create"), InvalidInput)
    assert type(janus_error({"error": {"code": 490, "reason": "x"}}, "create")) is Unavailable


async def test_async_request_waits_past_the_ack_for_its_event() -> None:
    conn = JanusConnection("ws://127.0.0.1:1")
    loop = asyncio.get_running_loop()
    sync_f: asyncio.Future[dict[str, object]] = loop.create_future()
    async_f: asyncio.Future[dict[str, object]] = loop.create_future()
    conn._pending["a"] = _Pending(sync_f, False, "list")
    conn._pending["b"] = _Pending(async_f, True, "join")
    conn._dispatch({"janus": "ack", "transaction": "b"})
    assert not async_f.done()
    conn._dispatch({"janus": "success", "transaction": "a"})
    assert sync_f.result() == {"janus": "success", "transaction": "a"}
    conn._dispatch({"janus": "event", "transaction": "b", "plugindata": {}})
    assert async_f.result()["janus"] == "event"
    assert conn._pending == {}


async def test_unsolicited_messages_go_to_the_handler_and_its_failures_stay_there() -> None:
    seen: list[dict[str, object]] = []

    def handler(msg: dict[str, object]) -> None:
        seen.append(msg)
        if msg.get("janus") == "hangup":
            raise RuntimeError("a broken handler")

    conn = JanusConnection("ws://127.0.0.1:1", on_message=handler)
    conn._dispatch({"janus": "event", "sender": 1, "plugindata": {"data": {"audiobridge": "talking"}}})
    conn._dispatch({"janus": "ack", "transaction": "unknown"})
    conn._dispatch({"janus": "hangup", "sender": 1})
    conn._dispatch({"janus": "webrtcup", "sender": 1})
    assert [m["janus"] for m in seen] == ["event", "ack", "hangup", "webrtcup"]


async def test_requests_fail_fast_when_not_connected() -> None:
    conn = JanusConnection("ws://127.0.0.1:1")
    with pytest.raises(Unavailable, match="not connected"):
        await conn.call({"janus": "info"}, "info")


async def test_connect_failure_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="cannot connect"):
        await JanusConnection.open("ws://127.0.0.1:1", request_timeout_s=2)
