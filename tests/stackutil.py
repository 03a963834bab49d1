"""A stack of infra/stack.py in a temporary RUN_DIR on free ports, for tests.

Every port setting of the stack (the base servers and every component in infra/components/)
gets a free port, and the UDP ranges get a random base, so these stacks never collide with a
running `just up` stack or with each other.
"""

from __future__ import annotations

import importlib.util
import os
import random
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import pytest

from tests.servers import free_port

__all__ = ["COMPONENTS", "STACK", "Stack", "shutdown_problems", "stack", "stop_sequence"]

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "infra" / "stack.py"
CMD_TIMEOUT_S = 120.0


def _load_stack() -> ModuleType:
    spec = importlib.util.spec_from_file_location("infra_stack", STACK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


stack = _load_stack()
COMPONENTS = tuple(c.name for c in stack.COMPONENTS)
# TCP ports given to the stacks of this test session (never given twice)
_HANDED_OUT: set[int] = set()


class Stack:
    """One stack: its env (run dir and ports) and the stack tool run as a subprocess."""

    def __init__(self, run_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.run_dir = run_dir
        names = [k for k in stack.DEFAULTS if k.endswith("_PORT") and k != "SUPERVISOR_PORT"]
        taken: set[int] = set()
        # The OS may hand out a port it just freed twice, also to the next stack of this session
        # (seen once: two stacks given the same port, the second `up` refused it).
        while len(taken) < len(names):
            port = free_port()
            if port not in _HANDED_OUT:
                taken.add(port)
        _HANDED_OUT.update(taken)
        ports = {name: str(port) for name, port in zip(names, sorted(taken), strict=True)}
        udp = random.Random().randrange(21000, 59000, 1000)  # room for this stack's UDP ranges
        self.env = {
            **os.environ,
            **ports,
            "RUN_DIR": str(run_dir),
            "SUPERVISOR_PORT": "",
            "UP_TIMEOUT_S": "60",
            "JANUS_RTP_PORT_RANGE": f"{udp}-{udp + 199}",
            "JANUS_AB_RTP_PORT_RANGE": f"{udp + 200}-{udp + 399}",
            "MIXER_RTP_PORT_START": str(udp + 400),
            "MIXER_RTP_PORT_END": str(udp + 800),
            **(env or {}),  # e.g. JANUS_ICE_ENFORCE_LIST for the WebRTC tests
        }
        self.settings = stack.Settings.from_env(self.env)
        self.seen_pids: set[int] = set()

    def port(self, name: str) -> int:
        return int(self.env[name])

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # --no-install: `just test` installed already, and concurrent pip runs would race
        argv = [sys.executable, str(STACK), *args]
        proc = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=CMD_TIMEOUT_S, check=False
        )
        if check and proc.returncode != 0:
            pytest.fail(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def up(self) -> subprocess.CompletedProcess[str]:
        out = self.run("up", "--no-install")
        self.pids()
        return out

    def pids(self) -> dict[str, int]:
        """Pids as supervisord reports them, plus supervisord's own."""
        infos = stack.process_infos(self.settings)
        pids = {name: int(info["pid"]) for name, info in infos.items() if info["statename"] == "RUNNING"}
        sv = stack.supervisord_pid(self.settings)
        if sv:
            pids["supervisord"] = sv
        self.seen_pids.update(pids.values())
        return pids

    def down(self) -> None:
        self.run("down")

    def cleanup(self) -> None:
        """Last resort for a failed test: down, then kill by pid whatever this stack started."""
        self.run("down", check=False)
        for pid in self.seen_pids:
            if stack.pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


PROBLEM_LEVELS = ("WARNING", "ERROR", "CRITICAL")


def shutdown_problems(run_dir: Path) -> dict[str, list[str]]:
    """Per service log: the warning, error and traceback lines written after its SIGTERM arrived.

    A clean stop (services before the servers they use) writes none: no failed heartbeat revoke,
    no NATS drain cut short, no connection reset.
    """
    found: dict[str, list[str]] = {}
    for log in sorted((run_dir / "logs").glob("svc_*.log")):
        text = log.read_text(errors="replace")
        assert "SIGTERM received" in text, f"{log.name}: the service never saw its SIGTERM"
        after = text.rsplit("SIGTERM received", 1)[1].splitlines()[1:]
        bad = [
            line
            for line in after
            if "Traceback" in line or (len(line.split()) > 1 and line.split()[1] in PROBLEM_LEVELS)
        ]
        if bad:
            found[log.stem] = bad
    return found


def stop_sequence(run_dir: Path) -> list[str]:
    """Program names in the order supervisord logged them stopped."""
    lines = (run_dir / "logs" / "supervisord.log").read_text().splitlines()
    return [line.split("stopped: ", 1)[1].split()[0] for line in lines if "stopped: " in line]
