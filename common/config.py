"""Typed settings: attrs classes loaded from defaults, then an optional config file, then env.

Rules (as in the reference system's Viper binding):

- Every setting has a key path: ``mixer_id``, or ``etcd.endpoints`` for a field of a nested
  section (an attrs class such as :class:`EtcdSettings`). Its env variable is the key with
  ``.`` -> ``_``, upper-cased, no prefix: ``MIXER_ID``, ``ETCD_ENDPOINTS``. Field names carry units
  (``lease_ttl_s``); ``setting(..., key="lease_ttl")`` keeps the reference name: ``LEASE_TTL``.
- Precedence: the class defaults < the config file < the environment. The file is
  ``config_file`` or else the path in ``APP_CONFIG_FILE``: JSON, TOML or YAML by suffix, a nested
  mapping with the same keys (``{"etcd": {"dial_timeout": "5s"}}``); an unknown key in it is an
  error. Only known keys are read from the environment; an empty (or blank) one counts as unset.
- Values: by annotation str, int, float, bool (true/false/1/0/yes/no), ``Literal`` strings and
  comma-separated lists; else the field's ``parse=``: durations (``10s``, ``1m30s``, ``500ms``,
  ``1h``, a bare number = seconds; stored as float seconds), ports, ``host:port``, URLs, ...
  ``LOG_LEVEL`` and ``LOG_LEVEL__*`` (read by common.logging) are checked too, so a typo stops
  the service at start instead of silently falling back to ``info``.
- A wrong value raises :class:`ConfigError`: one line naming the variable (env name, or file key
  and file) and the bad value.
- Secrets (``setting(..., secret=True)``) are masked in reprs and errors. A non-empty default
  secret is a known value: left at it, the service refuses to start unless ``APP_ENV=development``
  (the default is ``production``: a service started without configuration has no open door).
  Secrets defaulting to "" (the etcd/Redis passwords) are optional.

How: the defaults (unstructured by cattrs), the file's values and the environment's make one
nested mapping keyed by key segments, the values from file and env wrapped with where they came
from. One cattrs converter structures it: a setting's hook (its ``parse=`` or the hook registered
for its type) parses the wrapped values and raises the ConfigError; defaults are typed already.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import os
import re
import tomllib
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, cast
from urllib.parse import urlsplit

import attrs
import cattrs
import yaml
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

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
F = TypeVar("F", bound=Callable[..., Any])
Parse = Callable[..., Any]  # (raw value[, type]) -> value: a parser is also a cattrs hook

_META = "audio_rtc.setting"
_MASK = "***"
CONFIG_FILE_ENV = "APP_CONFIG_FILE"

#: Accepted log level names (case-insensitive) -> stdlib level. ``warn``/``fatal``/``dpanic``/
#: ``panic`` are the old system's (zap) names.
LOG_LEVELS: Mapping[str, int] = {
    **{"debug": 10, "info": 20, "warn": 30, "warning": 30, "error": 40},
    **dict.fromkeys(("fatal", "dpanic", "panic", "critical"), 50),
}


class ConfigError(InvalidInput):
    """A setting has a wrong value; ``str(exc)`` is one line naming the variable and the value."""

    def __init__(self, detail: str, *, variable: str = "") -> None:
        super().__init__(" ".join(detail.split()))
        self.variable = variable


# -- parsers, also cattrs structure hooks: (raw value from env or file[, type]) -> typed value ---


def _kind(name: str) -> Callable[[F], F]:
    """Tag a parser with the kind describe_settings shows (``duration`` defaults get an ``s``)."""

    def mark(fn: F) -> F:
        fn.kind = name  # type: ignore[attr-defined]
        return fn

    return mark


def _kind_of(parse: Callable[..., Any]) -> str:
    return str(getattr(parse, "kind", None) or parse.__name__.strip("_").replace("_", " "))


@_kind("str")
def _text(raw: object, _: object = None) -> str:
    if not isinstance(raw, str):
        raise ValueError("expected a string")
    return raw


@_kind("bool")
def boolean(raw: object, _: object = None) -> bool:
    if isinstance(raw, bool):
        return raw
    word = raw.strip().lower() if isinstance(raw, str) else None
    if word in ("true", "1", "yes", "false", "0", "no"):
        return word in ("true", "1", "yes")
    raise ValueError("expected a boolean (true/false, 1/0, yes/no)")


def _is_number(raw: object, pattern: str) -> bool:
    """A JSON number, or a string that looks like one (``int()`` alone would take ``1_000``)."""
    if isinstance(raw, str):
        return re.fullmatch(rf"\s*({pattern})\s*", raw) is not None
    return isinstance(raw, int | float) and not isinstance(raw, bool)


@_kind("int")
def integer(raw: object, _: object = None) -> int:
    if isinstance(raw, float) or not _is_number(raw, r"[+-]?\d+"):
        raise ValueError("expected an integer")
    return int(cast(str | int, raw))


@_kind("float")
def _number(raw: object, _: object = None) -> float:
    if not _is_number(raw, r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"):
        raise ValueError("expected a number")
    if not math.isfinite(value := float(cast(str | float, raw))):
        raise ValueError("expected a finite number")
    return value


_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)(ms|us|µs|ns|h|m|s)")


@_kind("duration")
def duration(raw: object, _: object = None) -> float:
    """``10s``, ``1m30s``, ``500ms``, ``1h`` (Go syntax) or a number of seconds >= 0 -> seconds."""
    if isinstance(raw, str) and (text := raw.strip()) and _DURATION_PART.sub("", text) == "":
        return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
    if _is_number(raw, r"\d+(\.\d+)?|\.\d+") and 0 <= (value := float(cast(str | float, raw))) < math.inf:
        return value
    raise ValueError("expected a duration like 10s, 1m30s, 500ms, 1h or a number of seconds")


@_kind("port")
def port(raw: object, _: object = None) -> int:
    if not 1 <= (value := integer(raw)) <= 65535:
        raise ValueError("port out of range 1-65535")
    return value


@_kind("host:port")
def address(raw: object, _: object = None) -> str:
    """``host:port`` (``[::1]:80`` for IPv6); the host must not be empty."""
    if isinstance(raw, str):
        host, sep, port_text = raw.strip().rpartition(":")
        is_bracketed = host.startswith("[") and host.endswith("]") and len(host) > 2
        if sep and host and (":" not in host or is_bracketed) and not re.search(r"\s", host):
            return f"{host}:{port(port_text)}"
    raise ValueError("expected host:port, e.g. 127.0.0.1:2379")


def at_least(parse: Parse, minimum: float) -> Parse:
    """``parse``, then require the value to be >= ``minimum`` (``at_least(duration, 1)``)."""
    kind = _kind_of(parse)

    @_kind(kind)
    def bounded(raw: object, _: object = None) -> Any:
        if (value := parse(raw)) < minimum:
            raise ValueError(f"expected at least {minimum:g}{'s' if kind == 'duration' else ''}")
        return value

    return bounded


def _stripped(kind: str, is_valid: Callable[[str], object], expected: str) -> Parse:
    """A string, whitespace trimmed, that ``is_valid``; else ``ValueError(expected)``."""

    @_kind(kind)
    def parse(raw: object, _: object = None) -> str:
        if isinstance(raw, str) and is_valid(raw.strip()):
            return raw.strip()
        raise ValueError(expected)

    return parse


#: An etcd key prefix: starts and ends with ``/`` (``/rooms/``).
key_prefix = _stripped(
    "key prefix",
    re.compile(r"/[^ ]*/").fullmatch,
    "expected a key prefix starting and ending with '/', e.g. /rooms/",
)


def _choice(*values: str) -> Parse:
    """One of ``values`` (case-sensitive): a ``Literal`` of strings."""
    return _stripped("|".join(values), values.__contains__, f"expected one of {', '.join(values)}")


def url(*schemes: str) -> Parse:
    """An absolute URL with one of ``schemes`` and a host."""
    expected = f"expected a {'/'.join(schemes)} URL with a host"
    return _stripped("url", lambda s: urlsplit(s).scheme in schemes and urlsplit(s).hostname, expected)


def _list_of(item: Callable[..., Any], *, min_items: int = 0) -> Parse:
    """A comma-separated string (items trimmed, empty items dropped) or a list; each item parsed."""

    @_kind(f"list of {_kind_of(item)}")
    def parse(raw: object, _: object = None) -> list[Any]:
        if isinstance(raw, str):
            raw = [p.strip() for p in raw.split(",") if p.strip()]
        if not isinstance(raw, list | tuple):
            raise ValueError("expected a comma-separated list")
        out = []
        for i, value in enumerate(raw):
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
    key: str | None = None
    parse: Parse | None = None
    secret: bool = False
    help: str = ""


def setting(
    default: T, *, key: str | None = None, parse: Parse | None = None, secret: bool = False, help: str = ""
) -> T:
    """An attrs field that is a setting.

    ``key`` overrides the key segment (default: the field name), e.g. field ``lease_ttl_s`` with
    ``key="lease_ttl"`` -> ``LEASE_TTL``. ``parse`` turns the raw env/file value into the field's
    value (default: by the annotation: str, int, float, bool, list[...], Literal[...]).
    ``secret`` masks the value in reprs and errors and refuses a non-empty default outside development.
    """
    meta = {_META: _Meta(key=key, parse=parse, secret=secret, help=help)}
    repr_: Any = (lambda value: repr(_MASK) if value else "''") if secret else True
    if isinstance(default, list):
        items = list(default)
        return cast(T, attrs.field(factory=lambda: list(items), metadata=meta, repr=repr_))
    return attrs.field(default=default, metadata=meta, repr=repr_)


def section(factory: Callable[[], S], *, key: str | None = None, help: str = "") -> S:
    """A nested settings section; ``factory`` gives its defaults (e.g. a service's HTTP address)."""
    return attrs.field(factory=factory, metadata={_META: _Meta(key=key, help=help)})


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
        ["127.0.0.1:2379"], parse=_list_of(address, min_items=1), help="etcd endpoints, host:port"
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
        ["nats://127.0.0.1:4222"], parse=_list_of(url("nats", "tls"), min_items=1), help="NATS server URLs"
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
    max_connections: int = setting(
        32, parse=at_least(integer, 1), help="connections per process; more callers wait for one"
    )


@attrs.frozen(kw_only=True)
class HttpSettings:
    section_key: ClassVar[str] = "http"

    addr: str = setting("127.0.0.1:8080", parse=address, help="listen address host:port")


# -- the converter: the nested mapping of key segments -> the attrs classes -------------------


@attrs.frozen
class _Raw:
    """A value as the file or the environment gave it, and where: ``A_B_C`` or ``a.b_c in FILE``."""

    value: object
    where: str
    under: _Raw | None = None  # the file's value the environment's replaced: still checked


def _meta(field: attrs.Attribute[Any]) -> _Meta:
    return field.metadata.get(_META) or _Meta()


def _segment(field: attrs.Attribute[Any]) -> str:
    return (_meta(field).key or field.name).lower()


def _parser(cls: type, field: attrs.Attribute[Any]) -> Parse:
    """The field's ``parse=``, else the converter's hook for its type if it is one of ours (cattrs
    keeps its own for a few classes such as ``Path``, ``bytes`` and tuples)."""
    parse = _meta(field).parse or _converter.get_structure_hook(field.type)
    if not hasattr(parse, "kind") and not _meta(field).parse:
        raise TypeError(
            f"{cls.__name__}.{field.name}: no parser for type {field.type!r}; pass setting(parse=...)"
        )
    return parse


def _leaf_hook(parse: Parse, secret: bool) -> Callable[[object, object], Any]:
    """A setting's hook: a :class:`_Raw` value is parsed; a default is typed already and kept."""

    def hook(value: object, _: object = None) -> Any:
        if not isinstance(value, _Raw):
            return value
        if value.under:
            hook(value.under)
        try:
            return parse(value.value)
        except (ValueError, TypeError) as exc:
            shown = f"<secret, {len(str(value.value))} chars>" if secret else repr(value.value)
            raise ConfigError(f"{value.where}={shown}: {exc}", variable=value.where) from None

    return hook


def _make_converter() -> cattrs.Converter:
    # Not detailed: the first hook or class rule that fails raises its ConfigError as it is.
    conv = cattrs.Converter(detailed_validation=False)

    def structure_section(cl: type) -> Any:
        hooks: dict[str, Any] = {
            f.name: override(
                rename=_segment(f),
                struct_hook=None if attrs.has(f.type) else _leaf_hook(_parser(cl, f), _meta(f).secret),
            )
            for f in attrs.fields(attrs.resolve_types(cl))
        }
        return make_dict_structure_fn(cl, conv, **hooks)

    def unstructure_section(cl: type) -> Any:
        renames: dict[str, Any] = {f.name: override(rename=_segment(f)) for f in attrs.fields(cl)}
        return make_dict_unstructure_fn(cl, conv, **renames)

    for tp, parse in ((str, _text), (bool, boolean), (int, integer), (float, _number)):
        conv.register_structure_hook(tp, parse)

    def is_str_literal(tp: Any) -> bool:
        return typing.get_origin(tp) is Literal and all(isinstance(a, str) for a in typing.get_args(tp))

    def is_list(tp: Any) -> bool:
        return typing.get_origin(tp) is list

    conv.register_structure_hook_factory(is_str_literal, lambda t: _choice(*typing.get_args(t)))
    conv.register_structure_hook_factory(
        is_list, lambda t: _list_of(conv.get_structure_hook(typing.get_args(t)[0]))
    )
    conv.register_structure_hook_factory(attrs.has, structure_section)
    conv.register_unstructure_hook_factory(attrs.has, unstructure_section)
    return conv


_converter = _make_converter()


# -- loading -----------------------------------------------------------------------------------


@attrs.frozen
class SettingInfo:
    """One setting: key path, env name, default as the docs show it (``***`` for a secret), kind,
    help, and its attribute path in the class (``etcd.dial_timeout_s``)."""

    key: str
    env: str
    default: str
    kind: str
    secret: bool
    help: str
    attr: str


def _default_text(value: object, kind: str) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    text = str(int(value) if isinstance(value, float) and value.is_integer() else value)
    return text + ("s" if kind == "duration" else "")


def _settings(
    cls: type, defaults: object, keys: tuple[str, ...] = (), attr: str = ""
) -> Iterator[SettingInfo]:
    for field in attrs.fields(attrs.resolve_types(cls)):
        path, value = (*keys, _segment(field)), getattr(defaults, field.name)
        if attrs.has(field.type):
            yield from _settings(field.type, value, path, f"{attr}{field.name}.")
            continue
        meta, kind = _meta(field), _kind_of(_parser(cls, field))
        shown = _MASK if meta.secret and value else _default_text(value, kind)
        yield SettingInfo(
            ".".join(path), "_".join(path).upper(), shown, kind, meta.secret, meta.help, attr + field.name
        )


@functools.cache
def _spec(cls: type) -> tuple[type, tuple[SettingInfo, ...]]:
    """The class to structure and its settings. A shared section loaded alone (EtcdSettings) is
    held under its key, so it keeps its prefix (ETCD_*)."""
    key = getattr(cls, "section_key", "")
    root = attrs.make_class(cls.__name__, {key: attrs.field(type=cls, factory=cls)}) if key else cls
    infos = tuple(_settings(root, root()))
    envs = [info.env for info in infos]
    if shared := sorted({env for env in envs if envs.count(env) > 1}):
        raise TypeError(f"{root.__name__}: several keys have the env names {shared}")
    return root, infos


_LOADERS: Mapping[str, Callable[[str], Any]] = {
    ".json": json.loads,
    ".toml": tomllib.loads,
    ".yaml": yaml.safe_load,
    ".yml": yaml.safe_load,
}


def _read_file(path: Path) -> Mapping[Any, Any]:
    def fail(reason: str) -> ConfigError:
        return ConfigError(f"config file {path}{reason}", variable=str(path))

    if (loads := _LOADERS.get(path.suffix.lower())) is None:
        raise fail(f": unsupported suffix {path.suffix!r} (use .json, .toml, .yaml)")
    try:
        data = loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}", variable=str(path)) from None
    except (ValueError, yaml.YAMLError) as exc:
        raise fail(f" is not valid: {(str(exc).strip() or type(exc).__name__).splitlines()[0]}") from None
    if data is not None and not isinstance(data, dict):
        raise fail(": expected a mapping at the top")
    return data or {}


