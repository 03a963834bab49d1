"""``./just`` from a copy of the repository that has no ``.venv``: it bootstraps one and runs just."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP_TIMEOUT_S = 300


def _copy_tracked_files(dest: Path) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, tracked):
        src = ROOT / name.decode()
        if src.is_file():
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name.decode())


@pytest.mark.slow
def test_just_bootstraps_its_virtualenv_from_a_clean_copy(tmp_path: Path) -> None:
    repo = tmp_path / "clone"
    _copy_tracked_files(repo)
    assert not (repo / ".venv").exists()
    # run from another directory, as ./gradlew can be: the wrapper names its justfile itself
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    first = subprocess.run(
        [str(repo / "just"), "--version"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=BOOTSTRAP_TIMEOUT_S,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("just "), first.stdout
    assert "create .venv" in first.stderr and "pip install rust-just" in first.stderr
    assert (repo / ".venv" / "bin" / "just").exists()

    second = subprocess.run(
        [str(repo / "just"), "--list"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 0, second.stderr
    assert "test-fast" in second.stdout
    assert second.stderr == "", "the second run goes straight to just"
