"""The conventions a command-line user expects of `custate`: `--version`, examples in every
command's help, shell completion, filters and times checked before anything is read, read
commands that never create a store, output that pipes into `head`, `grep` and `cut`, and one
`--format` option on the commands that print records."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import custate

from .incli import invoke

CUSTATE = Path(sys.executable).parent / "custate"
COMMANDS = (
    "demo",
    "ingest",
    "fold",
    "state",
    "history",
    "diff",
    "explain",
    "gaps",
    "report",
    "customers",
    "project",
    "rebuild",
    "rejects",
    "pull",
    "serve",
    "status",
)


def test_version() -> None:
    ran = invoke("--version")
    assert ran.returncode == 0
    assert ran.stdout.decode() == f"custate {custate.__version__}\n"
    assert custate.__version__ == "0.1.0"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_shows_examples_of_itself(command: str) -> None:
    ran = invoke(command, "--help")
    assert ran.returncode == 0
    text = ran.stdout.decode()
    assert "Examples:" in text
    assert f"$ custate {command}" in text or f"| custate {command}" in text


def test_shell_completion_script_and_completions() -> None:
    """typer's completion: `--show-completion SHELL` prints the script a shell sources, and
    the script's call back into the program completes command names."""
    shown = subprocess.run(
        [str(CUSTATE), "--show-completion", "bash"], capture_output=True, timeout=60, check=True
    )
    assert b"_custate_completion" in shown.stdout
    assert b"complete " in shown.stdout
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CUSTATE_")},
        "_CUSTATE_COMPLETE": "complete_bash",
        "COMP_WORDS": "custate hist",
        "COMP_CWORD": "1",
    }
    done = subprocess.run([str(CUSTATE)], env=env, capture_output=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout.split() == [b"history"]
