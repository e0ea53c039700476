"""`custate ARGS` run inside the test process through the console script's public typer
app, for the tests that are about what a command prints and returns rather than about the
process it runs in: the same exit codes, stdout and stderr apart, the same environment
rules, at no Python start-up per command. What only a real process shows (signals, a
terminal, a pipe closed early, a crash, the console script itself) stays a subprocess.

Each run sees a hermetic environment: no CUSTATE_* variable of the test process (only
those the caller passes), COLUMNS as asked, and `cwd` as its working directory."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from custate.adapters.cli import app
from custate.adapters.cli import commands as _registers_the_commands  # noqa: F401  (as `main`)

__all__ = ["Ran", "invoke"]


@dataclass(frozen=True)
class Ran:
    """What one command did: its exit code and what it wrote to each stream (the fields a
    `subprocess.CompletedProcess[bytes]` has, so a test reads either the same way)."""

    args: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes


def invoke(
    *args: str | Path,
    cwd: Path | None = None,
    env: Mapping[str, str | None] | None = None,
    stdin: bytes = b"",
    columns: int | None = 200,
) -> Ran:
    """`custate ARGS` in `cwd` (None: the current directory) with stdin `stdin`. `env`
    sets (or, with None, removes) variables for this run; `columns` widens rich's tables (it
    assumes 80 when writing to anything but a terminal), None leaves COLUMNS unset. An
    exception the command does not turn into an exit code propagates: in a real process it
    would be a traceback."""
    environ: dict[str, str | None] = {k: None for k in os.environ if k.startswith("CUSTATE_")}
    environ["COLUMNS"] = None if columns is None else str(columns)
    environ.update(env or {})
    argv = [str(a) for a in args]
    with contextlib.chdir(cwd) if cwd is not None else contextlib.nullcontext():
        result = CliRunner().invoke(
            app, argv, input=stdin, env=environ, catch_exceptions=False, prog_name="custate"
        )
    return Ran(argv, result.exit_code, result.stdout_bytes, result.stderr_bytes)
