"""The project's one retry formula: ``100 ms * 2**attempt``, capped at 10 s (docs/architecture.md).

``backoff_delay`` is the formula; the keyed scheduler uses it for failed runs. ``Backoff`` counts
the attempts of one retry loop that cannot go through the scheduler (a connection or a watch
kept open by its owner): ``await asyncio.sleep(backoff.next())`` between tries, ``reset()`` once
the loop made progress. A caller changes the cap only with a reason at the call site;
``jitter`` spreads the waits of many processes that lost the same dependency.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Final

__all__ = ["DEFAULT_MAX_DELAY_S", "Backoff", "backoff_delay"]

DEFAULT_BASE_DELAY_S: Final = 0.1
DEFAULT_MAX_DELAY_S: Final = 10.0


def backoff_delay(
    attempt: int, base_s: float = DEFAULT_BASE_DELAY_S, max_s: float = DEFAULT_MAX_DELAY_S
) -> float:
    """``min(base_s * 2**attempt, max_s)``; huge attempt numbers clamp to ``max_s``.

    ``ldexp`` scales by a power of two exactly and raises ``OverflowError`` instead of building
    a giant int for ``2**10**9``.
    """
    if attempt <= 0:
        return min(base_s, max_s)
    try:
        delay = math.ldexp(base_s, attempt)
    except OverflowError:
        return max_s
    return min(delay, max_s)


class Backoff:
    """The delays of one retry loop: ``backoff_delay(attempt)``, times ``1 +- jitter`` if asked."""

    __slots__ = ("_rand", "attempt", "jitter", "max_s")

    def __init__(
        self,
        *,
        max_s: float = DEFAULT_MAX_DELAY_S,
        jitter: float = 0.0,
        rand: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.max_s = max_s
        self.jitter = jitter
        self._rand = rand
        self.attempt = 0  # failures since the start or the last reset()

    @property
    def delay_s(self) -> float:
        """The delay ``next()`` is based on, before jitter (for logs)."""
        return backoff_delay(self.attempt, max_s=self.max_s)

    def next(self) -> float:
        """The wait before the next try; counts one more attempt."""
        delay = self.delay_s
        self.attempt += 1
        if self.jitter:
            delay *= self._rand(1.0 - self.jitter, 1.0 + self.jitter)
        return delay

    def reset(self) -> None:
        """Start again from the first delay (the loop made progress)."""
        self.attempt = 0
