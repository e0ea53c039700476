"""The entry points (the CLI, the HTTP service, pull) go through the service layer
(`custate.adapters.api`): they import no store internals (event store, read model,
ingest, rejects, codecs, SQL) and never reach into the service's parts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRY_POINTS = sorted(
    [
        *(ROOT / "adapters" / "cli").glob("*.py"),
        ROOT / "adapters" / "http.py",
        ROOT / "adapters" / "pull.py",
    ]
)
# What an entry point may import of the adapters: the service layer, the other entry points
# and the presentation and input helpers around them (none of which touch the store).
ALLOWED = (
    "custate.adapters.api",  # the service layer
    "custate.adapters.cli",  # the CLI's own modules
    "custate.adapters.http",  # `custate serve` runs it
    "custate.adapters.serving",  # the server's connection protocol (no store)
    "custate.adapters.pull",  # `custate pull` runs it
    "custate.adapters.voucherify",  # the Voucherify API client pull reads with
    "custate.adapters.readers",  # input formats: bytes and files to records
    "custate.adapters.foldfiles",  # `custate fold`: files to states, with no store
    "custate.adapters.report",  # the HTML report
    "custate.adapters.logs",  # log line formats (no store)
    "custate.adapters.metrics",  # Prometheus metrics: reads the store only through api
    "custate.adapters.bearer",  # bearer tokens of the HTTP endpoints (no store)
)
# The service's parts (attributes kept for tests and tools): entry points call its methods.
PARTS = {"store", "rejects_store", "readmodel", "clock", "_parts", "engine"}


def _imported(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, "relative import"
            if node.module in ("custate", "custate.adapters"):
                names += [f"{node.module}.{a.name}" for a in node.names]  # modules by name
            else:
                names.append(node.module)
    return names


def _allowed(name: str) -> bool:
    if not name.startswith("custate.adapters"):
        return True  # the pure core (domain, projections) and third-party libraries
    return any(name == a or name.startswith(f"{a}.") for a in ALLOWED)


@pytest.mark.parametrize("path", ENTRY_POINTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_entry_points_import_only_the_service_layer(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    bad = [n for n in _imported(tree) if not _allowed(n)]
    assert not bad, f"{path.relative_to(ROOT)} imports store internals: {bad}"


@pytest.mark.parametrize("path", ENTRY_POINTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_entry_points_call_methods_not_parts(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    reached = [
        f"line {node.lineno}: .{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in PARTS
    ]
    assert not reached, f"{path.relative_to(ROOT)} reaches into the service: {reached}"


def test_the_check_sees_a_store_internal() -> None:
    tree = ast.parse(
        "from custate.adapters.eventstore import StoreError\n"
        "from custate.adapters import readmodel\n"
        "import custate.adapters.ingest\n"
    )
    assert [n for n in _imported(tree) if not _allowed(n)] == [
        "custate.adapters.eventstore",
        "custate.adapters.readmodel",
        "custate.adapters.ingest",
    ]
