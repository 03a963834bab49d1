"""`python -m svc_rooms`: Config.from_env() -> logging -> run main() to a graceful stop."""

from __future__ import annotations

import sys

from common.lifecycle import run_cli
from svc_rooms.app import main
from svc_rooms.config import Config

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(run_cli("svc_rooms", Config.from_env, main))
