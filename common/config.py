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

How: the defaults (unstructured by cattrs), then the file's values, then the environment's make
one nested mapping keyed by key segments, the values from file and env wrapped with where they
came from. One cattrs converter structures it: per setting its ``parse=`` or the hook of its type,
whose error names the variable; the ``ClassValidationError`` collects them. The README tables
come from :func:`describe_settings`.
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
from cattrs.errors import ClassValidationError
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


# -- parsers: (raw value from env, file or default) -> typed value; raise ValueError(reason) ----


def _kind(name: str) -> Callable[[F], F]:
    """Tag a parser with the kind describe_settings shows (``duration`` defaults get an ``s``)."""

    def mark(fn: F) -> F:
        fn.kind = name  # type: ignore[attr-defined]
        return fn

    return mark


def _kind_of(parse: Callable[..., Any]) -> str:
    return str(getattr(parse, "kind", None) or parse.__name__.strip("_").replace("_", " "))


@_kind("str")
def _text(raw: object) -> str:
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
def _number(raw: object) -> float:
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


@_kind("key prefix")
def key_prefix(raw: object) -> str:
    """An etcd key prefix: starts and ends with ``/`` (``/rooms/``)."""
    value = _text(raw).strip()
    if len(value) < 2 or not value.startswith("/") or not value.endswith("/") or " " in value:
        raise ValueError("expected a key prefix starting and ending with '/', e.g. /rooms/")
    return value


def at_least(parse: Parse, minimum: float) -> Parse:
    """``parse``, then require the value to be >= ``minimum`` (``at_least(duration, 1)``)."""

    @_kind(_kind_of(parse))
    def bounded(raw: object) -> Any:
        value = parse(raw)
        if value < minimum:
            unit = "s" if _kind_of(parse) == "duration" else ""
            raise ValueError(f"expected at least {minimum:g}{unit}")
        return value

    return bounded


def _choice(*values: str) -> Parse:
    """One of ``values`` (case-sensitive, whitespace trimmed): a ``Literal`` of strings."""

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


def _list_of(item: Callable[..., Any], *, min_items: int = 0) -> Parse:
    """A comma-separated string (items trimmed, empty items dropped) or a list; each item parsed."""

    @_kind(f"list of {_kind_of(item)}")
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
    is_file: bool
    under: _Raw | None = None  # the file's value the environment's replaced: still checked


class _BadValue(ConfigError):
    """A value its parser refused; one from the file is reported before one from the environment."""

    def __init__(self, raw: _Raw, detail: str) -> None:
        super().__init__(f"{raw.where}={detail}", variable=raw.where)
        self.is_file = raw.is_file


def _meta(field: attrs.Attribute[Any]) -> _Meta:
    return field.metadata.get(_META) or _Meta(key=None, parse=None, secret=False, help="")


def _segment(field: attrs.Attribute[Any]) -> str:
    return (_meta(field).key or field.name).lower()


def _unsupported(tp: Any) -> Any:
    raise TypeError(f"no parser for type {tp!r}; pass setting(parse=...)")


def _parser(cls: type, field: attrs.Attribute[Any]) -> Callable[..., Any]:
    """The field's ``parse=``, or the converter's hook for its type: one of ours (it has a kind),
    not one cattrs keeps for a few classes (``Path``, ``bytes``) whatever is registered."""
    parse = _meta(field).parse
    try:
        hook = parse or _converter.get_structure_hook(field.type)
        return hook if parse or hasattr(hook, "kind") else _unsupported(field.type)
    except TypeError as exc:
        raise TypeError(f"{cls.__name__}.{field.name}: {exc}") from None


def _hook(parse: Callable[..., Any]) -> Callable[..., Any]:
    """A cattrs structure hook ``(value, type)`` that is also a parser ``(value)``."""
    return _kind(_kind_of(parse))(lambda value, _=None: parse(value))


