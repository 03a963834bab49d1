"""common.logging: names, level lookup, levels before/after setup, JSON and console lines."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common import logging as applog
from common.config import ConfigError
from common.errors import NotFound, log_error
from common.logging import (
    level_env_names,
    resolve_level,
    screaming_snake,
    setup_logging,
    teardown_logging,
)


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    yield
    teardown_logging()


def uniq(name: str) -> str:
    """A logger name no other test has created (logger objects live for the whole process)."""
    return f"{name}{uuid.uuid4().hex[:8]}"


# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "snake"),
    [
        ("ResourceMgr", "RESOURCE_MGR"),
        ("ResMgr", "RES_MGR"),
        ("JanusWorker", "JANUS_WORKER"),
        ("HLSServer", "HLS_SERVER"),
        ("JanusWorker2", "JANUS_WORKER2"),
        ("HTTPServerV2", "HTTP_SERVER_V2"),
        ("Worker2Pool", "WORKER2_POOL"),
        ("svc_rooms", "SVC_ROOMS"),
        ("api", "API"),
        ("HTTP", "HTTP"),
        ("ws-gateway", "WS_GATEWAY"),
        ("__main__", "MAIN"),
        ("mixer1", "MIXER1"),
    ],
)
def test_screaming_snake(name: str, snake: str) -> None:
    assert screaming_snake(name) == snake


def test_level_env_names_most_specific_first() -> None:
    assert level_env_names("ResourceMgr.JanusWorker") == [
        "LOG_LEVEL__RESOURCE_MGR__JANUS_WORKER",
        "LOG_LEVEL__RESOURCE_MGR",
        "LOG_LEVEL",
    ]
    assert level_env_names("svc_rooms.api") == [
        "LOG_LEVEL__SVC_ROOMS__API",
        "LOG_LEVEL__SVC_ROOMS",
        "LOG_LEVEL",
    ]
    assert level_env_names("root") == ["LOG_LEVEL"]


# -- level resolution ------------------------------------------------------------------------

NAME = "ResourceMgr.JanusWorker.Conn"
FULL = {
    "LOG_LEVEL__RESOURCE_MGR__JANUS_WORKER__CONN": "debug",
    "LOG_LEVEL__RESOURCE_MGR__JANUS_WORKER": "warning",
    "LOG_LEVEL__RESOURCE_MGR": "error",
    "LOG_LEVEL": "critical",
}


@pytest.mark.parametrize(
    ("drop", "level"),
    [
        ([], logging.DEBUG),
        (["LOG_LEVEL__RESOURCE_MGR__JANUS_WORKER__CONN"], logging.WARNING),
        (
            ["LOG_LEVEL__RESOURCE_MGR__JANUS_WORKER__CONN", "LOG_LEVEL__RESOURCE_MGR__JANUS_WORKER"],
            logging.ERROR,
        ),
        (list(FULL)[:3], logging.CRITICAL),
        (list(FULL), logging.INFO),
    ],
)
def test_priority_most_specific_wins(drop: list[str], level: int) -> None:
    env = {k: v for k, v in FULL.items() if k not in drop}
    assert resolve_level(NAME, env) == level


@pytest.mark.parametrize("bad", ["", "   ", "verbose", "10", "infoo"])
def test_invalid_or_empty_falls_through(bad: str) -> None:
    env = {"LOG_LEVEL__RESOURCE_MGR__JANUS_WORKER": bad, "LOG_LEVEL__RESOURCE_MGR": "error"}
    assert resolve_level("ResourceMgr.JanusWorker", env) == logging.ERROR
    assert resolve_level("ResourceMgr.JanusWorker", {"LOG_LEVEL": bad}) == logging.INFO


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("DEBUG", logging.DEBUG),
        ("Info", logging.INFO),
        (" warn ", logging.WARNING),
        ("WARNING", logging.WARNING),
        ("error\n", logging.ERROR),
        ("Fatal", logging.CRITICAL),
        ("critical", logging.CRITICAL),
    ],
)
def test_values_case_insensitive_and_trimmed(value: str, level: int) -> None:
    assert resolve_level("HLSServer", {"LOG_LEVEL__HLS_SERVER": value}) == level


def test_acronym_and_digit_names_resolve() -> None:
    env = {
        "LOG_LEVEL__HLS_SERVER": "debug",
        "LOG_LEVEL__JANUS_WORKER2": "error",
        "LOG_LEVEL__HTTP_SERVER_V2": "warn",
    }
    assert resolve_level("HLSServer.Keys", env) == logging.DEBUG
    assert resolve_level("JanusWorker2", env) == logging.ERROR
    assert resolve_level("HTTPServerV2", env) == logging.WARNING
    # an unconverted spelling is not looked up
    assert resolve_level("HLSServer", {"LOG_LEVEL__HLSSERVER": "debug"}) == logging.INFO


# -- levels applied by setup -----------------------------------------------------------------


def test_levels_apply_to_loggers_created_before_and_after_setup(tmp_path: Path) -> None:
    mod = uniq("ResourceMgr")
    key = screaming_snake(mod)
    before = logging.getLogger(f"{mod}.JanusWorker")
    before_other = logging.getLogger(uniq("Other"))
    env = {f"LOG_LEVEL__{key}__JANUS_WORKER": "debug", f"LOG_LEVEL__{key}": "error", "LOG_LEVEL": "warn"}
    setup_logging("svc_test", env=env, config_file="")
    after = logging.getLogger(mod).getChild("MixerWorker")
    after_leaf = logging.getLogger(mod).getChild("JanusWorker").getChild("Conn")
    assert before.getEffectiveLevel() == logging.DEBUG
    assert before_other.getEffectiveLevel() == logging.WARNING
    assert after.name == f"{mod}.MixerWorker"
    assert after.getEffectiveLevel() == logging.ERROR
    assert after_leaf.getEffectiveLevel() == logging.DEBUG
    assert logging.getLogger(uniq("svc_late")).getEffectiveLevel() == logging.WARNING
    assert logging.getLogger().level == logging.WARNING


def test_teardown_restores_levels_and_logger_class() -> None:
    name = uniq("svc_x.api")
    existing = logging.getLogger(name)
    existing.setLevel(logging.ERROR)
    cls = logging.getLoggerClass()
    setup_logging("svc_test", env={"LOG_LEVEL": "debug"}, config_file="")
    assert existing.level == logging.DEBUG
    teardown_logging()
    assert existing.level == logging.ERROR
    assert logging.getLoggerClass() is cls
    assert logging.getLogger(uniq("fresh")).level == logging.NOTSET


# -- output ----------------------------------------------------------------------------------


def log_config(tmp_path: Path, **doc: Any) -> tuple[Path, Path]:
    out = tmp_path / "out.log"
    conf = tmp_path / "log.json"
    conf.write_text(json.dumps({"output": str(out), **doc}), encoding="utf-8")
    return conf, out


def lines(path: Path) -> list[str]:
    for handler in logging.getLogger().handlers:
        handler.flush()
    return path.read_text(encoding="utf-8").splitlines()


def test_json_lines_carry_core_keys_and_fields(tmp_path: Path) -> None:
    conf, out = log_config(tmp_path, format="json")
    setup_logging("svc_rooms", env={"APP_LOG_CONFIG_FILE": str(conf)})
    name = uniq("svc_rooms.api")
    log = logging.getLogger(name)
    log.info("plain %s", "arg")
    log.warning("with room", extra={"fields": {"room_id": "r1", "attempt": 2, "msg": "clash"}})
    log_error(log, NotFound("no such room", room_id="r9"), "get room")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger(name).exception("failed")
    rows = [json.loads(line) for line in lines(out)]
    assert [r["msg"] for r in rows] == [
        "plain arg",
        "with room",
        "get room: NotFound: no such room (room_id='r9')",
        "failed",
    ]
    first = rows[0]
    assert set(first) == {"ts", "level", "logger", "msg", "service", "module"}
    assert first["ts"].endswith("Z")
    assert (first["level"], first["logger"], first["service"], first["module"]) == (
        "info",
        name,
        "svc_rooms",
        name,
    )
    assert "room_id" not in first
    assert rows[1]["room_id"] == "r1"
    assert rows[1]["attempt"] == 2
    assert rows[1]["field_msg"] == "clash"
    assert rows[1]["level"] == "warning"
    assert rows[2]["room_id"] == "r9"
    assert rows[3]["level"] == "error"
    assert "Traceback" in rows[3]["exc"]
    assert "RuntimeError: boom" in rows[3]["exc"]


def test_console_lines(tmp_path: Path) -> None:
    conf, out = log_config(tmp_path, format="console", color=False)
    setup_logging("svc_mixer", env={}, config_file=conf)
    name = uniq("svc_mixer.ffmpeg")
    logging.getLogger(name).info(
        "started pid=%d", 7, extra={"fields": {"room_id": "r2", "cmd": "ffmpeg -i x", "port": 10000}}
    )
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger(name).error("crashed", exc_info=True)
    text = lines(out)
    ts, level, logger, rest = text[0].split(None, 3)
    assert ts.endswith("Z")
    assert (level, logger) == ("INFO", name)
    assert rest.startswith("started pid=7 ")
    assert f"service=svc_mixer module={name} room_id=r2" in rest
    assert 'cmd="ffmpeg -i x" port=10000' in rest
    assert "\x1b[" not in text[0]
    assert text[1].split()[1] == "ERROR"
    assert "Traceback (most recent call last):" in text
    assert text[-1] == "ValueError: bad"


def test_console_colour(tmp_path: Path) -> None:
    conf, out = log_config(tmp_path, format="console", color=True)
    setup_logging("svc_mixer", env={}, config_file=conf)
    logging.getLogger(uniq("c")).warning("hi")
    assert "\x1b[33mWARNING\x1b[0m" in lines(out)[0]


def test_levels_filter_output(tmp_path: Path) -> None:
    conf, out = log_config(tmp_path, format="json")
    mod = uniq("HLSServer")
    setup_logging(
        "svc_users",
        env={"LOG_LEVEL": "error", f"LOG_LEVEL__{screaming_snake(mod)}": "debug"},
        config_file=conf,
    )
    logging.getLogger(mod).debug("kept")
    logging.getLogger(uniq("Other")).warning("dropped")
    assert [json.loads(x)["msg"] for x in lines(out)] == ["kept"]


def test_second_setup_replaces_the_first(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    conf1, out1 = log_config(tmp_path / "a", format="json")
    conf2, out2 = log_config(tmp_path / "b", format="json")
    setup_logging("one", env={}, config_file=conf1)
    setup_logging("two", env={}, config_file=conf2)
    logging.getLogger(uniq("x")).warning("once")
    assert out1.read_text(encoding="utf-8") == ""
    assert json.loads(lines(out2)[0])["service"] == "two"


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"format": "xml"}, "format in .*='xml'"),
        ({"colour": True}, "unknown key colour"),
        ({"color": "sometimes"}, "color in"),
    ],
)
def test_bad_log_config_file(tmp_path: Path, doc: dict[str, object], match: str) -> None:
    conf = tmp_path / "log.json"
    conf.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ConfigError, match=match):
        setup_logging("svc", env={"APP_LOG_CONFIG_FILE": str(conf)})


def test_unwritable_output(tmp_path: Path) -> None:
    conf = tmp_path / "log.json"
    conf.write_text(json.dumps({"output": str(tmp_path / "no" / "dir" / "x.log")}), encoding="utf-8")
    with pytest.raises(ConfigError, match="log output"):
        setup_logging("svc", env={}, config_file=conf)


def test_module_exports_exist() -> None:
    assert all(hasattr(applog, name) for name in applog.__all__)
