"""A store that cannot be used is a clear message and exit 3 (the store failed), never a
traceback nor exit 1 (some records rejected): the real `custate` program."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .incli import invoke

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


ACTIVITY = (
    b'{"id": "act_1", "type": "customer.created", "created_at": "2024-01-01T00:00:00Z",'
    b' "data": {"customer": {"id": "cust_1"}}}\n'
)


def run(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> tuple[int, str]:
    ran = subprocess.run(
        [*custate_program(), *args], input=stdin, capture_output=True, timeout=120, env=env
    )
    return ran.returncode, ran.stdout.decode() + ran.stderr.decode()


def test_a_read_only_store_answers_reads_and_refuses_writes_with_exit_3(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    assert run("ingest", "-", "--store", f"sqlite:///{db}", stdin=ACTIVITY)[0] == 0
    ro = f"sqlite:///{db}?mode=ro"
    for command in (["state", "cust_1"], ["customers"], ["history", "cust_1"]):
        ran = invoke(*command, "--store", ro)
        assert ran.returncode == 0, ran.stderr
        assert b"cust_1" in ran.stdout
    code, out = run("ingest", "-", "--store", ro, stdin=ACTIVITY.replace(b"act_1", b"act_2"))
    assert code == EXIT_STORE, out
    assert "the store is read-only" in out
    assert "Traceback" not in out
    # nothing was written: the writable store still holds one activity
    history = invoke("history", "cust_1", "--store", f"sqlite:///{db}").stdout
    assert b"act_1" in history
    assert b"act_2" not in history


# SQLAlchemy connects through `sqlite3.dbapi2.connect`, eventsourcing through `sqlite3.connect`:
# both are patched.
SITECUSTOMIZE = """
import sqlite3
import sqlite3.dbapi2
_connect = sqlite3.connect
def connect(*args, **kwargs):
    c = _connect(*args, **kwargs)
    c.execute("PRAGMA max_page_count = {pages}")
    return c
sqlite3.connect = connect
sqlite3.dbapi2.connect = connect
"""


def test_a_full_disk_is_the_store_is_full_exit_3_and_nothing_half_written(
    tmp_path: Path,
) -> None:
    import os
    import sqlite3

    db = tmp_path / "s.db"
    assert run("ingest", "-", "--store", f"sqlite:///{db}", stdin=ACTIVITY)[0] == 0
    with sqlite3.connect(db) as c:
        pages = int(c.execute("PRAGMA page_count").fetchone()[0])
    # SQLite refuses to grow the file past `max_page_count` pages with SQLITE_FULL: what a
    # full disk gives. Every connection of the command gets that limit.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE.format(pages=pages))
    env = {**os.environ, "PYTHONPATH": str(hook)}
    big = b"".join(
        b'{"id": "big_%d", "type": "customer.updated", "created_at": "2024-01-02T00:00:00Z",'
        b' "data": {"customer": {"id": "cust_1", "metadata": {"note": "%s"}}}}\n' % (i, b"x" * 2000)
        for i in range(200)
    )
    code, out = run(
        "ingest", "-", "--batch-size", "1000", "--store", f"sqlite:///{db}", stdin=big, env=env
    )
    assert code == EXIT_STORE, out
    assert "the store is full" in out
    assert "Traceback" not in out
    # the batch that did not fit was not kept, in part or as rejects
    code, out = run("history", "cust_1", "--store", f"sqlite:///{db}")
    assert code == 0, out
    assert "big_" not in out, out
    code, out = run("rejects", "--store", f"sqlite:///{db}")
    assert "big_" not in out, out