def _merge(tree: dict[str, Any], doc: Mapping[Any, Any], path: Path, at: tuple[str, ...] = ()) -> None:
    """Merge the file's ``doc`` (keys lower-cased) into ``tree``, the defaults' nested mapping."""
    for k, value in doc.items():
        keys = (*at, str(k).lower())
        dotted = ".".join(keys)
        if keys[-1] not in tree:
            raise ConfigError(f"unknown key {dotted} in {path}", variable=dotted)
        if not isinstance(tree[keys[-1]], dict):
            tree[keys[-1]] = _Raw(value, f"{dotted} in {path}")
        elif isinstance(value, dict):
            _merge(tree[keys[-1]], value, path, keys)
        else:
            raise ConfigError(f"{dotted} in {path}: expected a mapping (a section)", variable=dotted)


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
    for name, value in env.items():
        is_level_var = name == "LOG_LEVEL" or name.startswith("LOG_LEVEL__")
        if is_level_var and value.strip() and value.strip().lower() not in LOG_LEVELS:
            message = f"{name}={value!r}: expected a log level: debug, info, warn, error, fatal"
            raise ConfigError(message, variable=name)
    root, infos = _spec(cast(type, cls))  # cast: mypy does not see a type[T] as Hashable
    defaults = root()
    tree: dict[str, Any] = _converter.unstructure(defaults)
    if config_file is None:
        config_file = env.get(CONFIG_FILE_ENV, "").strip()
    if config_file:
        _merge(tree, _read_file(Path(config_file)), Path(config_file))
    for info in infos:
        if (raw := env.get(info.env, "")).strip():
            *parents, key = info.key.split(".")
            parent = functools.reduce(operator.getitem, parents, tree)
            parent[key] = _Raw(raw, info.env, under=parent[key] if isinstance(parent[key], _Raw) else None)
    try:
        loaded: Any = _converter.structure(tree, root)
    except ValueError as exc:  # a class's own rule that is not a ConfigError
        raise ConfigError(f"invalid settings for {root.__name__}: {exc}") from None
    sections = attrs.astuple(loaded, recurse=False)
    is_development = any(isinstance(s, AppSettings) and s.env == "development" for s in sections)
    for info in infos:
        get = operator.attrgetter(info.attr)
        if info.secret and (default := get(defaults)) and not is_development and get(loaded) == default:
            raise ConfigError(
                f"{info.env} is left at its known development default: set it "
                "(or APP_ENV=development for a development setup)",
                variable=info.env,
            )
    return cast(T, loaded if root is cls else getattr(loaded, attrs.fields(root)[0].name))


def describe_settings(cls: type) -> list[SettingInfo]:
    """Every setting of ``cls`` in declaration order, with the defaults the class really uses."""
    return list(_spec(cls)[1])
