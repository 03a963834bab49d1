"""The ``./just`` wrapper's decisions: which steps it takes on which machine, and what it runs."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_wrapper() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("just_wrapper", str(ROOT / "just"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    loader.exec_module(module)
    return module


w = _load_wrapper()
Step = w.Step

READY = dict(
    venv_exists=True,
    venv_python_works=True,
    just_installed=True,
    can_make_venv=True,
    is_root=False,
    has_sudo=True,
    has_apt=True,
)


def facts(**changes: bool) -> Any:
    return w.Facts(**{**READY, **changes})


FRESH = dict(venv_exists=False, venv_python_works=False, just_installed=False)


@pytest.mark.parametrize(
    ("changes", "steps"),
    [
        ({}, [Step.RUN_JUST]),
        (FRESH, [Step.CREATE_VENV, Step.INSTALL_JUST, Step.RUN_JUST]),
        (
            {**FRESH, "can_make_venv": False},
            [Step.APT_INSTALL_VENV, Step.CREATE_VENV, Step.INSTALL_JUST, Step.RUN_JUST],
        ),
        (
            {**FRESH, "can_make_venv": False, "is_root": True, "has_sudo": False},
            [Step.APT_INSTALL_VENV, Step.CREATE_VENV, Step.INSTALL_JUST, Step.RUN_JUST],
        ),
        # a working virtualenv without just (someone deleted it): only just is installed
        ({"just_installed": False}, [Step.INSTALL_JUST, Step.RUN_JUST]),
        # a virtualenv whose Python is gone or has no pip (a failed `python3 -m venv`)
        ({"venv_python_works": False}, [Step.RECREATE_VENV, Step.INSTALL_JUST, Step.RUN_JUST]),
        (
            {"venv_python_works": False, "just_installed": False, "can_make_venv": False},
            [Step.APT_INSTALL_VENV, Step.RECREATE_VENV, Step.INSTALL_JUST, Step.RUN_JUST],
        ),
        # ensurepip missing does not matter while the virtualenv works
        ({"can_make_venv": False, "has_apt": False, "has_sudo": False}, [Step.RUN_JUST]),
    ],
)
def test_plan(changes: dict[str, bool], steps: list[Any]) -> None:
    assert w.plan(facts(**changes)) == steps


def test_plan_without_sudo_as_a_user_says_the_root_command() -> None:
    with pytest.raises(w.WrapperError, match=r"as root, run `apt-get install -y python3-venv`"):
        w.plan(facts(**FRESH, can_make_venv=False, is_root=False, has_sudo=False))


def test_plan_without_apt_says_what_to_install() -> None:
    with pytest.raises(w.WrapperError, match="no apt-get here"):
        w.plan(facts(**FRESH, can_make_venv=False, has_apt=False))


def _fake_venv(tmp_path: Path, *, python: Path | None, just: bool) -> Path:
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    if python is not None:
        (venv / "bin" / "python").symlink_to(python)
    if just:
        (venv / "bin" / "just").write_text("")
    return venv


def test_facts_of_a_missing_venv(tmp_path: Path) -> None:
    f = w.facts(tmp_path / ".venv")
    assert (f.venv_exists, f.venv_python_works, f.just_installed) == (False, False, False)
    assert f.is_root == (os.geteuid() == 0)


def test_facts_of_a_venv_whose_python_is_gone(tmp_path: Path) -> None:
    venv = _fake_venv(tmp_path, python=tmp_path / "no-such-python3.99", just=True)
    f = w.facts(venv)
    assert f.venv_exists and f.just_installed and not f.venv_python_works
    assert w.plan(f)[0] in (Step.RECREATE_VENV, Step.APT_INSTALL_VENV)


def test_facts_of_a_venv_with_just_take_the_fast_path(tmp_path: Path) -> None:
    venv = _fake_venv(tmp_path, python=Path(sys.executable), just=True)
    f = w.facts(venv)
    assert f.venv_python_works and f.just_installed
    assert w.plan(f) == [Step.RUN_JUST]


def test_facts_probe_pip_when_just_is_missing(tmp_path: Path) -> None:
    # a "python" that exits non-zero stands for one that cannot import pip
    venv = _fake_venv(tmp_path, python=Path("/bin/false"), just=False)
    assert not w.facts(venv).venv_python_works


def test_execute_runs_the_steps_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []
    execs: list[list[str]] = []
    monkeypatch.setattr(w, "_run", lambda argv, env=None: ran.append(list(argv)))
    monkeypatch.setattr(w.os, "execv", lambda path, argv: execs.append([path, *argv]))
    venv = tmp_path / ".venv"
    f = facts(**FRESH, can_make_venv=False, is_root=False)
    w.execute(w.plan(f), f, ["up", "--verbose"], venv)
    assert ran == [
        ["sudo", "apt-get", "update", "-q"],
        ["sudo", "apt-get", "install", "-y", "-q", "python3-venv"],
        [sys.executable, "-m", "venv", str(venv)],
        [
            str(venv / "bin/python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "rust-just>=1.36",
        ],
    ]
    just = str(venv / "bin/just")
    assert execs == [[just, just, "--justfile", str(tmp_path / "justfile"), "up", "--verbose"]]


def test_execute_as_root_needs_no_sudo_and_recreates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []
    monkeypatch.setattr(w, "_run", lambda argv, env=None: ran.append(list(argv)))
    monkeypatch.setattr(w.os, "execv", lambda path, argv: None)
    venv = tmp_path / ".venv"
    f = facts(venv_python_works=False, can_make_venv=False, is_root=True, has_sudo=False)
    w.execute(w.plan(f), f, [], venv)
    assert ran[0][:2] == ["apt-get", "update"]
    assert ran[2] == [sys.executable, "-m", "venv", "--clear", str(venv)]


def test_a_failing_step_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(w.WrapperError, match=r"`false` exited with 1"):
        w._run(["false"])
    assert "$ false" in capsys.readouterr().err
