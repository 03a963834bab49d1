"""`python -m svc_janus`: Config.from_env() -> logging -> run main() to a graceful stop."""

from __future__ import annotations

import sys

from common.lifecycle import run_cli
from svc_janus.app import main
from svc_janus.config import Config

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(run_cli("svc_janus", Config.from_env, main))
