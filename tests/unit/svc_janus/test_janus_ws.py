"""svc_janus's Janus client without I/O (the transport has its own tests: tests/unit/common)."""

from __future__ import annotations

import pytest

from common.errors import Unavailable
from svc_janus.janus_ws import JanusClient


async def test_unsolicited_events_go_to_the_listener() -> None:
    seen: list[dict[str, object]] = []
    client = JanusClient("ws://127.0.0.1:1", on_event=seen.append)
    client._dispatch({"janus": "event", "sender": 1, "plugindata": {"data": {"audiobridge": "talking"}}})
    client._dispatch({"janus": "timeout", "session_id": 5})  # not our session (we have none)
    assert [m["janus"] for m in seen] == ["event", "timeout"]


async def test_requests_fail_fast_while_disconnected() -> None:
    client = JanusClient("ws://127.0.0.1:1")
    with pytest.raises(Unavailable, match="no Janus session"):
        await client.message({"request": "list"})
    with pytest.raises(Unavailable, match="not connected"):
        await client.info()
