"""The AES-128 key of a room's HLS stream: one derivation shared by the mixer and svc_users.

The mixer writes the key into the file FFmpeg encrypts segments with; svc_users serves the same
bytes to a viewer holding a valid token. Both derive it from a server secret, the room id and
the livemeta nonce, so nothing has to be stored or shared but the secret, and a room started
again (new livemeta, new nonce) gets a new key. The reference used SHA-256(roomId || nonce),
which anyone knowing the (public) room id and nonce could compute; an HMAC keyed by the server
secret cannot be.

The message is ``roomId ":" nonce``: room ids cannot contain ``:``, so two different pairs can
never give the same message (plain concatenation would: ``ab``+``c`` and ``a``+``bc``).
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["HLS_KEY_BYTES", "derive_hls_key"]

HLS_KEY_BYTES = 16  # AES-128


def derive_hls_key(secret: str, room_id: str, nonce: str) -> bytes:
    """The 16-byte AES-128 key of ``room_id`` while it is on air with ``nonce``."""
    if not secret:
        raise ValueError("the HLS key secret must not be empty")
    message = f"{room_id}:{nonce}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()[:HLS_KEY_BYTES]
