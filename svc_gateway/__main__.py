"""`python -m svc_gateway`: Config.from_env() -> logging -> run main() to a graceful stop.

The service itself is built by a later issue; for now main only says so and waits for a signal.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from common.lifecycle import run_cli
from svc_gateway.config import Config

__all__ = ["main"]

logger = logging.getLogger("svc_gateway")


async def main(config: Config, stop: asyncio.Event) -> None:
    logger.info("svc_gateway started: no capabilities yet (built by a later issue)")
    await stop.wait()


if __name__ == "__main__":
    sys.exit(run_cli("svc_gateway", Config.from_env, main))
