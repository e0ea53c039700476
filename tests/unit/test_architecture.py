"""Imports point inward (adapters -> projections -> domain), nothing imports the bare folder
names, and the domain does no I/O, reads no clock, starts no thread and knows no stored
form."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["domain", "projections", "adapters"]  # inner to outer

# What the pure core may never import: storage, network, terminals, clocks, the file system.
DOMAIN_FORBIDDEN = {
    "sqlalchemy",
    "eventsourcing",
    "psycopg",
    "typer",
    "rich",
    "httpx",
    "fastapi",
    "uvicorn",
    "os",
    "io",
    "pathlib",
    "sys",
    "time",
    "random",
    "socket",
    "subprocess",
    "sqlite3",
    "threading",
    "concurrent",
    "multiprocessing",
    "zlib",
    "gzip",
    "gc",
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def _modules(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


@pytest.mark.parametrize("layer", LAYERS)
def test_imports_point_inward(layer: str) -> None:
    outer = LAYERS[LAYERS.index(layer) + 1 :]
    for path in _modules(layer):
        for name in _imports(path):
            for o in outer:
                assert not name.startswith(f"custate.{o}"), f"{path}: {layer} imports {name}"


@pytest.mark.parametrize("folder", [*LAYERS, "tests", "bench"])
def test_nothing_imports_the_bare_folder_names(folder: str) -> None:
    for path in _modules(folder):
        for name in _imports(path):
            assert name.split(".")[0] not in LAYERS, f"{path}: imports bare {name}"


def test_domain_does_no_io_and_reads_no_clock() -> None:
    for path in _modules("domain"):
        for name in _imports(path):
            assert name.split(".")[0] not in DOMAIN_FORBIDDEN, f"{path}: imports {name}"
        text = path.read_text()
        for clock in (".now(", "utcnow(", "today(", "time.time("):
            assert clock not in text, f"{path}: reads the clock ({clock})"
