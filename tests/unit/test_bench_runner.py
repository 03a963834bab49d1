"""The bench runner: goal evaluation, merging into the flat results file, skipping missing groups."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.bench.__main__ import main
from tests.bench.runner import (
    Group,
    Row,
    compare_table,
    format_table,
    goal_met,
    load_group,
    merge_results,
    run_groups,
)


@pytest.mark.parametrize(
    ("value", "goal", "met"),
    [
        (10, "<= 10", True),
        (10.5, "<= 10", False),
        (100_000, ">= 100000", True),
        (99_999, ">= 1e5", False),
        (3, "< 3 ms", False),
        (4, "> 3", True),
        (2, "== 2", True),
        (1, "fast enough", None),
        (1, "<= ten", None),
        (1, "<=", None),
    ],
)
def test_goal_met(value: float, goal: str, met: bool | None) -> None:
    assert goal_met(value, goal) is met


def test_merge_creates_then_merges_flat_object(tmp_path: Path) -> None:
    path = tmp_path / "bench" / "results" / "latest.json"
    merge_results(path, {"a_ms": 1.5, "b": 2})
    merged = merge_results(path, {"b": 3, "c": 4})
    assert merged == {"a_ms": 1.5, "b": 3.0, "c": 4.0}
    assert json.loads(path.read_text()) == {"a_ms": 1.5, "b": 3, "c": 4}
    assert [p.name for p in path.parent.iterdir()] == ["latest.json"]  # no temp file left


def _group(goals: Mapping[str, str], figures: object) -> Group:
    async def run() -> object:
        return figures

    return SimpleNamespace(GOALS=goals, run=run)  # duck-typed like a group module


async def test_run_groups_skips_missing_and_reports_goals(tmp_path: Path) -> None:
    path = tmp_path / "latest.json"
    path.write_text(json.dumps({"old_metric": 7}))
    groups = {"core": _group({"lat_ms": "<= 1", "rate": ">= 100"}, {"lat_ms": 2.0, "rate": 150, "extra": 1})}
    lines: list[str] = []
    rows, failed = await run_groups(["core", "rooms"], path, groups.get, lines.append)
    assert failed == []
    assert rows == [
        Row("lat_ms", 2.0, "<= 1", False),
        Row("rate", 150.0, ">= 100", True),
        Row("extra", 1.0, "", None),
    ]
    assert any("rooms: skipped" in line for line in lines)
    assert json.loads(path.read_text()) == {"extra": 1, "lat_ms": 2.0, "old_metric": 7, "rate": 150}
    table = format_table(rows)
    assert table.splitlines()[0].split() == ["METRIC", "VALUE", "GOAL", "MET"]
    assert table.splitlines()[1].split() == ["lat_ms", "2", "<=", "1", "NO"]


async def test_a_broken_group_fails_alone(tmp_path: Path) -> None:
    path = tmp_path / "latest.json"
    groups = {"core": _group({}, {"x": float("nan")}), "mixer": _group({}, {"y": 1}), "e2e": _group({}, [1])}
    rows, failed = await run_groups(["core", "mixer", "e2e"], path, groups.get, lambda _: None)
    assert failed == ["core", "e2e"]
    assert rows == [Row("y", 1.0, "", None)]
    assert json.loads(path.read_text()) == {"y": 1}


def test_load_group_missing_is_none() -> None:
    assert load_group("does_not_exist") is None


def test_main_with_no_groups_present_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "latest.json"
    assert main(["e2e", "--results", str(path)]) == 0
    assert "skipped" in capsys.readouterr().out
    assert not path.exists()
    assert main(["nope", "--results", str(path)]) == 2


def test_baseline_save_and_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latest.json"
    assert main(["--compare", "--results", str(path)]) == 1
    merge_results(path, {"rate": 100})
    assert main(["--save-baseline", "--results", str(path)]) == 0
    merge_results(path, {"rate": 150, "new": 1})
    capsys.readouterr()
    assert main(["--compare", "--results", str(path)]) == 0
    out = capsys.readouterr().out
    assert "+50.0 %" in out
    assert out == compare_table({"rate": 100}, {"rate": 150, "new": 1}) + "\n"
