"""The repository stands on its own: no file points outside it, every relative doc link resolves.

- No tracked text file mentions the team's private workspace (the patterns are spelled in two
  pieces below so this file does not match itself).
- Every relative markdown link ``[text](path)`` in README.md and docs/*.md names a file or
  directory that exists inside the repository (``#anchor`` parts are not checked).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = ("../" + "shared", "shared" + "/design")

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
_LINK = re.compile(r"\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'][^)]*[\"'])?\s*\)")
_EXTERNAL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")  # http:, https:, mailto:, //host


def tracked_files() -> list[Path]:
    """Every file git tracks, as absolute paths (skips the test outside a git checkout)."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    result = subprocess.run([git, "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False, timeout=30)
    if result.returncode != 0:
        pytest.skip(f"not a git checkout: {result.stderr.decode(errors='replace').strip()}")
    return [ROOT / name for name in result.stdout.decode().split("\0") if name]


def text_of(path: Path) -> str | None:
    """The file's text, or None for a binary (a NUL byte) or a file deleted in the worktree."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    if b"\0" in data[:8192]:
        return None
    return data.decode("utf-8", errors="replace")


def forbidden_mentions(files: list[Path], root: Path = ROOT) -> list[str]:
    """``path:line: text`` for every line of ``files`` that mentions a forbidden pattern."""
    found = []
    for path in files:
        text = text_of(path)
        if text is None:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            if any(p in line for p in FORBIDDEN):
                found.append(f"{path.relative_to(root)}:{lineno}: {line.strip()}")
    return found


def relative_links(markdown: str) -> list[str]:
    """The link targets of ``markdown`` that are relative paths, code blocks and spans left out."""
    prose = _CODE_SPAN.sub("", _FENCE.sub("", markdown))
    targets = []
    for target in _LINK.findall(prose):
        if not target or target.startswith("#") or _EXTERNAL.match(target):
            continue
        targets.append(target)
    return targets


def broken_links(doc: Path, root: Path = ROOT) -> list[str]:
    """``doc: target`` for every relative link of ``doc`` that does not resolve inside ``root``."""
    broken = []
    for target in relative_links(doc.read_text(encoding="utf-8")):
        path_part = target.split("#", 1)[0].split("?", 1)[0]
        resolved = (doc.parent / path_part).resolve()
        if not resolved.is_relative_to(root.resolve()) or not resolved.exists():
            broken.append(f"{doc.relative_to(root)}: {target}")
    return broken


def markdown_docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_no_tracked_file_points_at_the_private_workspace() -> None:
    found = forbidden_mentions(tracked_files())
    assert not found, "files refer to the private workspace outside the repository:\n" + "\n".join(found)


def test_every_relative_doc_link_resolves() -> None:
    docs = markdown_docs()
    assert len(docs) > 1 and all(d.is_file() for d in docs)
    broken = [b for doc in docs for b in broken_links(doc)]
    assert not broken, "links to files that are not in the repository:\n" + "\n".join(broken)


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """The helpers catch a missing file, a link out of the root and a mention of the workspace."""
    assert relative_links("[a](x.md#s) [b](https://e.org/y) [c](#top) `[d](no.md)`") == ["x.md#s"]
    assert relative_links('```\n[e](fenced.md)\n```\n[f](<spaced.md> "title")') == ["spaced.md"]

    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "README.md").write_text("[ok](docs/a.md#part) [dir](docs/)\n")
    (root / "docs" / "a.md").write_text("[up](../README.md) [gone](missing.md) [out](../../x.md)\n")
    (tmp_path / "x.md").write_text("outside the root\n")
    assert broken_links(root / "README.md", root) == []
    assert broken_links(root / "docs" / "a.md", root) == ["docs/a.md: missing.md", "docs/a.md: ../../x.md"]

    leaky = root / "leaky.py"
    leaky.write_text('"""See ' + FORBIDDEN[0] + '/design/notes.md."""\n')
    (root / "blob.bin").write_bytes(b"\0" + FORBIDDEN[1].encode())
    assert forbidden_mentions([leaky, root / "blob.bin", root / "README.md"], root) == [
        'leaky.py:1: """See ' + FORBIDDEN[0] + '/design/notes.md."""'
    ]