def _leaf_hook(parse: Callable[..., Any], secret: bool) -> Callable[[object, object], Any]:
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
            raise _BadValue(value, f"{shown}: {exc}") from None

    return hook


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(detailed_validation=True)

    def is_str_literal(tp: Any) -> bool:
        return typing.get_origin(tp) is Literal and all(isinstance(a, str) for a in typing.get_args(tp))

    def is_list(tp: Any) -> bool:
        return typing.get_origin(tp) is list

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

    # Registered first, so tried last: cattrs must not guess a type we have no parser for.
    conv.register_structure_hook_factory(lambda _: True, _unsupported)
    for tp, parse in ((str, _text), (bool, boolean), (int, integer), (float, _number)):
        conv.register_structure_hook(tp, _hook(parse))
    conv.register_structure_hook_factory(is_str_literal, lambda t: _hook(_choice(*typing.get_args(t))))
    conv.register_structure_hook_factory(
        is_list, lambda t: _hook(_list_of(conv.get_structure_hook(typing.get_args(t)[0])))
    )
    conv.register_structure_hook_factory(attrs.has, structure_section)
    conv.register_unstructure_hook_factory(attrs.has, unstructure_section)
    return conv


_converter = _make_converter()


# -- loading -----------------------------------------------------------------------------------


@attrs.frozen
class _Leaf:
    names: tuple[str, ...]  # attribute path
    keys: tuple[str, ...]  # key path
    parse: Callable[..., Any]
    secret: bool
    help: str

    key = property(lambda self: ".".join(self.keys))
    env = property(lambda self: "_".join(self.keys).upper())


def _leaves(cls: type, names: tuple[str, ...] = (), keys: tuple[str, ...] = ()) -> Iterator[_Leaf]:
    for field in attrs.fields(attrs.resolve_types(cls)):
        path = ((*names, field.name), (*keys, _segment(field)))
        if attrs.has(field.type):
            yield from _leaves(field.type, *path)
        else:
            meta = _meta(field)
            yield _Leaf(*path, parse=_parser(cls, field), secret=meta.secret, help=meta.help)


@functools.cache
def _spec(cls: type) -> tuple[type, tuple[_Leaf, ...]]:
    """The class to structure and its settings. A shared section loaded alone (EtcdSettings) is
    held under its key, so it keeps its prefix (ETCD_*)."""
    if not attrs.has(cls):
        raise TypeError(f"{cls!r} is not an attrs class")
    key = getattr(cls, "section_key", "")
    root = attrs.make_class(cls.__name__, {key: attrs.field(type=cls, factory=cls)}) if key else cls
    leaves = tuple(_leaves(root))
    seen: dict[str, str] = {}
    for leaf in leaves:
        if leaf.env in seen:
            raise TypeError(f"{root.__name__}: keys {seen[leaf.env]} and {leaf.key} share env {leaf.env}")
        seen[leaf.env] = leaf.key
    return root, leaves


def _get(obj: object, names: tuple[str, ...]) -> Any:
    return functools.reduce(getattr, names, obj)


_LOADERS: Mapping[str, Callable[[str], Any]] = {
    ".json": json.loads,
    ".toml": tomllib.loads,
    ".yaml": yaml.safe_load,
    ".yml": yaml.safe_load,
}


def _read_file(path: Path) -> Mapping[str, object]:
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}", variable=str(path)) from None
    suffix = path.suffix.lower()
    if suffix not in _LOADERS:
        message = f"config file {path}: unsupported suffix {suffix!r} (use .json, .toml, .yaml)"
        raise ConfigError(message, variable=str(path))
    try:
        data = _LOADERS[suffix](raw)
    except (ValueError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"config file {path} is not valid: {first}", variable=str(path)) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top", variable=str(path))
    return data or {}


def _merge(tree: dict[str, Any], doc: Mapping[Any, Any], path: Path, at: tuple[str, ...] = ()) -> None:
    """Merge the file's ``doc`` (keys lower-cased) into ``tree``, the defaults' nested mapping."""
    for k, value in doc.items():
        keys = (*at, str(k).lower())
        dotted = ".".join(keys)
        if keys[-1] not in tree:
            raise ConfigError(f"unknown key {dotted} in {path}", variable=dotted)
        if not isinstance(tree[keys[-1]], dict):
            tree[keys[-1]] = _Raw(value, f"{dotted} in {path}", is_file=True)
        elif isinstance(value, dict):
            _merge(tree[keys[-1]], value, path, keys)
        else:
            raise ConfigError(f"{dotted} in {path}: expected a mapping (a section)", variable=dotted)


