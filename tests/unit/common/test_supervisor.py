"""Supervised background loops: restarted with backoff whatever ends them (an exception, a
return, a cancel from inside), reported not running until then, never restarted after stop.
Time is a fake sleep the test releases, so nothing waits for real."""

from __future__ import annotations

import asyncio
import logging

import pytest

from common.supervisor import SupervisedTask, Supervisor, TaskDied


class FakeTime:
    """A clock and a sleep that returns only when the test calls ``release()``."""

    def __init__(self) -> None:
        self.now = 0.0
        self.delays: list[float] = []
        self._gate = asyncio.Event()

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay_s: float) -> None:
        self.delays.append(delay_s)
        await self._gate.wait()
        self._gate.clear()
        self.now += delay_s

    def release(self) -> None:
        self._gate.set()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


class Loop:
    """A loop body that fails in the ways listed in ``plan``, one per run, then blocks."""

    def __init__(self, plan: list[str]) -> None:
        self.plan = plan
        self.runs = 0
        self.blocked = asyncio.Event()

    async def __call__(self) -> None:
        self.runs += 1
        step = self.plan.pop(0) if self.plan else "block"
        if step == "raise":
            raise ValueError("bug in the loop")
        if step == "return":
            return
        if step == "cancel":
            raise asyncio.CancelledError  # as a cancelled inner future would surface
        self.blocked.set()
        await asyncio.Event().wait()


async def test_a_dying_loop_is_logged_reported_and_restarted_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeTime()
    body = Loop(["raise", "return", "cancel"])
    task = SupervisedTask("monitor", body, sleep=fake.sleep, clock=fake.clock)
    with caplog.at_level(logging.INFO, logger="common.supervisor"):
        task.start()
        await settle()
        assert not task.is_running  # dead, waiting to restart: /health says so
        assert fake.delays == [0.1]
        for _ in range(3):
            fake.release()
            await settle()
    assert body.blocked.is_set() and task.is_running
    assert body.runs == 4 and task.restarts == 3 and task.failures == 3
    assert fake.delays == pytest.approx([0.1, 0.2, 0.4])
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 3
    assert errors[0].exc_info is not None  # a bug: logged with its traceback
    assert TaskDied.__name__ in errors[1].getMessage() and "returned" in errors[1].getMessage()
    assert "cancelled from inside" in errors[2].getMessage()
    await task.stop()
    assert not task.is_running


async def test_backoff_starts_again_after_a_long_healthy_run() -> None:
    fake = FakeTime()
    runs = 0

    async def body() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            fake.now += 60.0  # this run lasted a minute before it failed
        if runs <= 3:
            raise ValueError("boom")
        await asyncio.Event().wait()

    task = SupervisedTask("loop", body, sleep=fake.sleep, clock=fake.clock)
    task.start()
    for _ in range(3):
        await settle()
        fake.release()
    await settle()
    assert fake.delays == pytest.approx([0.1, 0.2, 0.1])
    assert task.is_running
    await task.stop()


async def test_stop_cancels_without_restart_and_is_final() -> None:
    fake = FakeTime()
    body = Loop([])
    task = SupervisedTask("loop", body, sleep=fake.sleep, clock=fake.clock)
    async with task:
        await settle()
        assert task.is_running
    assert not task.is_running and body.runs == 1 and fake.delays == []
    await task.stop()  # idempotent
    with pytest.raises(RuntimeError):
        task.start()


async def test_stop_during_the_backoff_wait_ends_it() -> None:
    fake = FakeTime()
    task = SupervisedTask("loop", Loop(["raise"]), sleep=fake.sleep, clock=fake.clock)
    task.start()
    await settle()
    await task.stop()
    assert task.restarts == 0 and not task.is_running


async def test_supervisor_reports_each_loop_by_name() -> None:
    fake = FakeTime()
    async with Supervisor(sleep=fake.sleep, clock=fake.clock) as group:
        group.spawn("consume", Loop([]))
        group.spawn("resync", Loop(["raise"]))
        await settle()
        assert group.checks() == {"consume": True, "resync": False}
        assert not group.is_running
        fake.release()
        await settle()
        assert group.checks() == {"consume": True, "resync": True}
        assert group["resync"].restarts == 1
        with pytest.raises(RuntimeError):
            group.spawn("consume", Loop([]))
    assert group.checks() == {"consume": False, "resync": False}
