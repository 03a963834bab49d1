"""The one error hierarchy of audio-rtc, mapped at three edges: HTTP, JSON-RPC and logs.

    AppError
    ├── InvalidInput            400  -32602  INFO     bad id, body, config value, undecodable record
    ├── Unauthorized            401  -32600  INFO
    ├── Forbidden               403  -32600  INFO     wrong pin
    ├── NotFound                404  -32600  INFO     no such room, room not on air
    ├── Conflict                409  -32600  INFO     txn compare failed, room exists, already joined
    ├── TooManyRequests         429  -32029  INFO     a client over its rate limit
    └── Unavailable             503  -32603  WARNING  etcd / NATS / Redis / Janus down or full
        └── DependencyTimeout   503  -32603  WARNING  (also a builtin TimeoutError)

The JSON-RPC codes are the reference system's (its clients match them): -32600 for a request
the state refuses, -32602 for bad params, -32603 when a dependency failed. The JSON-RPC error's
``data`` carries ``{"type": <class name>, ...fields}`` so a client can still tell them apart.

Anything that is not an ``AppError`` is a bug: HTTP 500 with a generic body, JSON-RPC -32603
"unknown error", logged at ERROR with a traceback. Adapters translate foreign errors where they
enter (``raise NotFound(...) from exc``); the edges only map classes, found by MRO.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

__all__ = [
    "AppError",
    "Conflict",
    "DependencyTimeout",
    "Forbidden",
    "InvalidInput",
    "NotFound",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "log_error",
]


class AppError(Exception):
    """Base of every error the system reports on purpose.

    ``detail`` is the human sentence shown to callers; ``fields`` carries structured context
    (key, field, room id ...) that goes into the HTTP ``details``, the JSON-RPC ``data`` and the
    log line.
    """

    status_code: ClassVar[int] = 500
    rpc_code: ClassVar[int] = -32603
    log_level: ClassVar[int] = logging.ERROR

    def __init__(self, detail: str, **fields: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fields: dict[str, Any] = fields

    def __str__(self) -> str:
        if not self.fields:
            return self.detail
        extra = ", ".join(f"{k}={v!r}" for k, v in self.fields.items())
        return f"{self.detail} ({extra})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail!r}, **{self.fields!r})"


class InvalidInput(AppError):
    status_code = 400
    rpc_code = -32602
    log_level = logging.INFO


class Unauthorized(AppError):
    status_code = 401
    rpc_code = -32600
    log_level = logging.INFO


class Forbidden(AppError):
    status_code = 403
    rpc_code = -32600
    log_level = logging.INFO


class NotFound(AppError):
    status_code = 404
    rpc_code = -32600
    log_level = logging.INFO


class Conflict(AppError):
    status_code = 409
    rpc_code = -32600
    log_level = logging.INFO


class TooManyRequests(AppError):
    status_code = 429
    rpc_code = -32029
    log_level = logging.INFO


class Unavailable(AppError):
    status_code = 503
    rpc_code = -32603
    log_level = logging.WARNING


class DependencyTimeout(Unavailable, TimeoutError):
    """A dependency did not answer in time; ``except TimeoutError`` catches it too."""


def log_error(logger: logging.Logger, exc: BaseException, msg: str = "", **fields: Any) -> None:
    """Log ``exc`` once, at the level its class says; bugs (non-AppError) get a traceback.

    ``fields`` (key, attempt, subject ...) are added to the record as ``extra`` so structured
    formatters print them.
    """
    extra = dict(fields)
    if isinstance(exc, AppError):
        level, exc_info = exc.log_level, None
        extra.update({k: v for k, v in exc.fields.items() if k not in extra})
    else:
        level, exc_info = logging.ERROR, exc
    prefix = f"{msg}: " if msg else ""
    logger.log(
        level,
        "%s%s: %s",
        prefix,
        type(exc).__name__,
        exc,
        exc_info=exc_info,
        extra={"fields": extra} if extra else None,
    )
