"""KeyedScheduler: every rule of issue 3 item 5, timed with a FakeClock (no I/O, no real sleeps)."""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import math
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from common.backoff import backoff_delay
from common.errors import InvalidInput, Unavailable
from common.scheduler import FakeClock, KeyedScheduler, SchedulerClosed, SchedulerStats


class Recorder:
    """Handler that records ``(key, now)`` per run; keys in ``failing`` raise, keys in ``gates`` block."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, float]] = []
        self.failing: dict[str, BaseException] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.active: set[str] = set()
        self.max_active = 0
        self.overlaps: list[str] = []
        self.finished: list[str] = []
        self.cancelled: list[str] = []

    async def __call__(self, key: str) -> None:
        if key in self.active:
            self.overlaps.append(key)
        self.active.add(key)
        self.max_active = max(self.max_active, len(self.active))
        self.calls.append((key, self.clock.now()))
        try:
            gate = self.gates.get(key)
            if gate is not None:
                await gate.wait()
            exc = self.failing.get(key)
            if exc is not None:
                raise copy.copy(exc)  # a fresh instance: no traceback piled up across runs
            self.finished.append(key)
        except asyncio.CancelledError:
            self.cancelled.append(key)
            raise
        finally:
            self.active.discard(key)

    def times(self, key: str) -> list[float]:
        return [t for k, t in self.calls if k == key]

    def keys(self) -> list[str]:
        return [k for k, _ in self.calls]


def make(workers: int = 8, name: str = "test") -> tuple[KeyedScheduler, FakeClock, Recorder]:
    clock = FakeClock()
    rec = Recorder(clock)
    sched = KeyedScheduler(rec, workers=workers, clock=clock, name=name)
    return sched, clock, rec


def diffs(times: Iterable[float]) -> list[float]:
    ts = list(times)
    return [b - a for a, b in itertools.pairwise(ts)]


# -- backoff ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "delay_s"),
    [
        (-1, 0.1),
        (0, 0.1),
        (1, 0.2),
        (2, 0.4),
        (3, 0.8),
        (4, 1.6),
        (6, 6.4),
        (7, 10.0),
        (10, 10.0),
        (20, 10.0),
        (1023, 10.0),
        (1024, 10.0),
        (10**9, 10.0),
    ],
)
def test_next_delay_doubles_from_100ms_and_caps_at_10s(attempt: int, delay_s: float) -> None:
    sched = KeyedScheduler(Recorder(FakeClock()), clock=FakeClock())
    assert sched.next_delay(attempt) == pytest.approx(delay_s)
    assert backoff_delay(attempt) == pytest.approx(delay_s)


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(InvalidInput):
        KeyedScheduler(Recorder(FakeClock()), clock=FakeClock(), workers=0)


# -- ordering and dedup -----------------------------------------------------------------------


async def test_keys_fire_in_due_time_order_at_their_due_time() -> None:
    sched, clock, rec = make()
    await sched.start()
    sched.enqueue("c", 3.0)
    sched.enqueue("a", 1.0)
    sched.enqueue("b", 2.0)
    sched.enqueue("now")
    await clock.advance(0.0)
    assert rec.calls == [("now", 0.0)]
    await clock.advance(0.999)
    assert rec.keys() == ["now"]
    await clock.advance(10.0)
    assert rec.calls == [("now", 0.0), ("a", 1.0), ("b", 2.0), ("c", 3.0)]
    assert len(sched) == 0
    await sched.close()


async def test_keys_due_at_the_same_time_all_fire_in_insertion_order() -> None:
    sched, clock, rec = make(workers=1)
    await sched.start()
    keys = [f"k{i}" for i in (3, 1, 4, 0, 5, 9, 2, 6, 8, 7)]
    for key in keys:
        sched.enqueue(key, 1.0)
    await clock.advance(1.0)
    assert rec.calls == [(k, 1.0) for k in keys]
    await sched.close()


async def test_earlier_reenqueue_wins() -> None:
    sched, clock, rec = make()
    await sched.start()
    sched.enqueue("a", 5.0)
    sched.enqueue("a", 2.0)
    assert len(sched) == 1
    await clock.advance(10.0)
    assert rec.calls == [("a", 2.0)]
    await sched.close()


async def test_later_reenqueue_is_ignored() -> None:
    sched, clock, rec = make()
    await sched.start()
    sched.enqueue("a", 2.0)
    await clock.advance(1.0)
    sched.enqueue("a", 5.0)  # due at 6.0: later than 2.0, ignored
    sched.enqueue("a", 1.0)  # due at 2.0: not earlier, ignored
    assert len(sched) == 1
    await clock.advance(10.0)
    assert rec.calls == [("a", 2.0)]
    await sched.close()


async def test_negative_and_nan_delays_mean_now() -> None:
    sched, clock, rec = make()
    await sched.start()
    await clock.advance(1.0)
    sched.enqueue("neg", -5.0)
    sched.enqueue("nan", math.nan)
    await clock.advance(0.0)
    assert sorted(rec.calls) == [("nan", 1.0), ("neg", 1.0)]
    await sched.close()


async def test_keys_enqueued_before_start_wait_for_start() -> None:
    sched, clock, rec = make()
    sched.enqueue("a")
    sched.enqueue("b", 1.0)
    await clock.advance(0.5)
    assert rec.calls == []
    await sched.start()
    await sched.start()  # idempotent
    await clock.settle()
    assert rec.calls == [("a", 0.5)]
    await clock.advance(1.0)
    assert rec.calls == [("a", 0.5), ("b", 1.0)]
    await sched.close()


# -- failures and backoff ---------------------------------------------------------------------


async def test_failures_retry_with_doubling_backoff_capped_at_10s() -> None:
    sched, clock, rec = make()
    rec.failing["a"] = RuntimeError("boom")
    await sched.start()
    sched.enqueue("a")
    await clock.advance(60.0)
    expected = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0, 10.0]
    assert diffs(rec.times("a")) == pytest.approx(expected)
    stats = sched.stats()
    assert stats.failures == len(expected) + 1
    assert stats.retries == len(expected) + 1  # the last retry is still pending
    assert sched.pending("a")
    await sched.close()


async def test_failure_is_logged_with_key_and_attempt(caplog: pytest.LogCaptureFixture) -> None:
    sched, clock, rec = make()
    rec.failing["bug"] = RuntimeError("boom")
    rec.failing["down"] = Unavailable("etcd down")
    await sched.start()
    with caplog.at_level(logging.DEBUG, logger="common.scheduler"):
        sched.enqueue("bug")
        sched.enqueue("down")
        await clock.advance(0.15)
    failures = [r for r in caplog.records if "reconcile failed" in r.getMessage()]
    bug = [r for r in failures if r.fields["key"] == "bug"]  # type: ignore[attr-defined]
    down = [r for r in failures if r.fields["key"] == "down"]  # type: ignore[attr-defined]
    assert [r.fields["attempt"] for r in bug] == [0, 1]  # type: ignore[attr-defined]
    assert all(r.levelno == logging.ERROR and r.exc_info for r in bug)
    assert [r.fields["attempt"] for r in down] == [0, 1]  # type: ignore[attr-defined]
    assert all(r.levelno == logging.WARNING and not r.exc_info for r in down)
    await sched.close()


async def test_fresh_event_resets_attempts_and_replaces_pending_retry() -> None:
    sched, clock, rec = make()
    rec.failing["a"] = RuntimeError("boom")
    await sched.start()
    sched.enqueue("a")
    await clock.advance(0.5)  # runs at 0, 0.1, 0.3; next retry due at 0.7 (attempt 3)
    assert rec.times("a") == pytest.approx([0.0, 0.1, 0.3])
    assert sched.attempts("a") == 3
    sched.enqueue("a")  # event at 0.5: earlier than the 0.7 retry, attempt count back to 0
    assert sched.attempts("a") == 0
    await clock.advance(0.25)
    # 0.5 (event), then 0.6 = 0.5 + 100 ms; the 0.7 retry is gone (next is 0.8 = 0.6 + 200 ms)
    assert rec.times("a") == pytest.approx([0.0, 0.1, 0.3, 0.5, 0.6])
    await clock.advance(0.1)
    assert rec.times("a") == pytest.approx([0.0, 0.1, 0.3, 0.5, 0.6, 0.8])
    await sched.close()


async def test_success_clears_attempts() -> None:
    sched, clock, rec = make()
    rec.failing["a"] = RuntimeError("boom")
    await sched.start()
    sched.enqueue("a")
    await clock.advance(0.2)  # fails at 0 and 0.1; retry due at 0.3
    assert sched.attempts("a") == 2
    del rec.failing["a"]
    await clock.advance(0.2)  # succeeds at 0.3
    assert rec.finished == ["a"]
    assert sched.attempts("a") == 0
    assert not sched.pending("a")
    rec.failing["a"] = RuntimeError("boom again")
    sched.enqueue("a", 1.0)  # due 1.4, fails; retry after 100 ms, not 400 ms
    await clock.advance(1.2)
    assert rec.times("a") == pytest.approx([0.0, 0.1, 0.3, 1.4, 1.5])
    await sched.close()


async def test_failing_handler_does_not_stop_others() -> None:
    sched, clock, rec = make(workers=1)
    rec.failing["bad"] = ValueError("always")
    await sched.start()
    sched.enqueue("bad")
    sched.enqueue("good1")
    sched.enqueue("good2", 0.05)
    await clock.advance(1.0)
    assert rec.finished == ["good1", "good2"]
    assert rec.times("bad") == pytest.approx([0.0, 0.1, 0.3, 0.7])
    await sched.close()


async def test_a_handler_ending_in_cancelled_error_is_a_failure_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Something inside the handler was cancelled (not the scheduler's close): the key's work is
    # not done, so it must not be dropped silently.
    sched, clock, rec = make()
    rec.failing["a"] = asyncio.CancelledError()
    await sched.start()
    with caplog.at_level(logging.WARNING, logger="common.scheduler"):
        sched.enqueue("a")
        await clock.advance(0.35)
    assert rec.times("a") == pytest.approx([0.0, 0.1, 0.3])
    assert rec.cancelled == ["a", "a", "a"]
    stats = sched.stats()
    assert (stats.failures, stats.retries, sched.attempts("a")) == (3, 3, 3)
    assert "RunCancelled" in caplog.text
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 3
    del rec.failing["a"]
    await clock.advance(1.0)
    assert rec.finished == ["a"] and sched.attempts("a") == 0
    await sched.close()


async def test_a_run_task_cancelled_from_outside_is_retried_too() -> None:
    sched, clock, rec = make()
    rec.gates["a"] = asyncio.Event()
    await sched.start()
    sched.enqueue("a")
    await clock.settle()
    sched._tasks["a"].cancel()
    await clock.settle()
    assert not sched.is_running("a")
    assert sched.stats().failures == 1 and sched.pending("a")
    rec.gates["a"].set()
    await clock.advance(0.1)
    assert rec.times("a") == pytest.approx([0.0, 0.1])
    assert rec.finished == ["a"]
    await sched.close()


async def test_handlers_cancelled_by_close_are_not_retried() -> None:
    sched, clock, rec = make()
    rec.gates["a"] = asyncio.Event()
    await sched.start()
    sched.enqueue("a")
    await clock.settle()
    await sched.close(timeout_s=0)
    assert rec.cancelled == ["a"]
    assert sched.stats() == SchedulerStats(
        queue_depth=0, running=0, runs=0, failures=0, retries=0, heap_size=0
    )


# -- one run per key at a time ----------------------------------------------------------------


async def test_key_never_runs_twice_at_once_and_gets_exactly_one_extra_run() -> None:
    sched, clock, rec = make()
    rec.gates["a"] = gate = asyncio.Event()
    await sched.start()
    sched.enqueue("a")
    await clock.settle()
    assert sched.is_running("a")
    for _ in range(5):
        sched.enqueue("a")
        await clock.advance(0.1)
    assert rec.times("a") == [0.0]
    assert sched.pending("a")
    assert len(sched) == 1
    gate.set()
    await clock.advance(1.0)
    assert rec.times("a") == pytest.approx([0.0, 0.5])  # the extra run starts when the first ends
    assert rec.overlaps == []
    assert rec.finished == ["a", "a"]
    assert not sched.pending("a")
    await sched.close()


async def test_extra_run_keeps_its_requested_time_and_earliest_wins() -> None:
    sched, clock, rec = make()
    rec.gates["a"] = gate = asyncio.Event()
    await sched.start()
    sched.enqueue("a")
    await clock.settle()
    sched.enqueue("a", 9.0)
    sched.enqueue("a", 5.0)  # earlier: wins
    sched.enqueue("a", 7.0)  # later: ignored
    await clock.advance(1.0)
    gate.set()
    await clock.advance(3.9)
    assert rec.times("a") == [0.0]
    await clock.advance(10.0)
    assert rec.times("a") == pytest.approx([0.0, 5.0])
    await sched.close()


async def test_failure_with_extra_run_pending_runs_the_event_first() -> None:
    sched, clock, rec = make()
    rec.gates["a"] = gate = asyncio.Event()
    rec.failing["a"] = RuntimeError("boom")
    await sched.start()
    sched.enqueue("a")
    await clock.advance(1.0)
    sched.enqueue("a")  # event during the run: due 1.0, earlier than any retry
    await clock.advance(1.0)
    gate.set()  # first run fails at 2.0; the event's run starts then, as a fresh attempt 0
    await clock.advance(0.35)
    assert rec.times("a") == pytest.approx([0.0, 2.0, 2.1, 2.3])
    await sched.close()


async def test_bounded_concurrency_and_every_key_eventually_runs() -> None:
    sched, clock, rec = make(workers=3)
    keys = [f"k{i}" for i in range(10)]
    gates = {k: asyncio.Event() for k in keys}
    rec.gates.update(gates)
    await sched.start()
    for key in keys:
        sched.enqueue(key)
    await clock.settle()
    assert sched.stats().running == 3
    assert len(rec.calls) == 3
    for key in keys:
        gates[key].set()
        await clock.advance(0.01)
    assert sorted(rec.finished) == keys
    assert rec.max_active == 3
    assert sched.stats().runs == 10
    await sched.close()


async def test_bounded_concurrency_with_delayed_keys_waiting_for_a_worker() -> None:
    sched, clock, rec = make(workers=1)
    rec.gates["slow"] = gate = asyncio.Event()
    await sched.start()
    sched.enqueue("slow")
    sched.enqueue("later", 1.0)
    await clock.advance(2.0)
    assert rec.keys() == ["slow"]  # "later" is due but the only worker is busy
    gate.set()
    await clock.settle()
    assert rec.calls == [("slow", 0.0), ("later", 2.0)]
    await sched.close()


# -- cancel / clear ---------------------------------------------------------------------------


async def test_cancel_rearms_to_the_next_item() -> None:
    sched, clock, rec = make()
    await sched.start()
    sched.enqueue("a", 1.0)
    sched.enqueue("b", 2.0)
    assert sched.cancel("a")
    assert not sched.cancel("a")
    assert not sched.cancel("missing")
    await clock.advance(1.5)
    assert rec.calls == []
    await clock.advance(1.0)
    assert rec.calls == [("b", 2.0)]
    await sched.close()


async def test_cancel_of_a_running_key_drops_its_extra_run_only() -> None:
    sched, clock, rec = make()
    rec.gates["a"] = gate = asyncio.Event()
    await sched.start()
    sched.enqueue("a")
    await clock.settle()
    sched.enqueue("a")
    assert sched.cancel("a")
    assert sched.is_running("a")
    gate.set()
    await clock.advance(1.0)
    assert rec.finished == ["a"]
    assert rec.times("a") == [0.0]
    await sched.close()


async def test_clear_drops_everything_pending() -> None:
    sched, clock, rec = make()
    rec.failing["f"] = RuntimeError("boom")
    await sched.start()
    sched.enqueue("f")
    await clock.settle()  # f failed, retry pending
    for i in range(5):
        sched.enqueue(f"k{i}", 1.0 + i)
    assert len(sched) == 6
    sched.clear()
    assert len(sched) == 0
    assert sched.stats().heap_size == 0
    await clock.advance(20.0)
    assert rec.keys() == ["f"]
    sched.enqueue("k0", 1.0)  # still usable after clear
    await clock.advance(1.0)
    assert rec.keys() == ["f", "k0"]
    await sched.close()


async def test_heap_memory_stays_bounded_by_pending_keys() -> None:
    sched, _, _ = make()
    await sched.start()
    for i in range(10_000):
        sched.enqueue("a", 10_000.0 - i)  # each one earlier: replaces the entry
    assert len(sched) == 1
    assert sched.stats().heap_size <= 2 * 1 + 64 + 1
    for i in range(1_000):
        sched.enqueue(f"k{i}", 5.0)
    for i in range(1_000):
        sched.cancel(f"k{i}")
    assert sched.stats().heap_size <= 2 * 1 + 64 + 1
    await sched.close()


# -- close ------------------------------------------------------------------------------------


async def test_close_waits_for_running_handlers_and_drops_pending() -> None:
    sched, clock, rec = make()
    rec.gates["a"] = gate = asyncio.Event()
    await sched.start()
    sched.enqueue("a")
    sched.enqueue("b", 1.0)
    await clock.settle()
    sched.enqueue("a")  # extra run: dropped by close
    closing = asyncio.create_task(sched.close())
    await clock.settle()
    assert sched.is_closed
    assert not closing.done()
    assert sched.is_running("a")
    gate.set()
    await closing
    assert rec.finished == ["a"]
    await clock.advance(5.0)
    assert rec.keys() == ["a"]
    assert len(sched) == 0


async def test_close_cancels_handlers_after_the_timeout() -> None:
    sched, clock, rec = make()
    rec.gates["stuck"] = asyncio.Event()  # never set
    rec.gates["ok"] = ok = asyncio.Event()
    await sched.start()
    sched.enqueue("stuck")
    sched.enqueue("ok")
    await clock.settle()
    ok.set()
    await sched.close(timeout_s=0.01)
    assert rec.finished == ["ok"]
    assert rec.cancelled == ["stuck"]
    assert sched.stats().running == 0
    assert sched.stats().failures == 0


async def test_close_is_idempotent_and_work_after_close_raises() -> None:
    sched, _, _ = make()
    await sched.start()
    await sched.close()
    await sched.close()
    with pytest.raises(SchedulerClosed) as err:
        sched.enqueue("a")
    assert isinstance(err.value, Unavailable)
    assert err.value.fields["key"] == "a"
    with pytest.raises(SchedulerClosed):
        await sched.start()


async def test_concurrent_close_calls_both_wait() -> None:
    sched, clock, rec = make()
    rec.gates["a"] = gate = asyncio.Event()
    await sched.start()
    sched.enqueue("a")
    await clock.settle()
    first = asyncio.create_task(sched.close())
    second = asyncio.create_task(sched.close())
    await clock.settle()
    assert not first.done()
    assert not second.done()
    gate.set()
    await asyncio.gather(first, second)
    assert rec.finished == ["a"]


async def test_failure_during_close_is_not_retried() -> None:
    sched, clock, rec = make()
    rec.gates["a"] = gate = asyncio.Event()
    rec.failing["a"] = RuntimeError("boom")
    await sched.start()
    sched.enqueue("a")
    await clock.settle()
    closing = asyncio.create_task(sched.close())
    await clock.settle()
    gate.set()
    await closing
    assert sched.stats().failures == 1
    assert sched.stats().retries == 0
    assert len(sched) == 0


async def test_async_context_manager_starts_and_closes() -> None:
    clock = FakeClock()
    rec = Recorder(clock)
    async with KeyedScheduler(rec, clock=clock) as sched:
        sched.enqueue("a")
        await clock.settle()
        assert rec.keys() == ["a"]
    assert sched.is_closed


async def test_real_loop_clock_runs_due_keys() -> None:
    done = asyncio.Event()
    seen: list[str] = []

    async def handler(key: str) -> None:
        seen.append(key)
        if len(seen) == 2:
            done.set()

    async with KeyedScheduler(handler, name="test-loop-clock") as sched:
        sched.enqueue("b", 0.05)
        sched.enqueue("a")
        await asyncio.wait_for(done.wait(), timeout=5.0)
    assert seen == ["a", "b"]


# -- metrics ----------------------------------------------------------------------------------


def _sample(metric: str, name: str) -> float:
    value = REGISTRY.get_sample_value(metric, {"scheduler": name})
    return 0.0 if value is None else value


async def test_stats_and_prometheus_metrics_tolerate_duplicate_names() -> None:
    name = "test-metrics"
    runs_before = _sample("rtc_scheduler_runs_total", name)
    failures_before = _sample("rtc_scheduler_failures_total", name)
    retries_before = _sample("rtc_scheduler_retries_total", name)
    first, clock, rec = make(name=name)
    second, _, _ = make(name=name)  # same name: must not raise a duplicate-timeseries error
    rec.failing["bad"] = RuntimeError("boom")
    await first.start()
    first.enqueue("ok")
    first.enqueue("bad")
    first.enqueue("later", 5.0)
    second.enqueue("x", 1.0)
    await clock.settle()
    assert first.stats() == SchedulerStats(
        queue_depth=2, running=0, runs=2, failures=1, retries=1, heap_size=2
    )
    assert _sample("rtc_scheduler_runs_total", name) == runs_before + 2
    assert _sample("rtc_scheduler_failures_total", name) == failures_before + 1
    assert _sample("rtc_scheduler_retries_total", name) == retries_before + 1
    assert _sample("rtc_scheduler_queue_depth", name) == 3  # both live schedulers
    assert _sample("rtc_scheduler_running", name) == 0
    await first.close()
    await second.close()
    assert REGISTRY.get_sample_value("rtc_scheduler_queue_depth", {"scheduler": name}) is None


# -- properties -------------------------------------------------------------------------------

_KEYS = st.sampled_from(["a", "b", "c", "d", "e"])
_DELAYS = st.integers(min_value=0, max_value=8).map(float)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_KEYS, _DELAYS), max_size=40))
def test_each_key_runs_once_at_its_minimum_requested_time(enqueues: list[tuple[str, float]]) -> None:
    async def scenario() -> list[tuple[str, float]]:
        sched, clock, rec = make()
        await sched.start()
        for key, delay_s in enqueues:
            sched.enqueue(key, delay_s)
        await clock.advance(100.0)
        await sched.close()
        return rec.calls

    calls = asyncio.run(scenario())
    want: dict[str, float] = {}
    for key, delay_s in enqueues:
        want[key] = min(delay_s, want.get(key, math.inf))
    assert sorted(calls) == sorted(want.items())
    assert [t for _, t in calls] == sorted(t for _, t in calls)


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("enqueue"), _KEYS, _DELAYS),
        st.tuples(st.just("advance"), st.just(""), st.integers(0, 4).map(float)),
        st.tuples(st.just("cancel"), _KEYS, st.just(0.0)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(_OPS)
def test_dedup_matches_a_model_under_interleaved_time(ops: list[tuple[str, str, float]]) -> None:
    """Against a dict model: one entry per key, earliest wins, fires at its due time, cancel drops."""
    now = 0.0
    model: dict[str, float] = {}
    expected: list[tuple[float, str]] = []
    for op, key, value in ops:
        if op == "enqueue":
            due = now + value
            if key not in model or due < model[key]:
                model[key] = due
        elif op == "cancel":
            model.pop(key, None)
        else:
            now += value
            for k, due in list(model.items()):
                if due <= now:
                    expected.append((due, k))
                    del model[k]
    expected.extend((due, k) for k, due in model.items())

    async def scenario() -> list[tuple[str, float]]:
        sched, clock, rec = make(workers=2)
        await sched.start()
        for op, key, value in ops:
            if op == "enqueue":
                sched.enqueue(key, value)
            elif op == "cancel":
                sched.cancel(key)
            else:
                await clock.advance(value)
        await clock.advance(100.0)
        assert len(sched) == 0
        await sched.close()
        return rec.calls

    calls = asyncio.run(scenario())
    assert sorted((t, k) for k, t in calls) == sorted(expected)
    assert [t for _, t in calls] == sorted(t for _, t in calls)
