"""Viewer tokens and the HLS key checks (svc_users.viewer), with an in-memory livemeta source."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import jwt
import pytest

from common import records
from common.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from common.hlskey import derive_hls_key
from svc_users.viewer import VIEWER_AUDIENCE, ViewerAccess

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SECRET = "jwt-secret-for-tests-0123456789abcdef"
KEY_SECRET = "key-secret"


class Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def _onair(nonce: str = "nonce-1") -> records.LiveMeta:
    return records.LiveMeta(
        status=records.LiveStatus.ONAIR, janus_id="janus1", mixer_id="mixer1", nonce=nonce, created_at=NOW
    )


def _access(rooms: dict[str, records.LiveMeta], clock: Clock | None = None) -> ViewerAccess:
    async def livemeta(room_id: str) -> records.LiveMeta | None:
        return rooms.get(room_id)

    return ViewerAccess(
        token_secret=SECRET,
        hls_key_secret=KEY_SECRET,
        token_ttl_s=60,
        livemeta=livemeta,
        clock=clock or Clock(),
    )


async def test_token_for_onair_room_then_key() -> None:
    rooms = {"room-1": _onair()}
    access = _access(rooms)
    issued = await access.issue_token("room-1")
    claims = jwt.decode(issued.token, SECRET, algorithms=["HS256"], audience=VIEWER_AUDIENCE)
    assert claims["roomId"] == "room-1"
    assert claims["exp"] - claims["iat"] == issued.expires_in_s == 60
    key = await access.hls_key("room-1", f"Bearer {issued.token}")
    assert key == derive_hls_key(KEY_SECRET, "room-1", "nonce-1")
    # a restarted room (new nonce) is served its new key, no stale cache
    rooms["room-1"] = _onair("nonce-2")
    assert await access.hls_key("room-1", f"Bearer {issued.token}") == derive_hls_key(
        KEY_SECRET, "room-1", "nonce-2"
    )


async def test_no_token_for_a_room_not_on_air() -> None:
    removing = records.LiveMeta(
        status=records.LiveStatus.REMOVING,
        janus_id="",
        mixer_id="",
        nonce="",
        created_at=NOW,
        discard_at=NOW,
    )
    access = _access({"gone-1": removing})
    with pytest.raises(NotFound):
        await access.issue_token("gone-1")
    with pytest.raises(NotFound):
        await access.issue_token("never-1")
    with pytest.raises(InvalidInput):
        await access.issue_token("a.b")


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwdw=="])
async def test_missing_token_is_401(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        await _access({"room-1": _onair()}).hls_key("room-1", header)


async def test_bad_tokens_are_403() -> None:
    clock = Clock()
    access = _access({"room-1": _onair(), "room-2": _onair()}, clock)
    good = (await access.issue_token("room-1")).token
    now = int(clock.t)
    claims = {"roomId": "room-1", "aud": "hls", "iat": now, "exp": now + 60}
    cases = {
        "garbage": "not-a-jwt",
        "wrong secret": jwt.encode(claims, "other-secret-for-tests-0123456789", algorithm="HS256"),
        "wrong audience": jwt.encode({**claims, "aud": "rtc"}, SECRET, algorithm="HS256"),
        "HS512": jwt.encode(claims, SECRET * 4, algorithm="HS512"),
        "no exp": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, SECRET, algorithm="HS256"),
        "other room": (await access.issue_token("room-2")).token,
    }
    for what, token in cases.items():
        with pytest.raises(Forbidden):
            await access.hls_key("room-1", f"Bearer {token}")
            pytest.fail(what)
    assert len(await access.hls_key("room-1", f"Bearer {good}")) == 16


async def test_expired_token_is_403() -> None:
    clock = Clock()
    # pyjwt checks exp against the real clock: issue a 60 s token 61 s in the past
    clock.t = time.time() - 61
    access = _access({"room-1": _onair()}, clock)
    expired = (await access.issue_token("room-1")).token
    with pytest.raises(Forbidden, match="expired"):
        await access.hls_key("room-1", f"Bearer {expired}")


async def test_valid_token_but_room_stopped_is_404() -> None:
    rooms = {"room-1": _onair()}
    access = _access(rooms)
    token = (await access.issue_token("room-1")).token
    del rooms["room-1"]
    with pytest.raises(NotFound):
        await access.hls_key("room-1", f"Bearer {token}")
