"""Graceful shutdown shared by every service (docs/conventions.md, Lifecycle).

A service's ``main(config, stop)`` opens its resources on one ``AsyncExitStack`` and waits for
``stop``. SIGTERM/SIGINT set ``stop``; main then leaves its stack, which exits the context managers
in reverse: components stop taking work and finish what is in flight, leases are revoked, NATS is
drained, etcd closed. That unwinding gets ``APP_SHUTDOWN_TIMEOUT``; when it runs over, main is
cancelled, the cut is logged with the tasks still pending, and the process exits anyway. A second
signal exits at once.

Exit codes: 0 clean stop, 1 main failed (logged with its traceback), 2 bad configuration, 3 the
shutdown was cut by the timeout, 128+signal when a second signal forced the exit.

:func:`run_cli` is the whole of a service's ``__main__``; :func:`run_until_stopped` is the async
core, usable in tests without signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol, TypeAlias, TypeVar

from common.config import AppSettings, ConfigError
from common.errors import log_error
from common.logging import setup_logging

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_SHUTDOWN_CUT",
    "run_cli",
    "run_service",
    "run_until_stopped",
    "signal_handlers",
]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_SHUTDOWN_CUT = 3

# after cancelling, how long main gets to run its except/finally blocks before it is abandoned
CANCEL_GRACE_S = 2.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

C = TypeVar("C")
MainFn: TypeAlias = Callable[[C, asyncio.Event], Awaitable[None]]


def _force_exit(code: int) -> None:
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(code)


@contextlib.contextmanager
def signal_handlers(
    stop: asyncio.Event, *, force_exit: Callable[[int], None] = _force_exit
) -> Iterator[None]:
    """While inside, SIGTERM or SIGINT sets ``stop``; one arriving when ``stop`` is already
    set (a second Ctrl-C, an impatient supervisor) calls ``force_exit(128 + signum)`` (default:
    flush logs, ``os._exit``). Restores the previous handlers on exit. Must be entered from a
    running event loop in the main thread."""
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            logger.warning("%s received while stopping: exiting now", sig.name)
            force_exit(128 + sig.value)
        else:
            logger.info("%s received: stopping", sig.name)
            stop.set()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
            # remove_signal_handler leaves SIG_DFL; put back whatever was there (pytest's, say)
            if previous[sig] is not None:
                signal.signal(sig, previous[sig])


def _pending_tasks() -> str:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    if not tasks:
        return "none"
    out = []
    for task in tasks:
        frames = task.get_stack(limit=1)
        where = f" at {frames[0].f_code.co_filename}:{frames[0].f_lineno}" if frames else ""
        out.append(f"{task.get_name()} ({task.get_coro()!r}{where})")
    return "; ".join(sorted(out))


def _outcome(task: asyncio.Task[None], *, was_cut: bool) -> int:
    if task.cancelled():
        return EXIT_SHUTDOWN_CUT if was_cut else EXIT_FAILURE
    exc = task.exception()
    if exc is not None:
        log_error(logger, exc, "service main failed")
        return EXIT_FAILURE
    return EXIT_SHUTDOWN_CUT if was_cut else EXIT_OK


async def run_until_stopped(
    main: MainFn[C],
    config: C,
    *,
    shutdown_timeout_s: float,
    stop: asyncio.Event | None = None,
    handle_signals: bool = False,
) -> int:
    """Run ``main(config, stop)`` until it returns; once ``stop`` is set, give it
    ``shutdown_timeout_s`` to finish, then cancel it. Returns an exit code (see module doc)."""
    stop = stop if stop is not None else asyncio.Event()
    guard = signal_handlers(stop) if handle_signals else contextlib.nullcontext()
    with guard:
        task: asyncio.Task[None] = asyncio.ensure_future(main(config, stop))
        task.set_name("main")
        stop_wait = asyncio.create_task(stop.wait(), name="stop-wait")
        try:
            await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                if not stop.is_set():
                    logger.info("main returned before a stop was requested")
                return _outcome(task, was_cut=False)
            logger.info("stopping: up to %.1fs for in-flight work and cleanup", shutdown_timeout_s)
            done, _ = await asyncio.wait({task}, timeout=shutdown_timeout_s)
            if done:
                return _outcome(task, was_cut=False)
            logger.warning(
                "shutdown timeout %.1fs exceeded: cancelling what is left: %s",
                shutdown_timeout_s,
                _pending_tasks(),
            )
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=CANCEL_GRACE_S)
            if not done:
                logger.error("main ignored cancellation for %.1fs: abandoning it", CANCEL_GRACE_S)
                return EXIT_SHUTDOWN_CUT
            return _outcome(task, was_cut=True)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            stop_wait.cancel()


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    leftovers = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in leftovers:
        task.cancel()
    if leftovers:
        loop.run_until_complete(asyncio.wait(leftovers, timeout=CANCEL_GRACE_S))
        still = [t.get_name() for t in leftovers if not t.done()]
        if still:
            logger.error("tasks ignoring cancellation at exit: %s", ", ".join(still))
    # both can hang on a stuck generator or thread; bounded so the process still exits
    loop.run_until_complete(
        asyncio.wait({loop.create_task(loop.shutdown_asyncgens())}, timeout=CANCEL_GRACE_S)
    )
    loop.run_until_complete(
        asyncio.wait({loop.create_task(loop.shutdown_default_executor())}, timeout=CANCEL_GRACE_S)
    )
    loop.close()


def run_service(main: MainFn[C], config: C, *, shutdown_timeout_s: float) -> int:
    """Run ``main`` on a new event loop with SIGTERM/SIGINT handled; returns the exit code."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(
            run_until_stopped(main, config, shutdown_timeout_s=shutdown_timeout_s, handle_signals=True)
        )
    finally:
        _close_loop(loop)


class _HasApp(Protocol):
    @property
    def app(self) -> AppSettings: ...


A = TypeVar("A", bound=_HasApp)


def run_cli(service: str, load_config: Callable[[], A], main: MainFn[A]) -> int:
    """A service's ``__main__``: load config (a ConfigError prints one line and gives 2), set up
    logging, run ``main`` to a graceful stop. Returns the exit code for ``sys.exit``."""
    try:
        config = load_config()
        setup_logging(service, config_file=config.app.log_config_file)
    except ConfigError as exc:
        print(f"{service}: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    code = run_service(main, config, shutdown_timeout_s=config.app.shutdown_timeout_s)
    logger.info("%s exiting with code %d", service, code)
    if code == EXIT_SHUTDOWN_CUT:
        # a cut shutdown may leave threads the interpreter would join forever at exit
        _force_exit(code)
    return code
