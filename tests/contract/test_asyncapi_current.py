"""The committed docs/asyncapi.yaml is what the contracts generate now (run `just asyncapi`)."""

from __future__ import annotations

from pathlib import Path

import yaml

from common.contracts.asyncapi import main, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"


def test_committed_asyncapi_is_current() -> None:
    committed = DOC.read_text(encoding="utf-8")
    assert committed == render(), (
        "docs/asyncapi.yaml is stale: run `just asyncapi` "
        "(python -m common.contracts.asyncapi --out docs/asyncapi.yaml) and commit it"
    )


def test_cli_writes_the_same_document(tmp_path: Path) -> None:
    out = tmp_path / "docs" / "asyncapi.yaml"
    assert main(["--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == render()
    assert yaml.safe_load(out.read_text(encoding="utf-8"))["asyncapi"] == "3.0.0"
