"""Each service, started as its supervisor starts it, refuses a known default secret outside
development mode: one line naming the variable, a non-zero exit, nothing started."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRST_SECRET = {
    "svc_rooms": "API_TOKEN",
    "svc_janus": "ADMIN_SECRET",
    "svc_mixer": "HLS_KEY_SECRET",
    "svc_users": "API_TOKEN",
    "svc_gateway": "JWT_SECRET",
}


def _start(service: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", service],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("service", sorted(FIRST_SECRET))
@pytest.mark.parametrize("mode", [{}, {"APP_ENV": "production"}])
def test_a_service_refuses_its_default_secret_outside_development(service: str, mode: dict[str, str]) -> None:
    proc = _start(service, mode)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"{service}: config error: {FIRST_SECRET[service]} is left at its known development default: "
        "set it (or APP_ENV=development for a development setup)"
    ]
