"""The resume token (``jtoken``): a Janus session and handle id, sealed for one room on air.

``token = base64(nonce(12) + AES-256-GCM(key, nonce, b"JT" + session(u64 BE) + handle(u64 BE),
aad))`` with ``key`` = ``JANUS_TOKEN_KEY`` (32 bytes) and ``aad`` = the room's livemeta nonce.
GCM authenticates the ids and the nonce of the room: a token cannot be forged or edited, and
one minted for a room stops opening anything once the room is recreated (new nonce). A fresh
random GCM nonce per token means two tokens of the same ids differ. The token does not expire
by itself: the Janus session it names does (session timeout), which is what resume checks.

``decode`` returns None for every failure (bad base64, wrong length, wrong key or room, edited
bytes, wrong prefix): a client presenting a bad jtoken simply gets a new session.
"""

from __future__ import annotations

import base64
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KEY_BYTES", "decode", "encode"]

KEY_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_PREFIX = b"JT"
_IDS = struct.Struct(">QQ")
_PLAIN_BYTES = len(_PREFIX) + _IDS.size
_TOKEN_BYTES = _NONCE_BYTES + _PLAIN_BYTES + _TAG_BYTES


def _cipher(key: bytes) -> AESGCM:
    if len(key) != KEY_BYTES:
        raise ValueError(f"the Janus token key must be {KEY_BYTES} bytes, not {len(key)}")
    return AESGCM(key)


def encode(key: bytes, session_id: int, handle_id: int, aad: bytes) -> str:
    """The token of ``(session_id, handle_id)`` bound to ``aad``; ``ValueError`` for a bad key
    or ids outside 0..2**64-1 (Janus ids are unsigned 64-bit)."""
    try:
        plain = _PREFIX + _IDS.pack(session_id, handle_id)
    except struct.error as exc:
        raise ValueError(f"Janus ids out of range: {session_id}, {handle_id}") from exc
    nonce = os.urandom(_NONCE_BYTES)
    sealed = _cipher(key).encrypt(nonce, plain, aad)
    return base64.b64encode(nonce + sealed).decode("ascii")


def decode(key: bytes, token: str, aad: bytes) -> tuple[int, int] | None:
    """``(session_id, handle_id)`` of a token made by :func:`encode` with this key and aad, else None."""
    try:
        raw = base64.b64decode(token.encode("ascii"), validate=True)
        if len(raw) != _TOKEN_BYTES:
            return None
        plain = _cipher(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], aad)
    except (InvalidTag, ValueError, TypeError, AttributeError):  # binascii.Error is a ValueError
        return None
    if len(plain) != _PLAIN_BYTES or not plain.startswith(_PREFIX):
        return None
    session_id, handle_id = _IDS.unpack(plain[len(_PREFIX) :])
    return session_id, handle_id
