"""Janus error mapping and transaction routing (no I/O: messages are fed to the dispatcher)."""

from __future__ import annotations

import asyncio

import pytest

from common.errors import Conflict, InvalidInput, NotFound, Unauthorized, Unavailable
from svc_janus.janus_ws import JanusClient, SessionLost, _Pending, janus_error, plugin_error


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


def test_core_errors() -> None:
    lost = janus_error({"janus": "error", "error": {"code": 458, "reason": "No such session"}}, "keepalive")
    assert isinstance(lost, SessionLost) and isinstance(lost, Unavailable)
    assert isinstance(janus_error({"error": {"code": 403, "reason": "x"}}, "create"), Unauthorized)
    assert isinstance(janus_error({"error": {"code": 453, "reason": "x"}}, "create"), InvalidInput)
    assert type(janus_error({"error": {"code": 490, "reason": "x"}}, "create")) is Unavailable


async def test_async_request_waits_past_the_ack_for_its_event() -> None:
    client = JanusClient("ws://127.0.0.1:1")
    loop = asyncio.get_running_loop()
    sync_f: asyncio.Future[dict[str, object]] = loop.create_future()
    async_f: asyncio.Future[dict[str, object]] = loop.create_future()
    client._pending["a"] = _Pending(sync_f, False, "list")
    client._pending["b"] = _Pending(async_f, True, "join")
    assert client._dispatch({"janus": "ack", "transaction": "b"})
    assert not async_f.done()
    assert client._dispatch({"janus": "success", "transaction": "a"})
    assert sync_f.result() == {"janus": "success", "transaction": "a"}
    assert client._dispatch({"janus": "event", "transaction": "b", "plugindata": {}})
    assert async_f.result()["janus"] == "event"
    assert client._pending == {}


async def test_unsolicited_events_go_to_the_listener() -> None:
    seen: list[dict[str, object]] = []
    client = JanusClient("ws://127.0.0.1:1", on_event=seen.append)
    assert client._dispatch(
        {"janus": "event", "sender": 1, "plugindata": {"data": {"audiobridge": "talking"}}}
    )
    assert client._dispatch({"janus": "ack", "transaction": "unknown"})
    assert len(seen) == 2


async def test_requests_fail_fast_while_disconnected() -> None:
    client = JanusClient("ws://127.0.0.1:1")
    with pytest.raises(Unavailable, match="no Janus session"):
        await client.message({"request": "list"})
