"""The wheel holds every subpackage under `custate` and nothing else (DESIGN.md, Packaging)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IGNORED = (
    ".venv",
    "build",
    "dist",
    ".git",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "*.db",
)
FOLDERS = {
    "domain": "custate/domain",
    "projections": "custate/projections",
    "adapters": "custate/adapters",
}


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    # Build from a clean copy: setuptools reuses a stale build/ folder, which would hide
    # a subpackage dropped from the list.
    src = tmp_path_factory.mktemp("src") / "custate"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*IGNORED))
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*pip, "-w", str(out), str(src)], check=True, capture_output=True)
    (wheel,) = out.glob("custate-*.whl")
    with zipfile.ZipFile(wheel) as z:
        return set(z.namelist())


def test_every_module_of_every_folder_is_in_the_wheel(wheel_names: set[str]) -> None:
    for folder, package in FOLDERS.items():
        for source in (ROOT / folder).rglob("*.py"):
            rel = source.relative_to(ROOT / folder).as_posix()
            assert f"{package}/{rel}" in wheel_names, f"{folder}/{rel} is missing from the wheel"


def test_wheel_holds_only_the_custate_package(wheel_names: set[str]) -> None:
    tops = {n.split("/")[0] for n in wheel_names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"custate"}
    assert "custate/py.typed" in wheel_names
    assert not any(
        n.startswith(("tests/", "domain/", "adapters/", "projections/", "bench/"))
        for n in wheel_names
    )


def test_console_script_is_declared(wheel_names: set[str]) -> None:
    assert any(n.endswith(".dist-info/entry_points.txt") for n in wheel_names)


# Declared, but loaded by name rather than imported: SQLAlchemy opens the PostgreSQL driver
# named by a store URL.
LOADED_BY_NAME = {"psycopg"}


def _requirement_name(spec: str) -> str:
    return re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def _third_party_imports() -> set[str]:
    found: set[str] = set()
    for folder in (*FOLDERS, "custate_root"):
        for source in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text(), str(source))):
                if isinstance(node, ast.Import):
                    tops = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    tops = [node.module.split(".")[0]]
                else:
                    continue
                found.update(t for t in tops if t not in sys.stdlib_module_names and t != "custate")
    return found


def test_dependencies_are_what_the_package_imports() -> None:
    """Every library the package imports is declared (not left to arrive with another),
    and every declared one is used: a pin on an unused library only constrains installs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_requirement_name(d) for d in project["dependencies"]}
    dists = importlib.metadata.packages_distributions()
    imported = {_requirement_name(dists.get(name, [name])[0]) for name in _third_party_imports()}
    assert imported - declared == set(), "imported but not declared"
    assert declared - imported - LOADED_BY_NAME == set(), "declared but never imported"
