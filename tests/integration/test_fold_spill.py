"""`custate fold` past its memory budget: the activities go to a temporary file and are
folded from there, one customer at a time, and what the user sees is byte for byte what
the fold in memory shows (states, reports, their order, the exit status), while the memory
taken no longer grows with the input, and no temporary file is left behind."""

from __future__ import annotations

import gzip
import os
import random
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from custate.adapters.foldfiles import parse_size

from .histories import CUSTATE, Json, cli_env, generate, write_ndjson

HELD = "1TB"  # every input of these tests fits: folded in memory
SPILLED = "0"  # the first activity is past the budget: all folded from disk
MIDWAY = "1MB"  # about 60 activities are held, then moved to disk with the rest


def fold(
    args: Sequence[str | Path], memory: str, cwd: Path, stdin: bytes = b"", **env: str
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(CUSTATE), "fold", *map(str, args), "--memory", memory],
        cwd=cwd,
        env=cli_env(**env),
        input=stdin,
        capture_output=True,
        timeout=300,
    )


def changed(r: Json) -> Json:
    """A redelivery of `r` whose content is not `r`'s: a conflict."""
    data = orjson.loads(orjson.dumps(r["data"]))
    data["conflicting"] = True
    return r | {"data": data}


def nameless(activity_id: str, seconds: int) -> Json:
    """A record of a type this code does not know, naming no customer: bad without
    `--customer`, that customer's with it."""
    return {
        "id": activity_id,
        "type": "customer.future_event",
        "created_at": f"2024-06-01T00:00:{seconds:02d}Z",
        "data": {"note": activity_id},
    }


def at(activity_id: str, activity_type: str, created_at: str, customer: str) -> Json:
    return {
        "id": activity_id,
        "type": activity_type,
        "created_at": created_at,
        "data": {"customer": {"id": customer, "name": f"Name {activity_id}"}},
    }


def scenario(tmp_path: Path) -> tuple[list[str], bytes, str]:
    """Several files of several containers and standard input, delivered out of order,
    with redeliveries (the same content, also under another `group_id`), conflicts (both
    with activities held before a spill and with later ones), bad records and records that
    name no customer; several activities at one instant, whose ids sort otherwise than their
    ranks, and at the edge of the `--as-of` cut used below. The arguments, standard input and
    a customer of the history."""
    records = generate(240, 9, seed=7)
    rng = random.Random(19)
    shuffled = records[:]
    rng.shuffle(shuffled)
    first, second, third = shuffled[:100], shuffled[100:180], shuffled[180:]

    with (tmp_path / "first.ndjson").open("wb") as f:
        for i, r in enumerate(first):
            f.write(orjson.dumps(r) + b"\n")
            if i == 10:
                f.write(b'{"id": "evcus_broken", "type": \n')
            if i == 20:
                f.write(orjson.dumps(r | {"created_at": "2024-03-01T09:00:00"}) + b"\n")
            if i == 90:
                f.write(orjson.dumps(changed(first[3])) + b"\n")  # held, when MIDWAY
    again = rng.sample(first, 15) + [r | {"group_id": "v-other"} for r in first[40:45]]
    (tmp_path / "second.json.gz").write_bytes(gzip.compress(orjson.dumps(second + again)))
    listing = {"object": "list", "data_ref": "data", "data": [*third, changed(second[7])]}
    (tmp_path / "third.json").write_bytes(orjson.dumps(listing))
    stdin = [
        *rng.sample(records, 30),
        *(changed(r) for r in rng.sample(first[:50], 4)),
        *(nameless(f"evcus_nameless_{i}", i) for i in range(3)),
        changed(third[0]),
    ]
    customer = str(records[0]["data"]["customer"]["id"])
    instant, edge, past = (
        "2024-06-15T12:00:00Z",
        "2025-01-01T23:59:59.999999Z",
        "2025-01-02T00:00:00Z",
    )
    stdin += [
        at("evcus_tie_a", "customer.deleted", instant, customer),
        at("evcus_tie_b", "customer.updated", instant, customer),
        at("evcus_tie_c", "customer.created", instant, customer),
        at("evcus_tie_d", "customer.updated", instant, customer),
        at("evcus_edge", "customer.updated", edge, customer),
        at("evcus_past", "customer.updated", past, customer),
    ]
    return (
        ["first.ndjson", "second.json.gz", "-", "third.json"],
        b"".join(orjson.dumps(r) + b"\n" for r in stdin),
        customer,
    )


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--customer", "CUSTOMER"],
        ["--as-of", "2025-01-01"],
        ["--customer", "CUSTOMER", "--as-of", "2025-01-01"],
    ],
    ids=["all", "customer", "as-of", "customer-as-of"],
)
def test_spilled_fold_prints_what_the_fold_in_memory_prints(
    tmp_path: Path, options: list[str]
) -> None:
    args, stdin, customer = scenario(tmp_path)
    args += [customer if o == "CUSTOMER" else o for o in options]
    held = fold(args, HELD, tmp_path, stdin)
    assert held.returncode == 1, held.stderr.decode()
    problems = held.stderr.decode().splitlines()
    conflicts = [p for p in problems if ": id: conflict: " in p]
    expected_conflicts = 7
    assert len(conflicts) == expected_conflicts, problems
    assert any(p.startswith("first.ndjson line 12: <json>") for p in problems), problems
    assert any(p.startswith("<stdin> line ") and "no customer" in p for p in problems) == (
        "--customer" not in options
    )
    states = [orjson.loads(line) for line in held.stdout.splitlines()]
    assert len(states) == (1 if "--customer" in options else 9)

    for memory in (SPILLED, MIDWAY):
        spilled = fold(args, memory, tmp_path, stdin)
        assert spilled.stdout == held.stdout, memory
        assert spilled.stderr == held.stderr, memory
        assert spilled.returncode == held.returncode, memory


