"""The resume token: round trip, and None for every way a token can be wrong."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from svc_gateway import jtoken

KEY = b"k" * 32
NONCE = b"4f1c2a9e0b7d6c5a4f3e"
U64 = st.integers(min_value=0, max_value=2**64 - 1)


@given(session=U64, handle=U64, aad=st.binary(max_size=64))
def test_round_trip(session: int, handle: int, aad: bytes) -> None:
    token = jtoken.encode(KEY, session, handle, aad)
    assert jtoken.decode(KEY, token, aad) == (session, handle)
    # std base64 of 12 + 18 + 16 bytes
    assert len(token) == 64 and base64.b64decode(token, validate=True)


@given(aad=st.binary(max_size=32), other=st.binary(max_size=32))
def test_another_room_nonce_does_not_open_it(aad: bytes, other: bytes) -> None:
    token = jtoken.encode(KEY, 1, 2, aad)
    assert jtoken.decode(KEY, token, other) == ((1, 2) if other == aad else None)


def test_wrong_key() -> None:
    token = jtoken.encode(KEY, 7, 8, NONCE)
    assert jtoken.decode(b"K" * 32, token, NONCE) is None
    assert jtoken.decode(b"short", token, NONCE) is None


def test_encode_refuses_a_bad_key_and_ids_out_of_range() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        jtoken.encode(b"short", 1, 2, NONCE)
    with pytest.raises(ValueError, match="out of range"):
        jtoken.encode(KEY, 2**64, 2, NONCE)
    with pytest.raises(ValueError, match="out of range"):
        jtoken.encode(KEY, 1, -1, NONCE)


def test_randomised_nonce() -> None:
    tokens = {jtoken.encode(KEY, 7, 8, NONCE) for _ in range(20)}
    assert len(tokens) == 20
    assert {jtoken.decode(KEY, t, NONCE) for t in tokens} == {(7, 8)}


@given(cut=st.integers(min_value=0, max_value=45))
def test_truncated(cut: int) -> None:
    raw = base64.b64decode(jtoken.encode(KEY, 7, 8, NONCE))
    assert jtoken.decode(KEY, base64.b64encode(raw[:cut]).decode(), NONCE) is None


@given(index=st.integers(min_value=0, max_value=45), bit=st.integers(min_value=0, max_value=7))
def test_any_flipped_bit(index: int, bit: int) -> None:
    raw = bytearray(base64.b64decode(jtoken.encode(KEY, 7, 8, NONCE)))
    raw[index] ^= 1 << bit
    assert jtoken.decode(KEY, base64.b64encode(bytes(raw)).decode(), NONCE) is None


@pytest.mark.parametrize(
    "token", ["", "!!!!", "not base64 at all", "QUJD", "é" * 64, "A" * 63, "A" * 64 + "\n"]
)
def test_bad_base64_or_length(token: str) -> None:
    assert jtoken.decode(KEY, token, NONCE) is None


def test_not_a_string() -> None:
    assert jtoken.decode(KEY, None, NONCE) is None  # type: ignore[arg-type]
    assert jtoken.decode(KEY, 12, NONCE) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("prefix", [b"JX", b"\x00\x00", b"TJ"])
def test_bad_prefix(prefix: bytes) -> None:
    # Sealed with the right key and nonce: only the plaintext layout is wrong.
    nonce = os.urandom(12)
    sealed = AESGCM(KEY).encrypt(nonce, prefix + (7).to_bytes(8, "big") + (8).to_bytes(8, "big"), NONCE)
    assert jtoken.decode(KEY, base64.b64encode(nonce + sealed).decode(), NONCE) is None
    good = AESGCM(KEY).encrypt(nonce, b"JT" + (7).to_bytes(8, "big") + (8).to_bytes(8, "big"), NONCE)
    assert jtoken.decode(KEY, base64.b64encode(nonce + good).decode(), NONCE) == (7, 8)


@given(junk=st.text(max_size=80))
def test_arbitrary_text_never_raises(junk: str) -> None:
    assert jtoken.decode(KEY, junk, NONCE) is None
