"""common.lifecycle: signals set the stop event, stacks unwind in reverse, timeouts cut, exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator

import attrs
import pytest

from common import lifecycle
from common.config import AppSettings, ConfigError
from common.errors import Unavailable
from common.lifecycle import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_SHUTDOWN_CUT,
    run_cli,
    run_service,
    run_until_stopped,
    signal_handlers,
)
from common.logging import teardown_logging

WAIT_S = 5.0  # generous: only bounds a hang, never asserts speed


@pytest.fixture(autouse=True)
def _short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle, "CANCEL_GRACE_S", 0.5)


# -- signals ---------------------------------------------------------------------------------


async def test_sigterm_sets_stop_event() -> None:
    stop = asyncio.Event()
    before = signal.getsignal(signal.SIGTERM)
    with signal_handlers(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), WAIT_S)
    assert signal.getsignal(signal.SIGTERM) == before


async def test_sigint_sets_stop_event() -> None:
    stop = asyncio.Event()
    with signal_handlers(stop):
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(stop.wait(), WAIT_S)


async def test_second_signal_forces_exit() -> None:
    stop = asyncio.Event()
    forced: list[int] = []
    got_forced = asyncio.Event()

    def force(code: int) -> None:
        forced.append(code)
        got_forced.set()

    with signal_handlers(stop, force_exit=force):
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), WAIT_S)
        assert forced == []
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.wait_for(got_forced.wait(), WAIT_S)
    assert forced == [128 + signal.SIGINT]


async def test_run_until_stopped_with_signals() -> None:
    async def main(config: None, stop: asyncio.Event) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        await stop.wait()

    code = await asyncio.wait_for(
        run_until_stopped(main, None, shutdown_timeout_s=WAIT_S, handle_signals=True), WAIT_S
    )
    assert code == EXIT_OK


# -- shutdown order and bounds ---------------------------------------------------------------


def recorder(
    events: list[str], name: str, *, exit_sleep_s: float = 0.0
) -> contextlib.AbstractAsyncContextManager[None]:
    @contextlib.asynccontextmanager
    async def cm() -> AsyncIterator[None]:
        events.append(f"enter {name}")
        try:
            yield
        finally:
            if exit_sleep_s:
                try:
                    await asyncio.sleep(exit_sleep_s)
                except asyncio.CancelledError:
                    events.append(f"cut {name}")
                    raise
            events.append(f"exit {name}")

    return cm()


async def test_exit_stack_unwinds_in_reverse_after_stop() -> None:
    events: list[str] = []
    stop = asyncio.Event()
    running = asyncio.Event()

    async def main(config: str, stop: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as stack:
            for name in ("etcd", "nats", "reconciler"):
                await stack.enter_async_context(recorder(events, name))
            events.append(f"running {config}")
            running.set()
            await stop.wait()

    task = asyncio.create_task(run_until_stopped(main, "cfg", shutdown_timeout_s=WAIT_S, stop=stop))
    await asyncio.wait_for(running.wait(), WAIT_S)
    await asyncio.sleep(0.01)
    assert not task.done()  # it waits for the stop event, not for the stack
    stop.set()
    assert await asyncio.wait_for(task, WAIT_S) == EXIT_OK
    assert events == [
        "enter etcd",
        "enter nats",
        "enter reconciler",
        "running cfg",
        "exit reconciler",
        "exit nats",
        "exit etcd",
    ]


async def test_in_flight_work_within_timeout_finishes() -> None:
    events: list[str] = []
    stop = asyncio.Event()
    stop.set()

    async def main(config: None, stop: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(recorder(events, "bus", exit_sleep_s=0.01))
            await stop.wait()

    assert await run_until_stopped(main, None, shutdown_timeout_s=WAIT_S, stop=stop) == EXIT_OK
    assert events == ["enter bus", "exit bus"]


async def test_timeout_cuts_hung_cleanup(caplog: pytest.LogCaptureFixture) -> None:
    events: list[str] = []
    stop = asyncio.Event()
    stop.set()

    async def main(config: None, stop: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(recorder(events, "etcd"))
            await stack.enter_async_context(recorder(events, "hung", exit_sleep_s=3600))
            await stop.wait()

    with caplog.at_level(logging.INFO, logger="common.lifecycle"):
        code = await asyncio.wait_for(
            run_until_stopped(main, None, shutdown_timeout_s=0.05, stop=stop), WAIT_S
        )
    assert code == EXIT_SHUTDOWN_CUT
    # the hung step was cut, and the steps below it still ran their cleanup
    assert events == ["enter etcd", "enter hung", "cut hung", "exit etcd"]
    cut = [r for r in caplog.records if "shutdown timeout" in r.getMessage()]
    assert len(cut) == 1
    assert cut[0].levelno == logging.WARNING
    assert "main" in cut[0].getMessage()  # names what was pending


async def test_main_ignoring_cancellation_is_abandoned(caplog: pytest.LogCaptureFixture) -> None:
    stop = asyncio.Event()
    stop.set()
    release = asyncio.Event()

    async def main(config: None, stop: asyncio.Event) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await release.wait()  # a cleanup that swallows the first cancel

    code = await asyncio.wait_for(run_until_stopped(main, None, shutdown_timeout_s=0.05, stop=stop), WAIT_S)
    assert code == EXIT_SHUTDOWN_CUT
    assert any("abandoning" in r.getMessage() for r in caplog.records)
    release.set()
    await asyncio.sleep(0)


async def test_main_failure_is_logged_and_exit_is_nonzero(caplog: pytest.LogCaptureFixture) -> None:
    async def main(config: None, stop: asyncio.Event) -> None:
        raise RuntimeError("kaput")

    code = await run_until_stopped(main, None, shutdown_timeout_s=WAIT_S)
    assert code == EXIT_FAILURE
    (record,) = [r for r in caplog.records if r.name == "common.lifecycle" and r.levelno >= logging.ERROR]
    assert "RuntimeError: kaput" in record.getMessage()
    assert record.exc_info is not None


async def test_app_error_in_main_logged_at_its_level(caplog: pytest.LogCaptureFixture) -> None:
    async def main(config: None, stop: asyncio.Event) -> None:
        raise Unavailable("etcd down")

    assert await run_until_stopped(main, None, shutdown_timeout_s=WAIT_S) == EXIT_FAILURE
    (record,) = [r for r in caplog.records if "etcd down" in r.getMessage()]
    assert record.levelno == logging.WARNING


async def test_failure_during_cleanup_is_nonzero() -> None:
    stop = asyncio.Event()
    stop.set()

    async def main(config: None, stop: asyncio.Event) -> None:
        try:
            await stop.wait()
        finally:
            raise ValueError("revoke failed")

    assert await run_until_stopped(main, None, shutdown_timeout_s=WAIT_S, stop=stop) == EXIT_FAILURE


async def test_main_returning_early_is_ok() -> None:
    async def main(config: None, stop: asyncio.Event) -> None:
        return None

    assert await run_until_stopped(main, None, shutdown_timeout_s=WAIT_S) == EXIT_OK


# -- whole process path, on a fresh event loop -----------------------------------------------


def test_run_service_stops_on_sigterm_and_cuts_hung_cleanup() -> None:
    events: list[str] = []

    async def main(config: None, stop: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(recorder(events, "hung", exit_sleep_s=3600))
            asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)
            await stop.wait()

    assert run_service(main, None, shutdown_timeout_s=0.05) == EXIT_SHUTDOWN_CUT
    assert events == ["enter hung", "cut hung"]


@attrs.frozen
class _Cfg:
    app: AppSettings = attrs.field(factory=AppSettings)


def test_run_cli_clean_stop(capsys: pytest.CaptureFixture[str]) -> None:
    async def main(config: _Cfg, stop: asyncio.Event) -> None:
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGINT)
        await stop.wait()

    try:
        assert run_cli("svc_t", _Cfg, main) == EXIT_OK
    finally:
        teardown_logging()
    assert "SIGINT received: stopping" in capsys.readouterr().err


def test_run_cli_config_error_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def load() -> _Cfg:
        raise ConfigError("ETCD_DIAL_TIMEOUT='x': expected a duration")

    async def main(config: _Cfg, stop: asyncio.Event) -> None:
        raise AssertionError("must not run")

    assert run_cli("svc_t", load, main) == EXIT_CONFIG
    assert capsys.readouterr().err == "svc_t: config error: ETCD_DIAL_TIMEOUT='x': expected a duration\n"


def test_module_exports_exist() -> None:
    assert all(hasattr(lifecycle, name) for name in lifecycle.__all__)