def test_clean_input_folds_the_same_from_disk_with_exit_0(tmp_path: Path) -> None:
    write_ndjson(tmp_path / "a.ndjson", generate(300, 20, seed=3))
    held = fold(["a.ndjson"], HELD, tmp_path)
    spilled = fold(["a.ndjson"], SPILLED, tmp_path)
    assert (held.returncode, held.stderr) == (0, b"")
    assert len(held.stdout.splitlines()) == 20
    assert (spilled.returncode, spilled.stdout, spilled.stderr) == (0, held.stdout, b"")


def test_no_temporary_file_is_left_behind(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    write_ndjson(tmp_path / "a.ndjson", generate(200, 5, seed=4))
    p = fold(["a.ndjson"], SPILLED, tmp_path, TMPDIR=str(tmp))
    assert p.returncode == 0, p.stderr.decode()
    assert len(p.stdout.splitlines()) == 5
    assert list(tmp.iterdir()) == []


def test_ctrl_c_while_spilling_removes_the_temporary_file(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen(
        [str(CUSTATE), "fold", "-", "--memory", SPILLED],
        cwd=tmp_path,
        env=cli_env(TMPDIR=str(tmp)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    try:
        for r in generate(50, 5, seed=5):
            proc.stdin.write(orjson.dumps(r) + b"\n")
        proc.stdin.flush()  # and left open: the fold waits for more
        deadline = time.monotonic() + 60
        while not any(tmp.iterdir()):
            assert time.monotonic() < deadline, "no temporary file appeared"
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert list(tmp.iterdir()) == []


def peak_rss(args: Sequence[str | Path], memory: str, cwd: Path) -> int:
    """The peak resident set size of `custate fold ARGS --memory MEMORY`, in bytes."""
    proc = subprocess.Popen(
        [str(CUSTATE), "fold", *map(str, args), "--memory", memory],
        cwd=cwd,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0
    return usage.ru_maxrss * 1024  # KiB on Linux


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "wait4"), reason="needs os.wait4")
def test_memory_of_a_spilled_fold_does_not_grow_with_the_input(tmp_path: Path) -> None:
    records = generate(4000, 40, seed=6)
    write_ndjson(tmp_path / "small.ndjson", records[:1000])
    write_ndjson(tmp_path / "large.ndjson", records)
    small = peak_rss(["small.ndjson"], SPILLED, tmp_path)
    large = peak_rss(["large.ndjson"], SPILLED, tmp_path)
    # Held in memory, the 3,000 more activities take some 50 MB more.
    assert large - small < 16 * 1024 * 1024, (small, large)


def test_a_bad_memory_size_is_a_usage_error(tmp_path: Path) -> None:
    write_ndjson(tmp_path / "a.ndjson", generate(5, 1, seed=1))
    p = fold(["a.ndjson"], "lots", tmp_path)
    assert p.returncode == 2
    assert p.stdout == b""
    assert "--memory: not a size: 'lots'" in p.stderr.decode()


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("100000", 100000),
        ("512MB", 512 << 20),
        ("512m", 512 << 20),
        ("2G", 2 << 30),
        ("1.5GiB", 3 << 29),
        ("64 KB", 64 << 10),
        ("1TB", 1 << 40),
    ],
)
def test_sizes_are_read_with_their_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1MB", "5 PB", "MB", "1.2.3G"])
def test_what_is_not_a_size_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)
