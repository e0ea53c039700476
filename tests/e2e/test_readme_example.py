"""The README's library example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "## Library"


def library_example(text: str) -> str | None:
    """The first ```python block after the `## Library` heading, verbatim."""
    start = re.search(rf"^{re.escape(HEADING)}\s*$", text, re.MULTILINE)
    if start is None:
        return None
    block = re.search(r"^```python\n(.*?)^```\s*$", text[start.end() :], re.MULTILINE | re.DOTALL)
    return block.group(1) if block else None


def test_library_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = library_example(README.read_text(encoding="utf-8"))
    if code is None:
        pytest.fail(f"{README}: no ```python block after a '{HEADING}' heading to run")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CUSTATE_STORE", raising=False)
    exec(compile(code, f"{README.name} ({HEADING})", "exec"), {"__name__": "__readme__"})


def test_the_extractor_finds_only_the_library_block() -> None:
    text = (
        "# x\n```python\nwrong = 1\n```\n## Library\n\nSome words.\n\n```python\nright = 2\n```\n"
    )
    assert library_example(text) == "right = 2\n"
    assert library_example("# x\n## Library\nno code\n") is None
    assert library_example("# x\n```python\nx = 1\n```\n") is None
