"""Typed settings: attrs classes loaded from defaults, then an optional config file, then env.

Rules (as in the reference system's Viper binding):

- Every setting has a key path. A root field ``mixer_id`` has the key ``mixer_id``; a field of a
  nested section (an attrs class such as :class:`EtcdSettings` under ``etcd``) has
  ``etcd.endpoints``. The env variable is the key with ``.`` -> ``_``, upper-cased, no prefix:
  ``ETCD_ENDPOINTS``, ``HTTP_ADDR``, ``MIXER_ID``. Field names carry units (``lease_ttl_s``);
  the key keeps the reference name through ``setting(..., key="lease_ttl")`` -> ``LEASE_TTL``.
- Precedence: the class defaults < the config file < the environment. The file is
  ``config_file`` or, when that is None, the path in ``APP_CONFIG_FILE``; JSON, TOML or YAML by
  suffix, a nested mapping with the same key paths (``{"etcd": {"dial_timeout": "5s"}}``). An
  unknown key in the file is an error. Only known keys are read from the environment, and an
  empty (or blank) variable counts as unset, as with Viper.
- Values: str, int, float, bool (true/false/1/0/yes/no), durations (``10s``, ``1m30s``,
  ``500ms``, ``1h``, a bare number = seconds; stored as float seconds), comma-separated lists,
  ports, ``host:port`` addresses, URLs, log levels. ``LOG_LEVEL`` and ``LOG_LEVEL__*`` variables
  are read by common.logging, but a non-empty invalid one is rejected here too, so a typo stops
  the service at start instead of silently falling back to ``info``.
- A wrong value raises :class:`ConfigError` whose message is one line naming the variable (env
  name, or file key and file) and the bad value.
- Secrets (``setting(..., secret=True)``) are masked in reprs and error messages. A secret with a
  non-empty development default is a known value: left at it, the service refuses to start
  unless ``APP_ENV=development`` says this is a development setup (the default is
  ``production``, so a service started without configuration has no open door). Secrets
  defaulting to "" (passwords of etcd/Redis) are optional.

:func:`describe_settings` lists every key with env name, default and help (README tables).
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, cast
from urllib.parse import urlsplit

import attrs
import yaml

from common.errors import InvalidInput

__all__ = [
    "LOG_LEVELS",
    "AppSettings",
    "ConfigError",
    "EtcdSettings",
    "HttpSettings",
    "NatsSettings",
    "RedisSettings",
    "address",
    "at_least",
    "boolean",
    "describe_settings",
    "duration",
    "integer",
    "key_prefix",
    "load_settings",
    "port",
    "section",
    "setting",
    "url",
]

T = TypeVar("T")
S = TypeVar("S")
Parse = Callable[[object], Any]

_META = "audio_rtc.setting"
_MASK = "***"
CONFIG_FILE_ENV = "APP_CONFIG_FILE"

#: Accepted log level names (case-insensitive) -> stdlib level. ``warn``/``fatal``/``dpanic``/
#: ``panic`` are the old system's (zap) names.
LOG_LEVELS: Mapping[str, int] = {
    "debug": 10,
    "info": 20,
    "warn": 30,
    "warning": 30,
    "error": 40,
    "fatal": 50,
    "dpanic": 50,
    "panic": 50,
    "critical": 50,
}


class ConfigError(InvalidInput):
    """A setting has a wrong value; ``str(exc)`` is one line naming the variable and the value."""

    def __init__(self, detail: str, *, variable: str = "") -> None:
        super().__init__(" ".join(detail.split()))
        self.variable = variable


# -- parsers: (raw value from env or file) -> typed value; raise ValueError(reason) -----------


def _kind(name: str) -> Callable[[Callable[[object], T]], Callable[[object], T]]:
    def mark(fn: Callable[[object], T]) -> Callable[[object], T]:
        fn.kind = name  # type: ignore[attr-defined]
        return fn

    return mark


@_kind("str")
def text(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError("expected a string")
    return raw


@_kind("bool")
def boolean(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        word = raw.strip().lower()
        if word in ("true", "1", "yes"):
            return True
        if word in ("false", "0", "no"):
            return False
    raise ValueError("expected a boolean (true/false, 1/0, yes/no)")


@_kind("int")
def integer(raw: object) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    # int() alone would accept "1_000" and " 1 "; a config value should look like a number
    if isinstance(raw, str) and re.fullmatch(r"\s*[+-]?\d+\s*", raw):
        return int(raw)
    raise ValueError("expected an integer")


_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


@_kind("float")
def number(raw: object) -> float:
    is_number = isinstance(raw, int | float) and not isinstance(raw, bool)
    if not is_number and not (isinstance(raw, str) and _NUMBER.fullmatch(raw)):
        raise ValueError("expected a number")
    value = float(raw)  # type: ignore[arg-type]
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|us|µs|ns|h|m|s)")


@_kind("duration")
def duration(raw: object) -> float:
    """``10s``, ``1m30s``, ``500ms``, ``1h`` (Go syntax) or a bare number of seconds -> seconds."""
    if isinstance(raw, str):
        s = raw.strip()
        if re.fullmatch(r"\d+(\.\d+)?|\.\d+", s):
            return float(s)
        if s and _DURATION_PART.sub("", s) == "":
            return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(s))
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        if raw >= 0 and math.isfinite(raw):
            return float(raw)
        raise ValueError("expected a duration >= 0")
    raise ValueError("expected a duration like 10s, 1m30s, 500ms, 1h or a number of seconds")


@_kind("port")
def port(raw: object) -> int:
    try:
        value = integer(raw)
    except ValueError:
        raise ValueError("expected a port number 1-65535") from None
    if not 1 <= value <= 65535:
        raise ValueError("port out of range 1-65535")
    return value


@_kind("host:port")
def address(raw: object) -> str:
    """``host:port`` (``[::1]:80`` for IPv6); the host must not be empty."""
    if isinstance(raw, str):
        host, sep, port_text = raw.strip().rpartition(":")
        is_bracketed = host.startswith("[") and host.endswith("]") and len(host) > 2
        if sep and host and (":" not in host or is_bracketed) and not re.search(r"\s", host):
            return f"{host}:{port(port_text)}"
    raise ValueError("expected host:port, e.g. 127.0.0.1:2379")


@_kind("log level")
def log_level(raw: object) -> str:
    """A level name (case-insensitive) -> its canonical lower-case name."""
    if isinstance(raw, str) and raw.strip().lower() in LOG_LEVELS:
        return raw.strip().lower()
    raise ValueError("expected a log level: debug, info, warn, error, fatal")


@_kind("key prefix")
def key_prefix(raw: object) -> str:
    """An etcd key prefix: starts and ends with ``/`` (``/rooms/``)."""
    value = text(raw).strip()
    if len(value) < 2 or not value.startswith("/") or not value.endswith("/") or " " in value:
        raise ValueError("expected a key prefix starting and ending with '/', e.g. /rooms/")
    return value


def at_least(parse: Parse, minimum: float) -> Parse:
    """``parse``, then require the value to be >= ``minimum`` (``at_least(duration, 1)``)."""

    @_kind(str(getattr(parse, "kind", "value")))
    def bounded(raw: object) -> Any:
        value = parse(raw)
        if value < minimum:
            unit = "s" if getattr(parse, "kind", "") == "duration" else ""
            raise ValueError(f"expected at least {minimum:g}{unit}")
        return value

    return bounded


def choice(*values: str) -> Parse:
    """One of ``values`` (case-sensitive, whitespace trimmed)."""

    @_kind("|".join(values))
    def parse(raw: object) -> str:
        if isinstance(raw, str) and raw.strip() in values:
            return raw.strip()
        raise ValueError(f"expected one of {', '.join(values)}")

    return parse


def url(*schemes: str) -> Parse:
    """An absolute URL with one of ``schemes`` and a host."""

    @_kind("url")
    def parse(raw: object) -> str:
        if isinstance(raw, str):
            parts = urlsplit(raw.strip())
            if parts.scheme in schemes and parts.hostname:
                return raw.strip()
        raise ValueError(f"expected a {'/'.join(schemes)} URL with a host")

    return parse


def list_of(item: Parse = text, *, min_items: int = 0) -> Parse:
    """A comma-separated string (items trimmed, empty items dropped) or a list; each item parsed."""

    @_kind(f"list of {getattr(item, 'kind', 'str')}")
    def parse(raw: object) -> list[Any]:
        if isinstance(raw, str):
            items: list[object] = [p.strip() for p in raw.split(",") if p.strip()]
        elif isinstance(raw, list | tuple):
            items = list(raw)
        else:
            raise ValueError("expected a comma-separated list")
        out = []
        for i, value in enumerate(items):
            try:
                out.append(item(value))
            except ValueError as exc:
                raise ValueError(f"item {i + 1} ({value!r}): {exc}") from None
        if len(out) < min_items:
            raise ValueError(f"expected at least {min_items} item(s)")
        return out

    return parse


# -- declaring settings ------------------------------------------------------------------------


@attrs.frozen
class _Meta:
    key: str | None
    parse: Parse | None
    secret: bool
    help: str


def _mask_repr(value: object) -> str:
    return repr(_MASK) if value else "''"


def setting(
    default: T,
    *,
    key: str | None = None,
    parse: Parse | None = None,
    secret: bool = False,
    help: str = "",
) -> T:
    """An attrs field that is a setting.

    ``key`` overrides the key segment (default: the field name), e.g. field ``lease_ttl_s`` with
    ``key="lease_ttl"`` -> ``LEASE_TTL``. ``parse`` turns the raw env/file value into the field's
    value (default: by the annotation: str, int, float, bool, list[str], Literal[...]).
    ``secret`` masks the value in reprs and errors and refuses a non-empty default outside development.
    """
    meta = {_META: _Meta(key=key, parse=parse, secret=secret, help=help)}
    repr_: Any = _mask_repr if secret else True
    if isinstance(default, list):
        items = list(default)
        return cast(T, attrs.field(factory=lambda: list(items), metadata=meta, repr=repr_))
    return attrs.field(default=default, metadata=meta, repr=repr_)


def section(factory: Callable[[], S], *, key: str | None = None, help: str = "") -> S:
    """A nested settings section; ``factory`` gives its defaults (e.g. a service's HTTP address)."""
    meta = {_META: _Meta(key=key, parse=None, secret=False, help=help)}
    return attrs.field(factory=factory, metadata=meta)


# -- shared sections ---------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class AppSettings:
    section_key: ClassVar[str] = "app"

    env: Literal["development", "production"] = setting(
        "production", help="production refuses known default secrets; development accepts them"
    )
    shutdown_timeout_s: float = setting(
        10.0, key="shutdown_timeout", parse=duration, help="time allowed for a graceful stop"
    )
    log_config_file: str = setting("", help="JSON logging config {format, output, color}; '' = console")


@attrs.frozen(kw_only=True)
class EtcdSettings:
    section_key: ClassVar[str] = "etcd"

    # setting() copies a list default into a factory, so the default is not shared
    endpoints: list[str] = setting(
        ["127.0.0.1:2379"], parse=list_of(address, min_items=1), help="etcd endpoints, host:port"
    )
    username: str = setting("", help="etcd user ('' = no auth)")
    password: str = setting("", secret=True, help="etcd password")
    dial_timeout_s: float = setting(5.0, key="dial_timeout", parse=duration, help="connect timeout")
    prefix_rooms: str = setting("/rooms/", parse=key_prefix, help="key prefix of rooms")
    prefix_januses: str = setting("/januses/", parse=key_prefix, help="key prefix of Janus modules")
    prefix_mixers: str = setting("/mixers/", parse=key_prefix, help="key prefix of mixer modules")


@attrs.frozen(kw_only=True)
class NatsSettings:
    section_key: ClassVar[str] = "nats"

    servers: list[str] = setting(
        ["nats://127.0.0.1:4222"], parse=list_of(url("nats", "tls"), min_items=1), help="NATS server URLs"
    )
    connect_timeout_s: float = setting(5.0, key="connect_timeout", parse=duration, help="connect timeout")
    request_timeout_s: float = setting(5.0, key="request_timeout", parse=duration, help="request timeout")
    drain_timeout_s: float = setting(5.0, key="drain_timeout", parse=duration, help="drain bound at stop")


@attrs.frozen(kw_only=True)
class RedisSettings:
    section_key: ClassVar[str] = "redis"

    addr: str = setting("127.0.0.1:6379", parse=address, help="Redis host:port")
    username: str = setting("", help="Redis ACL user ('' = default user)")
    password: str = setting("", secret=True, help="Redis password")
    db: int = setting(0, parse=at_least(integer, 0), help="Redis database number")
    tls: bool = setting(False, help="connect with TLS")


@attrs.frozen(kw_only=True)
class HttpSettings:
    section_key: ClassVar[str] = "http"

    addr: str = setting("127.0.0.1:8080", parse=address, help="listen address host:port")


# -- loading -----------------------------------------------------------------------------------


@attrs.frozen
class _Leaf:
    names: tuple[str, ...]  # attribute path
    keys: tuple[str, ...]  # key path
    parse: Parse
    secret: bool
    help: str

    @property
    def key(self) -> str:
        return ".".join(self.keys)

    @property
    def env(self) -> str:
        return "_".join(self.keys).upper()


def _parser_for(tp: object, where: str) -> Parse:
    if tp is str:
        return text
    if tp is bool:
        return boolean
    if tp is int:
        return integer
    if tp is float:
        return number
    origin = typing.get_origin(tp)
    if origin is list and typing.get_args(tp) == (str,):
        return list_of(text)
    if origin is Literal and all(isinstance(a, str) for a in typing.get_args(tp)):
        return choice(*typing.get_args(tp))
    raise TypeError(f"{where}: no parser for type {tp!r}; pass setting(parse=...)")


def _leaves(cls: type, names: tuple[str, ...] = (), keys: tuple[str, ...] = ()) -> Iterator[_Leaf]:
    attrs.resolve_types(cls)
    for field in attrs.fields(cls):
        meta: _Meta | None = field.metadata.get(_META)
        seg = (meta.key if meta and meta.key else field.name).lower()
        tp = field.type
        if isinstance(tp, type) and attrs.has(tp):
            yield from _leaves(tp, (*names, field.name), (*keys, seg))
            continue
        where = f"{cls.__name__}.{field.name}"
        parse = meta.parse if meta and meta.parse else _parser_for(tp, where)
        yield _Leaf(
            names=(*names, field.name),
            keys=(*keys, seg),
            parse=parse,
            secret=bool(meta and meta.secret),
            help=meta.help if meta else "",
        )


def _spec(cls: type) -> list[_Leaf]:
    if not attrs.has(cls):
        raise TypeError(f"{cls!r} is not an attrs class")
    # a shared section loaded on its own keeps its usual prefix (EtcdSettings -> ETCD_*)
    root = getattr(cls, "section_key", None)
    leaves = list(_leaves(cls, (), (root,) if isinstance(root, str) and root else ()))
    seen: dict[str, str] = {}
    for leaf in leaves:
        if leaf.env in seen:
            raise TypeError(f"{cls.__name__}: keys {seen[leaf.env]} and {leaf.key} share env {leaf.env}")
        seen[leaf.env] = leaf.key
    return leaves


def _get(obj: object, names: Sequence[str]) -> Any:
    for name in names:
        obj = getattr(obj, name)
    return obj


def _show(value: object, secret: bool) -> str:
    if secret:
        return f"<secret, {len(str(value))} chars>"
    return repr(value)


def _parse(leaf: _Leaf, raw: object, where: str) -> Any:
    try:
        return leaf.parse(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}={_show(raw, leaf.secret)}: {exc}", variable=where) from None


def _read_file(path: Path) -> Mapping[str, object]:
    suffix = path.suffix.lower()
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}", variable=str(path)) from None
    try:
        if suffix == ".json":
            data = json.loads(raw)
        elif suffix == ".toml":
            data = tomllib.loads(raw)
        elif suffix in (".yaml", ".yml"):
            data = yaml.safe_load(raw)
        else:
            raise ConfigError(
                f"config file {path}: unsupported suffix {suffix!r} (use .json, .toml, .yaml)",
                variable=str(path),
            )
    except (ValueError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"config file {path} is not valid: {first}", variable=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top", variable=str(path))
    return data


def _from_file(leaves: list[_Leaf], path: Path) -> dict[tuple[str, ...], Any]:
    by_keys = {leaf.keys: leaf for leaf in leaves}
    sections = {leaf.keys[:i] for leaf in leaves for i in range(1, len(leaf.keys))}
    out: dict[tuple[str, ...], Any] = {}

    def walk(mapping: Mapping[str, object], prefix: tuple[str, ...]) -> None:
        for k, value in mapping.items():
            keys = (*prefix, str(k).lower())
            dotted = ".".join(keys)
            if keys in sections:
                if not isinstance(value, dict):
                    raise ConfigError(f"{dotted} in {path}: expected a mapping (a section)", variable=dotted)
                walk(value, keys)
            elif keys in by_keys:
                leaf = by_keys[keys]
                out[leaf.names] = _parse(leaf, value, f"{dotted} in {path}")
            else:
                raise ConfigError(f"unknown key {dotted} in {path}", variable=dotted)

    walk(_read_file(path), ())
    return out


def _build(obj: Any, changes: dict[tuple[str, ...], Any]) -> Any:
    direct = {names[0]: v for names, v in changes.items() if len(names) == 1}
    nested: dict[str, dict[tuple[str, ...], Any]] = {}
    for names, value in changes.items():
        if len(names) > 1:
            nested.setdefault(names[0], {})[names[1:]] = value
    for name, sub in nested.items():
        direct[name] = _build(getattr(obj, name), sub)
    return attrs.evolve(obj, **direct) if direct else obj


def _check_log_levels(env: Mapping[str, str]) -> None:
    for name, value in env.items():
        is_level_var = name == "LOG_LEVEL" or name.startswith("LOG_LEVEL__")
        if is_level_var and value.strip() and value.strip().lower() not in LOG_LEVELS:
            raise ConfigError(
                f"{name}={value!r}: expected a log level: debug, info, warn, error, fatal",
                variable=name,
            )


def _is_development(obj: object) -> bool:
    if isinstance(obj, AppSettings):
        return obj.env == "development"
    if attrs.has(type(obj)):
        return any(_is_development(getattr(obj, f.name)) for f in attrs.fields(type(obj)))  # type: ignore[arg-type]
    return False


def load_settings(
    cls: type[T],
    *,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> T:
    """Build ``cls`` from its defaults, then the config file, then ``env`` (default os.environ).

    Raises :class:`ConfigError` (one line, naming the variable and value) on any wrong value.
    """
    env = os.environ if env is None else env
    leaves = _spec(cls)
    if config_file is None:
        config_file = env.get(CONFIG_FILE_ENV, "").strip() or None
    changes: dict[tuple[str, ...], Any] = {}
    if config_file:
        changes.update(_from_file(leaves, Path(config_file)))
    for leaf in leaves:
        raw = env.get(leaf.env)
        if raw is not None and raw.strip():
            changes[leaf.names] = _parse(leaf, raw, leaf.env)
    _check_log_levels(env)
    defaults = cls()
    try:
        loaded: T = _build(defaults, changes)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid settings for {cls.__name__}: {exc}") from None
    if not _is_development(loaded):
        for leaf in leaves:
            default = _get(defaults, leaf.names)
            if leaf.secret and default and _get(loaded, leaf.names) == default:
                raise ConfigError(
                    f"{leaf.env} is left at its known development default: set it "
                    "(or APP_ENV=development for a development setup)",
                    variable=leaf.env,
                )
    return loaded


@attrs.frozen(kw_only=True)
class SettingInfo:
    """One setting, for docs: key path, env name, default (``***`` for secrets), kind, help."""

    key: str
    env: str
    default: str
    kind: str
    secret: bool
    help: str


def _default_text(value: object) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def describe_settings(cls: type) -> list[SettingInfo]:
    """Every setting of ``cls`` in declaration order, with the defaults the class really uses."""
    defaults = cls()
    out = []
    for leaf in _spec(cls):
        value = _get(defaults, leaf.names)
        name = str(getattr(leaf.parse, "__name__", "value")).strip("_").replace("_", " ")
        kind = str(getattr(leaf.parse, "kind", name))
        shown = _default_text(value)
        if kind == "duration":
            shown += "s"
        out.append(
            SettingInfo(
                key=leaf.key,
                env=leaf.env,
                default=_MASK if leaf.secret and value else shown,
                kind=kind,
                secret=leaf.secret,
                help=leaf.help,
            )
        )
    return out
