"""The wheel holds every subpackage under `custate` and nothing else (DESIGN.md, Packaging)."""

from __future__ import annotations

import shutil
import subprocess
import sys
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
