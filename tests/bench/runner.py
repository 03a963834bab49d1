"""The bench runner behind ``just bench``: run groups, merge figures, print metric/value/goal.

A group is a module ``tests/bench/group_<name>.py`` with::

    GOALS: dict[str, str]                    # metric -> goal, e.g. "<= 10" or ">= 100000"
    async def run() -> dict[str, float]      # metric -> measured value

Each run merges its figures into ``bench/results/latest.json`` (a flat JSON object
``metric: number``, git-ignored), so groups run on different days add up to one picture.
``--save-baseline`` copies it to ``baseline.json``; ``--compare`` prints both side by side.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import operator
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

__all__ = [
    "GROUPS",
    "RESULTS_DIR",
    "Group",
    "Row",
    "compare_table",
    "format_table",
    "goal_met",
    "load_group",
    "merge_results",
    "read_results",
    "run_groups",
]

ROOT = Path(__file__).resolve().parent.parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
# the order `just bench` runs them in when none is named
GROUPS = ("core", "rooms", "mixer", "janus", "gateway", "faults", "e2e")

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
    "==": operator.eq,
}


class Group(Protocol):
    GOALS: Mapping[str, str]

    def run(self) -> Awaitable[Mapping[str, float]]: ...


@dataclass(frozen=True)
class Row:
    metric: str
    value: float
    goal: str
    met: bool | None  # None: no goal, or a goal text the runner cannot evaluate


def goal_met(value: float, goal: str) -> bool | None:
    """Evaluate a goal such as ``"<= 10"`` or ``">= 1e5"`` (units after the number are ignored)."""
    text = goal.strip()
    for sym in sorted(_OPS, key=len, reverse=True):
        if text.startswith(sym):
            parts = text[len(sym) :].split()
            if not parts:
                return None
            try:
                bound = float(parts[0].replace("_", ""))
            except ValueError:
                return None
            return _OPS[sym](value, bound)
    return None


def load_group(name: str, package: str = "tests.bench") -> Group | None:
    """The group module, or None when ``group_<name>.py`` does not exist (errors inside it raise)."""
    module_name = f"{package}.group_{name}"
    if importlib.util.find_spec(module_name) is None:
        return None
    return cast(Group, importlib.import_module(module_name))


def read_results(path: Path) -> dict[str, float]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object")
    return {str(k): float(v) for k, v in data.items()}


def merge_results(path: Path, figures: Mapping[str, float]) -> dict[str, float]:
    """Merge ``figures`` into the flat JSON object at ``path`` (created if missing), atomically."""
    merged = read_results(path)
    merged.update(figures)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(dict(sorted(merged.items())), indent=2) + "\n")
    # a crash mid-write must not lose the figures of earlier runs
    tmp.replace(path)
    return merged


def _check_figures(group: str, figures: Any) -> dict[str, float]:
    if not isinstance(figures, Mapping):
        raise TypeError(f"group {group}: run() returned {type(figures).__name__}, not a dict")
    out: dict[str, float] = {}
    for k, v in figures.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int | float):
            raise TypeError(f"group {group}: figure {k!r}={v!r} is not metric name -> number")
        if not math.isfinite(v):
            raise ValueError(f"group {group}: figure {k} is {v}")
        out[k] = float(v)
    return out


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def _table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows]
    )


def format_table(rows: Iterable[Row]) -> str:
    met = {True: "yes", False: "NO", None: "-"}
    return _table(
        ["METRIC", "VALUE", "GOAL", "MET"],
        [[r.metric, _fmt(r.value), r.goal or "-", met[r.met]] for r in rows],
    )


def compare_table(baseline: Mapping[str, float], latest: Mapping[str, float]) -> str:
    rows = []
    for metric in sorted(set(baseline) | set(latest)):
        old, new = baseline.get(metric), latest.get(metric)
        change = "-"
        if old is not None and new is not None and old != 0:
            change = f"{(new - old) / abs(old) * 100:+.1f} %"
        rows.append([metric, _fmt(old), _fmt(new), change])
    return _table(["METRIC", "BASELINE", "LATEST", "CHANGE"], rows)


async def run_groups(
    names: Iterable[str],
    results_path: Path,
    loader: Callable[[str], Group | None] = load_group,
    echo: Callable[[str], None] = print,
) -> tuple[list[Row], list[str]]:
    """Run the named groups in order; merge each group's figures as soon as it finishes.

    Returns the table rows and the names of the groups that failed. Missing groups are skipped
    with a message; a failing group does not stop the others.
    """
    rows: list[Row] = []
    failed: list[str] = []
    for name in names:
        group = loader(name)
        if group is None:
            echo(f"==> bench {name}: skipped (no tests/bench/group_{name}.py yet)")
            continue
        echo(f"==> bench {name}: running")
        started = time.monotonic()
        try:
            figures = _check_figures(name, await group.run())
        except Exception as exc:  # a broken group is reported, the others still run
            echo(f"==> bench {name}: FAILED: {type(exc).__name__}: {exc}")
            failed.append(name)
            continue
        merge_results(results_path, figures)
        echo(f"==> bench {name}: {len(figures)} figures in {time.monotonic() - started:.1f} s")
        goals = dict(group.GOALS)
        for metric, value in figures.items():
            goal = goals.get(metric, "")
            rows.append(Row(metric, value, goal, goal_met(value, goal) if goal else None))
        for metric in sorted(set(goals) - set(figures)):
            echo(f"==> bench {name}: goal for {metric} but run() did not report it")
    return rows, failed
