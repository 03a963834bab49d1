"""common.config: key/env mapping, value parsing, file + env precedence, secrets, describe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import attrs
import pytest

from common import config as cfg
from common.config import (
    AppSettings,
    ConfigError,
    EtcdSettings,
    HttpSettings,
    NatsSettings,
    RedisSettings,
    address,
    boolean,
    describe_settings,
    duration,
    load_settings,
    section,
    setting,
)
from common.errors import InvalidInput


@attrs.frozen(kw_only=True)
class Inner:
    b_c: str = setting("x")
    n: int = setting(1)


@attrs.frozen(kw_only=True)
class Sample:
    app: AppSettings = attrs.field(factory=AppSettings)
    etcd: EtcdSettings = attrs.field(factory=EtcdSettings)
    a: Inner = section(Inner)
    http: HttpSettings = attrs.field(factory=lambda: HttpSettings(addr="127.0.0.1:3000"))
    mixer_id: str = setting("mixer1")
    ratio: float = setting(0.5)
    is_on: bool = setting(False, key="enabled")
    names: list[str] = setting(["a"])
    mode: Literal["x", "y"] = setting("x")
    lease_ttl_s: float = setting(10.0, key="lease_ttl", parse=duration)
    token: str = setting("dev-token", secret=True)
    password: str = setting("", secret=True)


# the Sample's token is a known default secret: development mode lets the parsing tests use it
DEV = {"APP_ENV": "development"}


def load(env: dict[str, str] | None = None, **kw: Any) -> Sample:
    return load_settings(Sample, env={**DEV, **(env or {})}, **kw)


def dev_defaults() -> Sample:
    return attrs.evolve(Sample(), app=AppSettings(env="development"))


def error(env: dict[str, str] | None = None, **kw: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load(env, **kw)
    text = str(info.value)
    assert "\n" not in text
    return text


# -- key -> env mapping ----------------------------------------------------------------------


def test_defaults_with_empty_env() -> None:
    s = load()
    assert s == dev_defaults()
    assert s.app.shutdown_timeout_s == 10.0
    assert s.etcd.endpoints == ["127.0.0.1:2379"]
    assert s.http.addr == "127.0.0.1:3000"


def test_env_names_follow_key_paths() -> None:
    envs = {i.key: i.env for i in describe_settings(Sample)}
    assert envs["a.b_c"] == "A_B_C"
    assert envs["etcd.endpoints"] == "ETCD_ENDPOINTS"
    assert envs["etcd.dial_timeout"] == "ETCD_DIAL_TIMEOUT"
    assert envs["app.shutdown_timeout"] == "APP_SHUTDOWN_TIMEOUT"
    assert envs["app.log_config_file"] == "APP_LOG_CONFIG_FILE"
    assert envs["http.addr"] == "HTTP_ADDR"
    assert envs["mixer_id"] == "MIXER_ID"
    assert envs["lease_ttl"] == "LEASE_TTL"
    assert envs["enabled"] == "ENABLED"
    assert envs["etcd.prefix_rooms"] == "ETCD_PREFIX_ROOMS"


def test_env_overrides_each_kind() -> None:
    s = load(
        {
            "A_B_C": "hello",
            "A_N": "42",
            "ETCD_DIAL_TIMEOUT": "1m30s",
            "APP_SHUTDOWN_TIMEOUT": "500ms",
            "HTTP_ADDR": "0.0.0.0:3100",
            "MIXER_ID": "m2",
            "RATIO": "2.5",
            "ENABLED": "YES",
            "NAMES": " a , b,,c ",
            "MODE": "y",
            "LEASE_TTL": "3",
            "ETCD_ENDPOINTS": "h1:2379, h2:2380",
        }
    )
    assert s.a == Inner(b_c="hello", n=42)
    assert s.etcd.dial_timeout_s == 90.0
    assert s.etcd.endpoints == ["h1:2379", "h2:2380"]
    assert s.app.shutdown_timeout_s == 0.5
    assert s.http.addr == "0.0.0.0:3100"
    assert (s.mixer_id, s.ratio, s.is_on, s.names, s.mode, s.lease_ttl_s) == (
        "m2",
        2.5,
        True,
        ["a", "b", "c"],
        "y",
        3.0,
    )


def test_unknown_env_vars_and_empty_values_are_ignored() -> None:
    s = load({"MIXER_ID": "", "RATIO": "   ", "SOMETHING_ELSE": "x", "ETCD_FOO": "1"})
    assert s == dev_defaults()


def test_section_loaded_alone_keeps_its_prefix() -> None:
    assert load_settings(EtcdSettings, env={"ETCD_USERNAME": "u"}).username == "u"
    assert load_settings(NatsSettings, env={"NATS_DRAIN_TIMEOUT": "2s"}).drain_timeout_s == 2.0
    assert load_settings(RedisSettings, env={"REDIS_DB": "3", "REDIS_TLS": "true"}) == RedisSettings(
        db=3, tls=True
    )


def test_colliding_env_names_are_a_programming_error() -> None:
    @attrs.frozen(kw_only=True)
    class Clash:
        a: Inner = section(Inner)
        a_n: int = setting(0)

    with pytest.raises(TypeError, match="A_N"):
        load_settings(Clash, env={})


# -- value parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("10s", 10.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1h", 3600.0),
        ("1h2m3s", 3723.0),
        ("1.5s", 1.5),
        ("250us", 0.00025),
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        (3, 3.0),
        (0.25, 0.25),
    ],
)
def test_duration(raw: object, seconds: float) -> None:
    assert duration(raw) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", ["10x", "s", "", "-1s", "1 m", "1m 30s", "ten", "1.s", -1, True, None])
def test_bad_duration(raw: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        duration(raw)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("No", False),
        ("0", False),
        ("false", False),
    ],
)
def test_boolean(raw: str, value: bool) -> None:
    assert boolean(raw) is value


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("127.0.0.1:2379", "127.0.0.1:2379"),
        ("etcd:1", "etcd:1"),
        ("[::1]:80", "[::1]:80"),
        (" h:65535 ", "h:65535"),
    ],
)
def test_address(raw: str, value: str) -> None:
    assert address(raw) == value


@pytest.mark.parametrize(
    ("env", "var", "bad"),
    [
        ({"ETCD_DIAL_TIMEOUT": "10x"}, "ETCD_DIAL_TIMEOUT", "'10x'"),
        ({"APP_SHUTDOWN_TIMEOUT": "-5s"}, "APP_SHUTDOWN_TIMEOUT", "'-5s'"),
        ({"HTTP_ADDR": "127.0.0.1:70000"}, "HTTP_ADDR", "'127.0.0.1:70000'"),
        ({"HTTP_ADDR": "127.0.0.1:0"}, "HTTP_ADDR", "'127.0.0.1:0'"),
        ({"HTTP_ADDR": ":3000"}, "HTTP_ADDR", "':3000'"),
        ({"HTTP_ADDR": "localhost"}, "HTTP_ADDR", "'localhost'"),
        ({"ETCD_ENDPOINTS": "h1:2379,nope"}, "ETCD_ENDPOINTS", "'h1:2379,nope'"),
        ({"ETCD_ENDPOINTS": " , "}, "ETCD_ENDPOINTS", "' , '"),
        ({"ETCD_PREFIX_ROOMS": "rooms"}, "ETCD_PREFIX_ROOMS", "'rooms'"),
        ({"A_N": "1_000"}, "A_N", "'1_000'"),
        ({"A_N": "1.5"}, "A_N", "'1.5'"),
        ({"RATIO": "nan"}, "RATIO", "'nan'"),
        ({"ENABLED": "maybe"}, "ENABLED", "'maybe'"),
        ({"MODE": "z"}, "MODE", "'z'"),
        ({"APP_ENV": "staging"}, "APP_ENV", "'staging'"),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL", "'verbose'"),
        ({"LOG_LEVEL__RESOURCE_MGR": "loud"}, "LOG_LEVEL__RESOURCE_MGR", "'loud'"),
    ],
)
def test_bad_env_value_names_variable_and_value(env: dict[str, str], var: str, bad: str) -> None:
    text = error(env)
    assert text.startswith(f"{var}={bad}:")


def test_config_error_is_invalid_input_and_carries_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load({"LEASE_TTL": "soon"})
    assert isinstance(info.value, InvalidInput)
    assert info.value.variable == "LEASE_TTL"


def test_valid_log_levels_are_accepted_in_any_case() -> None:
    load({"LOG_LEVEL": " WARN ", "LOG_LEVEL__A": "Debug", "LOG_LEVEL__B": "", "LOG_LEVEL__C": "fatal"})


# -- config file -----------------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


DOC = {
    "etcd": {"endpoints": ["f1:2379", "f2:2379"], "dial_timeout": "2s"},
    "app": {"shutdown_timeout": 3},
    "a": {"b_c": "file", "n": 7},
    "mixer_id": "from-file",
    "enabled": True,
    "names": "p, q",
}


def check_doc(s: Sample) -> None:
    assert s.etcd.endpoints == ["f1:2379", "f2:2379"]
    assert s.etcd.dial_timeout_s == 2.0
    assert s.app.shutdown_timeout_s == 3.0
    assert s.a == Inner(b_c="file", n=7)
    assert (s.mixer_id, s.is_on, s.names) == ("from-file", True, ["p", "q"])


def test_json_file(tmp_path: Path) -> None:
    check_doc(load(config_file=write(tmp_path, "c.json", json.dumps(DOC))))


def test_toml_file(tmp_path: Path) -> None:
    text = """
