"""The one retry formula (``backoff_delay``) and the per-loop ``Backoff`` (moved here from heartbeat)."""

from __future__ import annotations

import pytest

from common.backoff import Backoff, backoff_delay


def test_backoff_delay_clamps_huge_attempts_for_any_base() -> None:
    assert backoff_delay(10**9, 1e-300, 5.0) == 5.0
    assert backoff_delay(10**18, 0.5, 2.0) == 2.0
    assert backoff_delay(3, 0.0, 1.0) == 0.0
    assert backoff_delay(2, 1.0, 30.0) == 4.0


def test_backoff_doubles_from_100ms_and_caps_at_10_s() -> None:
    # Was heartbeat's own Backoff (x1.5: 0.1, 0.15, 0.225, 0.3375); now the project's formula.
    b = Backoff(jitter=0.5, rand=lambda lo, hi: 1.0)
    delays = [b.next() for _ in range(14)]
    assert delays[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert delays == pytest.approx([backoff_delay(n) for n in range(14)])
    assert max(delays) == 10.0
    assert delays[-1] == 10.0
    b.reset()
    assert b.next() == pytest.approx(0.1)


def test_backoff_jitter_is_plus_minus_half() -> None:
    seen: list[tuple[float, float]] = []

    def rand(lo: float, hi: float) -> float:
        seen.append((lo, hi))
        return lo

    b = Backoff(jitter=0.5, rand=rand)
    assert b.next() == pytest.approx(0.05)
    assert seen == [(0.5, 1.5)]


def test_backoff_has_no_jitter_unless_asked() -> None:
    def rand(lo: float, hi: float) -> float:
        raise AssertionError("no jitter was asked for")

    b = Backoff(max_s=2.0, rand=rand)
    assert [b.next() for _ in range(7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])


def test_backoff_counts_attempts_and_shows_the_next_delay() -> None:
    b = Backoff(jitter=0.5, rand=lambda lo, hi: hi)
    assert (b.attempt, b.delay_s) == (0, 0.1)
    assert b.next() == pytest.approx(0.15)
    assert (b.attempt, b.delay_s) == (1, 0.2)
    b.reset()
    assert (b.attempt, b.delay_s) == (0, 0.1)
