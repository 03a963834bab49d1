"""Request bodies: strict decoding and the reference system's validation table; no I/O."""

from __future__ import annotations

import pytest

from common.errors import InvalidInput
from common.http import decode_body
from common.records import MarkLabel
from svc_rooms.bodies import CreateRoomBody, MarkBody


def test_create_defaults_and_values() -> None:
    assert decode_body(CreateRoomBody, b"{}") == CreateRoomBody()
    assert decode_body(CreateRoomBody, b'{"roomId": null, "pin": null}') == CreateRoomBody()
    body = decode_body(CreateRoomBody, b'{"roomId": "a_b-C9", "pin": "aB3dE6", "maxAnchors": 5}')
    assert (body.room_id, body.pin, body.max_anchors) == ("a_b-C9", "aB3dE6", 5)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"roomId": "ab"}', "roomId"),
        (b'{"roomId": "' + b"x" * 33 + b'"}', "roomId"),
        (b'{"roomId": "a*b"}', "roomId"),
        (b'{"roomId": "abc\\n"}', "roomId"),
        (b'{"roomId": ["abc"]}', "roomId"),
        (b'{"pin": "abcde"}', "pin"),
        (b'{"pin": "abcdefg"}', "pin"),
        (b'{"pin": "abc-ef"}', "pin"),
        (b'{"pin": 123456}', "pin"),
        (b'{"maxAnchors": 0}', "maxAnchors"),
        (b'{"maxAnchors": 6}', "maxAnchors"),
        (b'{"maxAnchors": -1}', "maxAnchors"),
        (b'{"maxAnchors": true}', "maxAnchors"),
        (b'{"unknown": 1}', "unknown"),
    ],
)
def test_create_rejects(raw: bytes, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        decode_body(CreateRoomBody, raw)
    assert field in str(info.value)


def test_mark_labels_and_ttl() -> None:
    for label in MarkLabel:
        assert decode_body(MarkBody, f'{{"label": "{label.value}"}}'.encode()) == MarkBody(label=label)
    assert decode_body(MarkBody, b'{"label": "ready", "ttl": 86400}').ttl == 86400
    assert decode_body(MarkBody, b'{"label": "ready", "ttl": 0}').ttl == 0


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b"{}", "label"),
        (b'{"label": "drain"}', "label"),
        (b'{"label": "READY"}', "label"),
        (b'{"label": "ready", "ttl": 86401}', "ttl"),
        (b'{"label": "ready", "ttl": -1}', "ttl"),
        (b'{"label": "ready", "ttl": 1.5}', "ttl"),
        (b'{"label": "ready", "ttl": "10"}', "ttl"),
    ],
)
def test_mark_rejects(raw: bytes, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        decode_body(MarkBody, raw)
    assert field in str(info.value)