def _check_log_levels(env: Mapping[str, str]) -> None:
    for name, value in env.items():
        is_level_var = name == "LOG_LEVEL" or name.startswith("LOG_LEVEL__")
        if is_level_var and value.strip() and value.strip().lower() not in LOG_LEVELS:
            message = f"{name}={value!r}: expected a log level: debug, info, warn, error, fatal"
            raise ConfigError(message, variable=name)


def _failures(exc: BaseException) -> Iterator[BaseException]:
    """What the hooks (bad values) and the constructors (the classes' own rules) raised."""
    if isinstance(exc, ClassValidationError):
        for sub in exc.exceptions:
            yield from _failures(sub)
    else:
        yield exc


def _config_error(exc: ClassValidationError, cls: type, env: Mapping[str, str]) -> ConfigError:
    """One error, in the order of the checks: the file's values, the environment's, the
    ``LOG_LEVEL`` variables, then the classes' own rules."""
    failures = list(_failures(exc))
    if bad := sorted((f for f in failures if isinstance(f, _BadValue)), key=lambda f: not f.is_file):
        return ConfigError(bad[0].detail, variable=bad[0].variable)  # without the notes cattrs added
    _check_log_levels(env)
    if isinstance(failures[0], ConfigError):
        return failures[0]
    if isinstance(failures[0], ValueError | TypeError):
        return ConfigError(f"invalid settings for {cls.__name__}: {failures[0]}")
    raise failures[0]


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
    root, leaves = _spec(cast(type, cls))  # cast: mypy does not see a type[T] as Hashable
    defaults = root()
    tree: dict[str, Any] = _converter.unstructure(defaults)
    if config_file is None:
        config_file = env.get(CONFIG_FILE_ENV, "").strip() or None
    if config_file:
        _merge(tree, _read_file(Path(config_file)), Path(config_file))
    for leaf in leaves:
        raw = env.get(leaf.env)
        if raw is not None and raw.strip():
            parent, key = functools.reduce(operator.getitem, leaf.keys[:-1], tree), leaf.keys[-1]
            under = parent[key] if isinstance(parent[key], _Raw) else None
            parent[key] = _Raw(raw, leaf.env, is_file=False, under=under)
    try:
        loaded: Any = _converter.structure(tree, root)
    except ClassValidationError as exc:
        raise _config_error(exc, cls, env) from None
    _check_log_levels(env)
    is_development = any(
        isinstance(app := _get(loaded, leaf.names[:-1]), AppSettings) and app.env == "development"
        for leaf in leaves
    )
    for leaf in leaves:
        default = _get(defaults, leaf.names)
        if leaf.secret and default and not is_development and _get(loaded, leaf.names) == default:
            raise ConfigError(
                f"{leaf.env} is left at its known development default: set it "
                "(or APP_ENV=development for a development setup)",
                variable=leaf.env,
            )
    return cast(T, loaded if root is cls else getattr(loaded, attrs.fields(root)[0].name))


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
        return str(value).lower()
    return str(int(value) if isinstance(value, float) and value.is_integer() else value)


def describe_settings(cls: type) -> list[SettingInfo]:
    """Every setting of ``cls`` in declaration order, with the defaults the class really uses."""
    root, leaves = _spec(cls)
    defaults, out = root(), []
    for leaf in leaves:
        value, kind = _get(defaults, leaf.names), _kind_of(leaf.parse)
        shown = _MASK if leaf.secret and value else _default_text(value) + ("s" if kind == "duration" else "")
        out.append(
            SettingInfo(
                key=leaf.key, env=leaf.env, default=shown, kind=kind, secret=leaf.secret, help=leaf.help
            )
        )
    return out
