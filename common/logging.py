"""Logging on the stdlib ``logging`` module: per-module levels from the environment, structured lines.

Module loggers are plain stdlib loggers: ``logging.getLogger(__name__)`` in ``svc_rooms/api.py``
is ``"svc_rooms.api"``, and ``.getChild("auth")`` of it is ``"svc_rooms.api.auth"``.

Levels: for a logger ``A.B.C`` the first valid value of ``LOG_LEVEL__A__B__C``,
``LOG_LEVEL__A__B``, ``LOG_LEVEL__A``, ``LOG_LEVEL`` wins, else ``info``. Each segment is turned
into SCREAMING_SNAKE_CASE by :func:`screaming_snake`: a word starts at an upper-case letter that
follows a lower-case letter or digit, and at the last capital of an acronym followed by a
lower-case letter; digits stay with the word before them; other characters become ``_``
(``ResourceMgr`` -> ``RESOURCE_MGR``, ``HLSServer`` -> ``HLS_SERVER``, ``JanusWorker2`` ->
``JANUS_WORKER2``, ``HTTPServerV2`` -> ``HTTP_SERVER_V2``, ``svc_rooms`` -> ``SVC_ROOMS``).
Values are case-insensitive (debug, info, warn, warning, error, fatal, critical), whitespace is
trimmed; an empty or invalid value falls through to the next name (services reject invalid ones
at start in common.config). :func:`setup_logging` sets the level of every logger that exists and,
through the logger class, of every logger created later.

Output: ``APP_LOG_CONFIG_FILE`` names a JSON file ``{"format": "json"|"console", "output":
"stderr"|"stdout"|"<path>", "color": true|false}`` (default: console on stderr, colour when it is
a terminal). JSON lines carry ``ts level logger msg service module`` plus the structured fields;
console lines read ``ts LEVEL logger msg key=value ...``. Structured fields come from
``extra={"fields": {...}}`` (what common.errors.log_error passes). Exceptions are rendered with
their traceback.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

import attrs

from common.config import LOG_LEVELS, ConfigError, boolean, load_settings, setting

__all__ = [
    "level_env_names",
    "resolve_level",
    "screaming_snake",
    "setup_logging",
    "teardown_logging",
]

DEFAULT_LEVEL = logging.INFO
_LEVEL_VAR = "LOG_LEVEL"


# -- names and levels --------------------------------------------------------------------------


def screaming_snake(name: str) -> str:
    """``HTTPServerV2`` -> ``HTTP_SERVER_V2`` (see the module docstring for the rule)."""
    s = re.sub(r"[^A-Za-z0-9]+", "_", name)
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", s)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s)
    return re.sub(r"_+", "_", s).strip("_").upper()


def level_env_names(logger_name: str) -> list[str]:
    """The env names looked up for ``logger_name``, most specific first, ending in LOG_LEVEL."""
    parts = [screaming_snake(p) for p in logger_name.split(".")] if logger_name not in ("", "root") else []
    names = [_LEVEL_VAR + "".join(f"__{p}" for p in parts[:i]) for i in range(len(parts), 0, -1)]
    return [*names, _LEVEL_VAR]


def _parse_level(value: str | None) -> int | None:
    if value is None:
        return None
    return LOG_LEVELS.get(value.strip().lower())


def resolve_level(logger_name: str, env: Mapping[str, str]) -> int:
    """The stdlib level for ``logger_name``: first valid env value, else INFO."""
    for name in level_env_names(logger_name):
        level = _parse_level(env.get(name))
        if level is not None:
            return level
    return DEFAULT_LEVEL


# -- lines -------------------------------------------------------------------------------------

_CORE_KEYS = frozenset({"ts", "level", "logger", "msg", "exc"})


def _fields(record: logging.LogRecord, service: str) -> dict[str, object]:
    out: dict[str, object] = {"service": service, "module": record.name}
    extra = getattr(record, "fields", None)
    if isinstance(extra, Mapping):
        out.update(extra)
    # a field must not hide the line's own keys
    return {(f"field_{k}" if k in _CORE_KEYS else str(k)): v for k, v in out.items()}


def _ts(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _level_name(record: logging.LogRecord) -> str:
    return record.levelname.lower()


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": _ts(record),
            "level": _level_name(record),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update(_fields(record, self.service))
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


_COLORS = {"debug": "36", "info": "32", "warning": "33", "error": "31", "critical": "1;31"}


def _kv(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == "" or re.search(r"[\s=\"]", text):
        return json.dumps(text, ensure_ascii=False)
    return text


class ConsoleFormatter(logging.Formatter):
    def __init__(self, service: str, *, color: bool) -> None:
        super().__init__()
        self.service = service
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        level = _level_name(record)
        shown = f"{level.upper():<7}"
        if self.color:
            shown = f"\x1b[{_COLORS.get(level, '0')}m{shown}\x1b[0m"
        pairs = " ".join(f"{k}={_kv(v)}" for k, v in _fields(record, self.service).items())
        line = f"{_ts(record)} {shown} {record.name} {record.getMessage()} {pairs}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


# -- setup -------------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class LogConfig:
    """The APP_LOG_CONFIG_FILE document."""

    format: Literal["json", "console"] = setting("console", help="json lines or human console")
    output: str = setting("stderr", help="stderr, stdout or a file path (appended)")
    color: bool | None = setting(None, parse=boolean, help="colour levels; default: when a terminal")


@attrs.define
class _State:
    env: Mapping[str, str]
    handler: logging.Handler
    previous_class: type[logging.Logger]
    previous_root_level: int
    touched: dict[str, int]  # logger name -> its level before setup


@attrs.define
class _Current:
    # a holder instead of a module global, so setup and the logger class share one slot
    state: _State | None = None


_current = _Current()


class _LevelMixin:
    """Gives each logger created while logging is set up its level from the environment."""

    def __init__(self, name: str, level: int = logging.NOTSET) -> None:
        super().__init__(name, level)  # type: ignore[call-arg]
        state = _current.state
        if state is not None:
            state.touched.setdefault(name, level)
            self.setLevel(resolve_level(name, state.env))  # type: ignore[attr-defined]


def _open_output(output: str) -> logging.Handler:
    if output == "stderr":
        return logging.StreamHandler(sys.stderr)
    if output == "stdout":
        return logging.StreamHandler(sys.stdout)
    try:
        return logging.FileHandler(Path(output), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"log output {output!r}: {exc.strerror}", variable="output") from None


def setup_logging(
    service: str,
    *,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> None:
    """Install the one handler on the root logger and the env-driven levels of every logger.

    ``config_file`` defaults to ``APP_LOG_CONFIG_FILE`` from ``env`` (default os.environ); ""
    means the console defaults. Calling it again replaces the previous setup.
    """
    env = dict(os.environ if env is None else env)
    if config_file is None:
        config_file = env.get("APP_LOG_CONFIG_FILE", "").strip()
    config = load_settings(LogConfig, env={}, config_file=config_file or None)
    handler = _open_output(config.output)
    teardown_logging()
    if config.format == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        stream: IO[str] | None = getattr(handler, "stream", None)
        is_tty = config.color if config.color is not None else bool(stream and stream.isatty())
        handler.setFormatter(ConsoleFormatter(service, color=is_tty))
    root = logging.getLogger()
    state = _current.state = _State(
        env=env,
        handler=handler,
        previous_class=logging.getLoggerClass(),
        previous_root_level=root.level,
        touched={},
    )
    # loggers created from now on resolve their level on creation (teardown_logging above put
    # back the class from before any setup, so this never wraps twice)...
    cls = state.previous_class
    logging.setLoggerClass(type(f"Levelled{cls.__name__}", (_LevelMixin, cls), {}))
    # ...and the ones that exist already get it now
    for name, existing in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(existing, logging.Logger):
            state.touched.setdefault(name, existing.level)
            existing.setLevel(resolve_level(name, env))
    root.setLevel(resolve_level("", env))
    root.addHandler(handler)


def teardown_logging() -> None:
    """Undo :func:`setup_logging`: remove and close its handler, reset the levels it set."""
    state, _current.state = _current.state, None
    if state is None:
        return
    root = logging.getLogger()
    root.removeHandler(state.handler)
    state.handler.close()
    logging.setLoggerClass(state.previous_class)
    root.setLevel(state.previous_root_level)
    for name, level in state.touched.items():
        existing = logging.Logger.manager.loggerDict.get(name)
        if isinstance(existing, logging.Logger):
            existing.setLevel(level)
