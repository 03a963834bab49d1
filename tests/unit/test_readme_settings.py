"""README.md's service settings tables are generated from the Config classes and must be current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_settings_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "infra" / "settings_doc.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr + " (run `just docs`)"
    readme = (ROOT / "README.md").read_text()
    assert "`MIXER_ID`" in readme and "`JANUS_WS_URL`" in readme and "`API_TOKEN`" in readme
