"""JSON-RPC 2.0 framing of the gateway: parse one text frame, encode replies and notifications.

Classification (docs/svc_gateway.md, JSON-RPC):

- an object with ``method`` and an ``id`` that is a string or an integer is a **request**: it
  gets exactly one reply carrying the same id, in the same JSON type. Any present id counts,
  ``0`` included (the reference treated ``0`` as "no id"; a client numbering from 0 would then
  never see its first reply);
- an object with ``method`` and no ``id`` (or ``"id": null``) is a **notification**: it runs,
  and nothing is sent back, not even an error (the frontend sends ``icecandidate`` and
  ``keepalive`` this way);
- a frame that is not JSON is a parse error (-32700, ``id: null``); an array is a batch, which
  is refused (-32600); anything else (no method, a bad id type, ``result``/``error`` from the
  client) is an invalid request (-32600, the id echoed when it is usable). The connection stays
  open in every case.

``params`` may be an object, an array, or absent (None). The ``jsonrpc`` member is not checked,
as in the reference.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from common.errors import AppError, InvalidInput

__all__ = [
    "BatchNotSupported",
    "InvalidRequest",
    "MethodNotFound",
    "Notification",
    "ParseError",
    "Request",
    "RpcId",
    "encode_error",
    "encode_notification",
    "encode_result",
    "error_payload",
    "parse_message",
]

RpcId = str | int


class ParseError(InvalidInput):
    rpc_code = -32700


class InvalidRequest(InvalidInput):
    rpc_code = -32600


class BatchNotSupported(InvalidRequest):
    pass


class MethodNotFound(InvalidInput):
    rpc_code = -32601


@attrs.frozen(kw_only=True)
class Request:
    id: RpcId
    method: str
    params: Any = None


@attrs.frozen(kw_only=True)
class Notification:
    method: str
    params: Any = None


class _Refused(Exception):
    """A frame that gets an error reply instead of being run."""

    def __init__(self, error: AppError, rpc_id: RpcId | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.rpc_id = rpc_id


def _usable_id(value: object) -> bool:
    # bool is an int subclass, and true/false are no ids
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def parse_message(text: str) -> Request | Notification | tuple[AppError, RpcId | None]:
    """A request or notification, or (the error to reply, the id to reply it with)."""
    try:
        return _parse(text)
    except _Refused as refused:
        return refused.error, refused.rpc_id


def _parse(text: str) -> Request | Notification:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _Refused(ParseError("parse error"), None) from exc
    if isinstance(data, list):
        raise _Refused(BatchNotSupported("batch requests are not supported"), None)
    if not isinstance(data, dict):
        raise _Refused(InvalidRequest("invalid request"), None)
    raw_id = data.get("id")
    rpc_id = raw_id if _usable_id(raw_id) else None
    if raw_id is not None and rpc_id is None:
        raise _Refused(InvalidRequest("invalid request: id must be a string or an integer"), None)
    method = data.get("method")
    if "result" in data or "error" in data:
        # The server never calls the client, so a response from it answers nothing.
        raise _Refused(InvalidRequest("invalid request: unexpected response"), rpc_id)
    if not isinstance(method, str) or not method:
        raise _Refused(InvalidRequest("invalid request: method required"), rpc_id)
    params = data.get("params")
    if params is not None and not isinstance(params, dict | list):
        raise _Refused(InvalidRequest("invalid request: params must be an object or an array"), rpc_id)
    if rpc_id is None:
        return Notification(method=method, params=params)
    return Request(id=rpc_id, method=method, params=params)


def error_payload(exc: BaseException) -> dict[str, Any]:
    """The JSON-RPC ``error`` member of an exception: its class's code; a bug stays anonymous."""
    if isinstance(exc, AppError):
        data = {"type": type(exc).__name__, **exc.fields}
        return {"code": exc.rpc_code, "message": exc.detail, "data": data}
    return {"code": -32603, "message": "unknown error"}


def _dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), default=str)


def encode_result(rpc_id: RpcId, result: Any) -> str:
    return _dumps({"jsonrpc": "2.0", "id": rpc_id, "result": result})


def encode_error(rpc_id: RpcId | None, exc: BaseException) -> str:
    return _dumps({"jsonrpc": "2.0", "id": rpc_id, "error": error_payload(exc)})


def encode_notification(method: str, params: Any) -> str:
    return _dumps({"jsonrpc": "2.0", "method": method, "params": params})
