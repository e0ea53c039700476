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
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
IGNORED = (
    ".venv",
    ".venv-lowest",
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


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def _requirement_name(spec: str) -> str:
    return re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def _third_party_imports(folders: tuple[str, ...] = (*FOLDERS, "custate_root")) -> set[str]:
    found: set[str] = set()
    for folder in folders:
        for source in (ROOT / folder).rglob("*.py"):
            found |= _imports_of(source)
    return found


def _imports_of(source: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            tops = [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops = [node.module.split(".")[0]]
        else:
            continue
        found.update(t for t in tops if t not in sys.stdlib_module_names and t != "custate")
    return found


def _distribution(module: str) -> str:
    dists = importlib.metadata.packages_distributions()
    return _requirement_name(dists.get(module, [module])[0])


def test_dependencies_are_what_the_package_imports() -> None:
    """Every library the package imports is declared, in the core or an extra (not left to
    arrive with another), and every declared one is used: a pin on an unused library only
    constrains installs."""
    project = _project()
    extras = project["optional-dependencies"]
    declared = {_requirement_name(d) for d in project["dependencies"]}
    declared |= {_requirement_name(d) for d in extras["server"] + extras["postgres"]}
    imported = {_distribution(name) for name in _third_party_imports()}
    assert imported - declared == set(), "imported but not declared"
    assert declared - imported == set(), "declared but never imported"


def test_the_core_install_leaves_the_server_and_postgres_to_extras() -> None:
    """`pip install custate`: the store (SQLite), the fold and the command line; the HTTP
    server is `custate[server]`, the PostgreSQL driver `custate[postgres]`; `.[dev]` has
    both, so that the tests run them."""
    project = _project()
    core = {_requirement_name(d) for d in project["dependencies"]}
    extras = project["optional-dependencies"]
    assert {_requirement_name(d) for d in extras["server"]} == {
        "fastapi",
        "uvicorn",
        "prometheus-client",
    }
    assert any(d.startswith("uvicorn[standard]") for d in extras["server"])
    assert extras["postgres"] == ["psycopg[binary,pool]>=3.2,<4"]
    assert core.isdisjoint({"fastapi", "uvicorn", "psycopg"})
    assert {"eventsourcing", "sqlalchemy", "typer", "rich"} <= core
    assert "custate[server,postgres]" in extras["dev"]
    for spec in project["dependencies"] + extras["server"] + extras["postgres"]:
        assert "==" not in spec, f"{spec}: a range, not a pin"
    # Only the server modules import the server stack.
    for source in (ROOT / "adapters").rglob("*.py"):
        got = {_distribution(m) for m in _imports_of(source)}
        if source.name not in ("http.py", "serving.py"):
            assert got.isdisjoint({"fastapi", "uvicorn"}), source
        if source.name not in ("http.py", "metrics.py"):
            assert "prometheus-client" not in got, source
    for folder in ("domain", "projections"):
        got = {_distribution(m) for m in _third_party_imports((folder,))}
        assert got.isdisjoint({"fastapi", "uvicorn", "psycopg", "httpx"}), folder


def test_building_the_wheel_warns_of_nothing(tmp_path: Path) -> None:
    src = tmp_path / "custate"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*IGNORED))
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v"]
    ran = subprocess.run(
        [*pip, "-w", str(tmp_path / "out"), str(src)], capture_output=True, text=True, check=True
    )
    log = ran.stdout + ran.stderr
    # setuptools warns through Python's warnings (`_Warning: Package 'custate.adapters.data'
    # is absent from the packages configuration`, a SetuptoolsDeprecationWarning, ...);
    # distutils' "warning: byte-compiling is disabled" is pip's setting, not the project's.
    warnings = [line for line in log.splitlines() if re.search(r"\w*Warning\b", line)]
    assert warnings == []
