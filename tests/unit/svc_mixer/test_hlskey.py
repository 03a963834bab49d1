"""The AES-128 key derivation shared by the mixer and svc_users (common.hlskey)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from common.hlskey import HLS_KEY_BYTES, derive_hls_key


def test_key_is_hmac_sha256_of_room_and_nonce_truncated() -> None:
    key = derive_hls_key("secret", "room-1", "abcdef")
    assert len(key) == HLS_KEY_BYTES == 16
    assert key == hmac.new(b"secret", b"room-1:abcdef", hashlib.sha256).digest()[:16]


def test_key_depends_on_secret_room_and_nonce() -> None:
    base = derive_hls_key("s", "room-1", "n1")
    assert derive_hls_key("s", "room-1", "n1") == base
    assert derive_hls_key("t", "room-1", "n1") != base
    assert derive_hls_key("s", "room-2", "n1") != base
    assert derive_hls_key("s", "room-1", "n2") != base  # a restarted room gets a new key
    # no concatenation ambiguity
    assert derive_hls_key("s", "abc", "d") != derive_hls_key("s", "ab", "cd")


def test_empty_secret_refused() -> None:
    with pytest.raises(ValueError):
        derive_hls_key("", "room-1", "n1")
