"""JSON-RPC framing: classification of frames and the encoded replies."""

from __future__ import annotations

import json

import pytest

from common.errors import Conflict, TooManyRequests
from svc_gateway import jsonrpc
from svc_gateway.connection import TokenBucket


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"jsonrpc":"2.0","id":1,"method":"join","params":{}}',
            jsonrpc.Request(id=1, method="join", params={}),
        ),
        ('{"id":0,"method":"keepalive"}', jsonrpc.Request(id=0, method="keepalive")),
        ('{"id":"a","method":"leave"}', jsonrpc.Request(id="a", method="leave")),
        (
            '{"method":"keepalive","params":{"status":"idle"}}',
            jsonrpc.Notification(method="keepalive", params={"status": "idle"}),
        ),
        ('{"id":null,"method":"icecandidate"}', jsonrpc.Notification(method="icecandidate")),
    ],
)
def test_requests_and_notifications(text: str, expected: object) -> None:
    assert jsonrpc.parse_message(text) == expected


@pytest.mark.parametrize(
    ("text", "code", "rpc_id"),
    [
        ("{", -32700, None),
        ("[]", -32600, None),
        ("7", -32600, None),
        ('{"id":true,"method":"x"}', -32600, None),
        ('{"id":3}', -32600, 3),
        ('{"id":3,"result":1}', -32600, 3),
        ('{"id":3,"method":"x","params":1}', -32600, 3),
    ],
)
def test_refused_frames(text: str, code: int, rpc_id: object) -> None:
    result = jsonrpc.parse_message(text)
    assert isinstance(result, tuple)
    error, got_id = result
    assert error.rpc_code == code and got_id == rpc_id


def test_encodings() -> None:
    assert json.loads(jsonrpc.encode_result(5, None)) == {"jsonrpc": "2.0", "id": 5, "result": None}
    err = json.loads(jsonrpc.encode_error("x", Conflict("already joined")))
    assert err == {
        "jsonrpc": "2.0",
        "id": "x",
        "error": {"code": -32600, "message": "already joined", "data": {"type": "Conflict"}},
    }
    assert (
        json.loads(jsonrpc.encode_error(1, TooManyRequests("too many requests")))["error"]["code"] == -32029
    )
    assert json.loads(jsonrpc.encode_error(1, RuntimeError("secret detail")))["error"] == {
        "code": -32603,
        "message": "unknown error",
    }
    assert json.loads(jsonrpc.encode_notification("talking", {"userId": "u", "talking": True})) == {
        "jsonrpc": "2.0",
        "method": "talking",
        "params": {"userId": "u", "talking": True},
    }


def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(2.0, 3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 0.5  # one token back
    assert [bucket.take() for _ in range(2)] == [True, False]
    now[0] = 100.0  # never more than the burst
    assert sum(bucket.take() for _ in range(10)) == 3
