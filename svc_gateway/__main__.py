"""`python -m svc_gateway`: Config.from_env() -> logging -> run app.main() to a graceful stop."""

from __future__ import annotations

import sys

from common.lifecycle import run_cli
from svc_gateway.app import main
from svc_gateway.config import Config

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(run_cli("svc_gateway", Config.from_env, main))
