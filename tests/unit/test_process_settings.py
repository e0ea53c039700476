"""Library code never changes settings of the process it runs in (gc thresholds, the GIL
switch interval, signal handlers): only the programs do, for their own process."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTERS = {
    ("gc", "set_threshold"),
    ("gc", "disable"),
    ("gc", "freeze"),
    ("sys", "setswitchinterval"),
    ("sys", "setrecursionlimit"),
    ("signal", "signal"),
}
# Who may, and why.
PROGRAMS = {
    "adapters/cli/app.py": "the custate program's main(), for its own process",
    "adapters/cli/serve.py": "the serve command: this process is the server",
    "adapters/cli/project.py": "project --follow stops on Ctrl-C / SIGTERM",
    "adapters/cli/forward.py": "forward --follow stops on SIGTERM, after the batch in flight",
    "adapters/ingest.py": "parser worker processes ignore Ctrl-C (the parent handles it)",
    # The benchmarks raise the threshold around the library calls they time, with this.
    "adapters/bulk.py": "fewer_collections, a context manager a program enters itself",
}


def _setters(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and (node.func.value.id, node.func.attr) in SETTERS
        ):
            found.append(f"line {node.lineno}: {node.func.value.id}.{node.func.attr}")
    return found


def test_only_programs_change_process_settings() -> None:
    for folder in ("domain", "projections", "adapters", "custate_root"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel not in PROGRAMS:
                assert not _setters(path), f"{rel} changes process settings: {_setters(path)}"


def test_the_check_sees_a_setter() -> None:
    found = _setters(ROOT / "adapters" / "cli" / "app.py")
    assert [f.split(": ")[1] for f in found] == ["gc.set_threshold"]