mixer_id = "from-file"
enabled = true
names = "p, q"
[etcd]
endpoints = ["f1:2379", "f2:2379"]
dial_timeout = "2s"
[app]
shutdown_timeout = 3
[a]
b_c = "file"
n = 7
"""
    check_doc(load(config_file=write(tmp_path, "c.toml", text)))


def test_yaml_file_found_through_app_config_file(tmp_path: Path) -> None:
    text = """
mixer_id: from-file
enabled: yes
names: p, q
etcd: {endpoints: [f1:2379, f2:2379], dial_timeout: 2s}
app: {shutdown_timeout: 3}
a: {b_c: file, n: 7}
"""
    path = write(tmp_path, "c.yaml", text)
    check_doc(load({"APP_CONFIG_FILE": str(path)}))


def test_env_beats_file_beats_default(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", json.dumps({"mixer_id": "file", "a": {"b_c": "file"}}))
    s = load({"APP_CONFIG_FILE": str(path), "MIXER_ID": "env"})
    assert s.mixer_id == "env"  # env over file
    assert s.a.b_c == "file"  # file over default
    assert s.a.n == 1  # default


def test_file_unknown_key(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", json.dumps({"etcd": {"endpoint": "x:1"}}))
    assert error(config_file=path) == f"unknown key etcd.endpoint in {path}"


def test_file_field_name_is_not_a_key_when_overridden(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", json.dumps({"lease_ttl_s": 3}))
    assert "unknown key lease_ttl_s" in error(config_file=path)


def test_file_bad_value_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", json.dumps({"etcd": {"dial_timeout": "5 sec"}}))
    assert error(config_file=path).startswith(f"etcd.dial_timeout in {path}='5 sec': expected a duration")


def test_file_wrong_types(tmp_path: Path) -> None:
    assert "expected a mapping" in error(config_file=write(tmp_path, "a.json", '{"etcd": "x"}'))
    assert "a.n in" in error(config_file=write(tmp_path, "b.json", '{"a": {"n": true}}'))
    assert "mixer_id in" in error(config_file=write(tmp_path, "c.json", '{"mixer_id": 5}'))
    assert "top" in error(config_file=write(tmp_path, "d.json", "[1]"))


def test_file_unreadable_or_malformed(tmp_path: Path) -> None:
    assert "cannot read config file" in error(config_file=tmp_path / "missing.json")
    assert "is not valid" in error(config_file=write(tmp_path, "e.json", "{"))
    assert "is not valid" in error(config_file=write(tmp_path, "e.toml", "a = "))
    assert "unsupported suffix" in error(config_file=write(tmp_path, "e.ini", "a=1"))


def test_empty_yaml_file_is_defaults(tmp_path: Path) -> None:
    assert load(config_file=write(tmp_path, "e.yaml", "")) == dev_defaults()


def test_bad_file_value_is_an_error_even_when_env_overrides_it(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", json.dumps({"etcd": {"dial_timeout": "5 sec"}}))
    text = error({"ETCD_DIAL_TIMEOUT": "9s"}, config_file=path)
    assert text.startswith(f"etcd.dial_timeout in {path}='5 sec':")


def test_several_bad_values_report_one_of_them(tmp_path: Path) -> None:
    # which one comes first (the file's or the environment's) is not promised
    path = write(tmp_path, "c.json", json.dumps({"a": {"n": "x"}}))
    text = error({"ETCD_DIAL_TIMEOUT": "bad"}, config_file=path)
    assert text.startswith((f"a.n in {path}='x':", "ETCD_DIAL_TIMEOUT='bad':"))


@attrs.frozen(kw_only=True)
class Ruled:
    app: AppSettings = attrs.field(factory=AppSettings)
    a: Inner = section(lambda: Inner(b_c="custom"))
    low: int = setting(1, parse=cfg.integer)
    high: int = setting(2, parse=cfg.integer)
    maybe: bool | None = setting(None, parse=boolean)
    fixed: int = setting(5, parse=cfg.at_least(cfg.integer, 10))  # defaults are not parsed

    def __attrs_post_init__(self) -> None:
        if self.high < self.low:
            raise ConfigError(f"HIGH={self.high} is below LOW={self.low}", variable="HIGH")


def test_defaults_come_from_the_instance_and_are_kept_as_they_are() -> None:
    r = load_settings(Ruled, env={"A_N": "2"})
    assert (r.a, r.maybe, r.fixed) == (Inner(b_c="custom", n=2), None, 5)


def test_optional_setting_from_file_and_env(tmp_path: Path) -> None:
    assert load_settings(Ruled, env={}, config_file=write(tmp_path, "c.yaml", "maybe: yes")).maybe is True
    assert load_settings(Ruled, env={"MAYBE": "0"}).maybe is False
    with pytest.raises(ConfigError, match=r"^maybe in .*=None: expected a boolean"):
        load_settings(Ruled, env={}, config_file=write(tmp_path, "d.json", '{"maybe": null}'))


def test_class_rules_run_after_the_values_and_log_levels() -> None:
    with pytest.raises(ConfigError, match=r"^HIGH=0 is below LOW=1$"):
        load_settings(Ruled, env={"HIGH": "0"})
    with pytest.raises(ConfigError, match=r"^LOG_LEVEL='nope':"):
        load_settings(Ruled, env={"HIGH": "0", "LOG_LEVEL": "nope"})
    with pytest.raises(ConfigError, match=r"^LOW='x':"):
        load_settings(Ruled, env={"LOW": "x", "HIGH": "0"})


# -- secrets ---------------------------------------------------------------------------------


def test_secrets_masked_in_repr_and_errors() -> None:
    s = load({"TOKEN": "hunter2-very-secret", "PASSWORD": "pw"})
    assert "hunter2" not in repr(s)
    assert "'pw'" not in repr(s)
    assert "token='***'" in repr(s)
    assert "password=''" in repr(Sample())

    @attrs.frozen(kw_only=True)
    class Picky:
        key: str = setting("0" * 8, secret=True, parse=cfg.at_least(cfg.integer, 10**9))

    with pytest.raises(ConfigError) as info:
        load_settings(Picky, env={"KEY": "12345"})
    assert "12345" not in str(info.value)
    assert str(info.value).startswith("KEY=<secret, 5 chars>:")


REFUSED = (
    "TOKEN is left at its known development default: set it (or APP_ENV=development for a development setup)"
)


def test_production_refuses_default_secrets() -> None:
    assert error({"APP_ENV": "production"}) == REFUSED
    # explicitly set to the well-known default is refused too
    assert "TOKEN" in error({"APP_ENV": "production", "TOKEN": "dev-token"})


def test_production_is_the_default_mode() -> None:
    assert Sample().app.env == "production"
    with pytest.raises(ConfigError) as info:
        load_settings(Sample, env={})
    assert str(info.value) == REFUSED
    assert load_settings(Sample, env={"TOKEN": "real"}).token == "real"


def test_production_accepts_real_secrets_and_empty_default_passwords() -> None:
    s = load({"APP_ENV": "production", "TOKEN": "real"})
    assert s.app.env == "production"
    assert s.password == ""


def test_development_accepts_default_secrets() -> None:
    assert load({"APP_ENV": "development"}).token == "dev-token"


# -- describe --------------------------------------------------------------------------------


def test_describe_settings() -> None:
    infos = {i.env: i for i in describe_settings(Sample)}
    assert infos["ETCD_DIAL_TIMEOUT"].default == "5s"
    assert infos["ETCD_DIAL_TIMEOUT"].kind == "duration"
    assert infos["ETCD_ENDPOINTS"].default == "127.0.0.1:2379"
    assert infos["ETCD_ENDPOINTS"].help
    assert infos["HTTP_ADDR"].default == "127.0.0.1:3000"
    assert infos["ENABLED"].default == "false"
    assert infos["TOKEN"].default == "***"
    assert infos["TOKEN"].secret
    assert infos["PASSWORD"].default == ""
    assert list(infos)[:3] == ["APP_ENV", "APP_SHUTDOWN_TIMEOUT", "APP_LOG_CONFIG_FILE"]


def test_describe_kinds() -> None:
    kinds = {i.env: i.kind for i in describe_settings(Sample)}
    assert kinds["APP_ENV"] == "development|production"
    assert (kinds["MIXER_ID"], kinds["A_N"], kinds["RATIO"], kinds["ENABLED"]) == (
        "str",
        "int",
        "float",
        "bool",
    )
    assert (kinds["NAMES"], kinds["ETCD_ENDPOINTS"]) == ("list of str", "list of host:port")
    assert (kinds["HTTP_ADDR"], kinds["ETCD_PREFIX_ROOMS"], kinds["LEASE_TTL"]) == (
        "host:port",
        "key prefix",
        "duration",
    )
    assert {i.env: i.kind for i in describe_settings(RedisSettings)}["REDIS_DB"] == "int"


def test_unsupported_annotation_needs_a_parser() -> None:
    @attrs.frozen(kw_only=True)
    class Odd:
        blob: ClassVar[int] = 0
        when: tuple[int, int] = setting((1, 2))

    with pytest.raises(TypeError, match="parse="):
        load_settings(Odd, env={})

    @attrs.frozen(kw_only=True)
    class Where:
        path: Path = setting(Path("x"))  # cattrs has a hook of its own for Path: not ours

    with pytest.raises(TypeError, match=r"^Where.path: no parser .* pass setting\(parse=\.\.\.\)$"):
        load_settings(Where, env={"PATH": "y"})


def test_module_exports_exist() -> None:
    assert all(hasattr(cfg, name) for name in cfg.__all__)
