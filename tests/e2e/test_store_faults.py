"""A store that cannot be used is a clear message and exit 3 (the store failed), never a
traceback nor exit 1 (some records rejected): the real `custate` program."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

EXIT_STORE = 3


def custate_program() -> list[str]:
    exe = Path(sys.executable).with_name("custate")
    return [str(exe)] if exe.exists() else [shutil.which("custate") or "custate"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", [["state", "cust_1"], ["customers"], ["ingest", "-"]])
def test_an_unreachable_postgresql_names_the_host_masks_the_password_and_exits_3(
    command: list[str],
) -> None:
    port = closed_port()
    url = f"postgresql://bob:s3cret-pw@127.0.0.1:{port}/db?connect_timeout=1"
    ran = subprocess.run(
        [*custate_program(), *command, "--store", url],
        input=b"",
        capture_output=True,
        timeout=60,
    )
    err = ran.stderr.decode()
    assert ran.returncode == EXIT_STORE, err
    assert f"127.0.0.1:{port}" in err
    assert "bob:***@" in err
    assert "s3cret-pw" not in err + ran.stdout.decode()
    assert "Traceback" not in err
