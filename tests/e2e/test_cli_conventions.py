"""The conventions a command-line user expects of `custate`: `--version`, examples in every
command's help, shell completion, filters and times checked before anything is read, read
commands that never create a store, output that pipes into `head`, `grep` and `cut`, and one
`--format` option on the commands that print records."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
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
    "migrate",
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


ROOT = Path(__file__).resolve().parents[2]
SAMPLES_FILE = ROOT / "adapters" / "data" / "samples.ndjson"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An SQLite store holding the shipped samples, projected, and one reject."""
    where = tmp_path_factory.mktemp("store")
    url = f"sqlite:///{where / 'custate.db'}"
    ran = invoke("ingest", SAMPLES_FILE, "--store", url)
    assert ran.returncode == 0, ran.stderr
    bad = where / "bad.ndjson"
    bad.write_bytes(b'{"id": "evcus_bad\tone", "type": "customer.created"}\n')
    assert invoke("ingest", bad, "--store", url).returncode == 1  # kept as a reject
    return url


def _lines(out: bytes) -> list[str]:
    return out.decode().splitlines()


def test_status_filter_matches_without_case(loaded: str) -> None:
    lower = invoke("customers", "--status", "active", "--format", "tsv", "--store", loaded)
    upper = invoke("customers", "--status", "ACTIVE", "--format", "tsv", "--store", loaded)
    assert lower.returncode == upper.returncode == 0
    assert len(_lines(lower.stdout)) > 1  # a header and customers
    assert upper.stdout == lower.stdout


def test_unknown_status_lists_the_allowed_values(loaded: str) -> None:
    ran = invoke("customers", "--status", "gone", "--store", loaded)
    assert ran.returncode == 2
    assert ran.stdout == b""
    assert b"--status: 'gone' is not one of: active, deleted" in ran.stderr


def test_points_filter_that_is_not_a_number_is_an_error(loaded: str) -> None:
    ran = invoke("customers", "--min-points", "abc", "--store", loaded)
    assert ran.returncode == 2
    assert ran.stdout == b""
    assert b"--min-points" in ran.stderr


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["state", "cust_1", "--as-of", "yesterday"], "--as-of"),
        (["history", "cust_1", "--from", "2024-13-01"], "--from"),
        (["diff", "cust_1", "--as-of", "2024-01-01", "--as-of", "soon"], "--as-of"),
        (["explain", "cust_1", "loyalty.points", "--known-at", "2024-01-01T10:00"], "--known-at"),
    ],
)
def test_a_bad_time_names_the_option(loaded: str, args: list[str], option: str) -> None:
    ran = invoke(*args, "--store", loaded)
    assert ran.returncode == 2
    err = ran.stderr.decode()
    assert err.startswith(f"custate: {option}: ")
    assert "ActivityError" not in err
    assert "ISO-8601" in err


def test_the_library_calls_a_bad_cut_a_query_error(loaded: str) -> None:
    with custate.open(loaded) as cs, pytest.raises(custate.QueryError) as info:
        cs.state("cust_1", as_of="yesterday")
    assert not isinstance(info.value, custate.ActivityError)
    assert str(info.value).startswith("as_of: ")


@pytest.mark.parametrize(
    "args",
    [
        ["state", "cust_1"],
        ["history", "cust_1"],
        ["diff", "cust_1", "--as-of", "2024-01-01", "--as-of", "2024-02-01"],
        ["explain", "cust_1", "loyalty.points"],
        ["customers"],
        ["status"],
        ["migrate"],
        ["rejects"],
        ["gaps"],
    ],
)
def test_a_read_command_never_creates_a_store(tmp_path: Path, args: list[str]) -> None:
    path = tmp_path / "nothing.db"
    ran = invoke(*args, "--store", f"sqlite:///{path}", cwd=tmp_path)
    assert ran.returncode == 2
    assert f"no store at {path}; ingest something first".encode() in ran.stderr
    assert list(tmp_path.iterdir()) == []
    # the default store, ./custate.db, likewise
    ran = invoke(*args, cwd=tmp_path)
    assert ran.returncode == 2
    assert b"no store at custate.db; ingest something first" in ran.stderr
    assert list(tmp_path.iterdir()) == []


def _script_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CUSTATE_")}


@pytest.mark.parametrize(
    "args",
    [
        ["fold", str(ROOT / "adapters" / "data" / "demo.ndjson.gz")],
        ["customers", "--format", "tsv"],
        ["history", "CUSTOMER"],
    ],
)
def test_a_reader_that_leaves_early_is_not_an_error(loaded: str, args: list[str]) -> None:
    """`custate ... | head`: the real console script, its stdout a pipe closed before (or
    while) it writes: exit 0 and nothing on stderr."""
    with custate.open(loaded) as cs:
        most = max(cs.customers(limit=1000), key=lambda r: r.activity_count).customer_id
    args = [most if a == "CUSTOMER" else a for a in args]
    proc = subprocess.Popen(
        [str(CUSTATE), *args, *([] if args[0] == "fold" else ["--store", loaded])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_script_env(),
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.close()  # as `head -0` would, before the program has written anything
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert err == b""


def _tsv(out: bytes) -> list[dict[str, str]]:
    header, *rows = out.decode().splitlines()
    names = header.split("\t")
    return [dict(zip(names, r.split("\t"), strict=True)) for r in rows]


def test_format_forms_of_customers_agree(loaded: str) -> None:
    """One rule: ndjson is a record a line, json one document, tsv a header and a line each,
    with the library's key names (CustomerRow.to_json) everywhere; --json is ndjson here."""
    nd = [
        orjson.loads(x)
        for x in invoke("customers", "--format", "ndjson", "--store", loaded).stdout.splitlines()
    ]
    assert nd
    assert set(nd[0]) == {"customer_id", "status", "points", "activity_count"}
    assert [
        orjson.loads(x)
        for x in invoke("customers", "--json", "--store", loaded).stdout.splitlines()
    ] == nd
    assert orjson.loads(invoke("customers", "--format", "JSON", "--store", loaded).stdout) == nd
    tsv = _tsv(invoke("customers", "--format", "tsv", "--store", loaded).stdout)
    assert tsv == [{k: str(v) for k, v in r.items()} for r in nd]
    bad = invoke("customers", "--format", "xml", "--store", loaded)
    assert bad.returncode == 2
    assert b"--format: 'xml' is not one of: table, json, ndjson, tsv" in bad.stderr


def test_piped_tables_never_break_identifiers(loaded: str) -> None:
    """Written to a pipe (as here) at 40 columns, a table is its title and tab-separated
    lines: every identifier, path and time whole on the line `grep` finds."""
    with custate.open(loaded) as cs:
        rows = cs.customers(limit=1000)
        most = max(rows, key=lambda r: r.activity_count).customer_id
        entries = cs.history(most)
    listed = invoke("customers", "--store", loaded, columns=40).stdout.decode().splitlines()
    assert listed[1] == "customer_id\tstatus\tpoints\tactivity_count"
    assert {line.split("\t")[0] for line in listed[2:]} == {r.customer_id for r in rows}
    text = invoke("history", most, "--store", loaded, columns=40).stdout.decode()
    for e in entries:
        line = next(x for x in text.splitlines() if e.activity.id in x.split())
        assert e.activity.type in line.split()
        for c in e.changes:
            assert any(x.split()[:1] == [c.path] for x in text.splitlines()), c.path
    tsv = _tsv(invoke("history", most, "--format", "tsv", "--store", loaded, columns=40).stdout)
    assert [r["id"] for r in tsv] == [e.activity.id for e in entries for _ in (e.changes or [None])]
    assert {r["path"] for r in tsv} == {c.path for e in entries for c in e.changes} | (
        {""} if any(not e.changes for e in entries) else set()
    )
    nd = [
        orjson.loads(x)
        for x in invoke(
            "history", most, "--format", "ndjson", "--store", loaded
        ).stdout.splitlines()
    ]
    doc = orjson.loads(invoke("history", most, "--json", "--store", loaded).stdout)
    assert [{k: v for k, v in x.items() if k != "customer_id"} for x in nd] == doc["activities"]


def test_rejects_and_gaps_formats(loaded: str) -> None:
    nd = [
        orjson.loads(x) for x in invoke("rejects", "--json", "--store", loaded).stdout.splitlines()
    ]
    assert nd  # the samples hold bad records on purpose
    assert orjson.loads(invoke("rejects", "--format", "json", "--store", loaded).stdout) == nd
    tsv = _tsv(invoke("rejects", "--format", "tsv", "--store", loaded).stdout)
    assert [(r["id"], r["activity_id"], r["field"]) for r in tsv] == [
        (str(r["id"]), r["activity_id"] or "", r["field"]) for r in nd
    ]
    gaps = [
        orjson.loads(x)
        for x in invoke("gaps", "--format", "ndjson", "--store", loaded).stdout.splitlines()
    ]
    assert orjson.loads(invoke("gaps", "--format", "json", "--store", loaded).stdout) == gaps
    tsv_gaps = _tsv(invoke("gaps", "--format", "tsv", "--store", loaded).stdout)
    assert [(g["customer_id"], g["activity_id"], g["missing"]) for g in tsv_gaps] == [
        (g["customer_id"], g["activity_id"], str(g["missing"])) for g in gaps
    ]


def test_ingest_report_keys_are_the_library_names(tmp_path: Path) -> None:
    ran = invoke("ingest", SAMPLES_FILE, "--json", "--store", f"sqlite:///{tmp_path / 'a.db'}")
    report = orjson.loads(ran.stdout)
    fields = set(custate.IngestReport.__dataclass_fields__)
    assert set(report) <= fields
    assert {"resolved", "unrecognized"} <= set(report)


# A Python without some libraries, as an install without an extra is: the console script's
# `main` run in a process whose importer refuses them.
WITHOUT = textwrap.dedent(
    """
    import sys
    from importlib.abc import MetaPathFinder

    MISSING = set(sys.argv[1].split(","))

    class Missing(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in MISSING:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Missing())
    sys.argv = ["custate", *sys.argv[2:]]
    from custate.adapters.cli import main
    main()
    """
)


def _without(missing: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT, missing, *args],
        capture_output=True,
        cwd=cwd,
        env=_script_env(),
        timeout=120,
    )


def test_serve_without_the_server_extra_says_what_to_install(tmp_path: Path) -> None:
    ran = _without("fastapi,uvicorn", "serve", "--port", "0", cwd=tmp_path)
    assert ran.returncode == 2, ran.stderr
    assert b"pip install 'custate[server]'" in ran.stderr
    assert b"Traceback" not in ran.stderr


def test_a_postgresql_store_without_psycopg_says_what_to_install(tmp_path: Path) -> None:
    url = "postgresql://someone:secret@127.0.0.1:1/db"
    ran = _without("psycopg", "ingest", str(SAMPLES_FILE), "--store", url, cwd=tmp_path)
    assert ran.returncode == 2, ran.stderr
    assert b"a PostgreSQL store needs psycopg: pip install 'custate[postgres]'" in ran.stderr
    assert b"secret" not in ran.stderr
    # an SQLite store needs none of it
    ran = _without("psycopg,fastapi,uvicorn", "ingest", str(SAMPLES_FILE), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr


def test_the_demo_suggests_the_audit_the_queries_and_serve(tmp_path: Path) -> None:
    """Every command the demo's "Try next" shows on its store works as printed (those that
    need a file of the user's or a server are shown, not run)."""
    store = tmp_path / "demo.db"
    demo = invoke("demo", "--store", store, cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr.decode()
    out = demo.stdout.decode()
    lines = [ln.strip() for ln in out.split("Try next", 1)[1].splitlines() if ln.strip()]
    commands = [ln.split("  #", 1)[0].split() for ln in lines if ln.startswith("custate ")]
    shown = {c[1] for c in commands}
    assert {"history", "diff", "explain", "report", "customers", "serve"} <= shown
    for argv in commands:
        if argv[1] in ("serve", "ingest", "fold"):
            continue
        ran = invoke(*argv[1:], cwd=tmp_path)
        assert ran.returncode == 0, (argv, ran.stderr.decode())
        assert ran.stdout or (tmp_path / argv[argv.index("-o") + 1]).exists(), argv


def test_ingest_on_a_terminal_shows_bytes_of_the_total_and_the_elapsed_time(
    tmp_path: Path,
) -> None:
    """On a terminal (a pseudo-terminal here) the bar counts the file's bytes of its total
    size, with the records and their rate; the command ends with its elapsed time."""
    import gzip
    import pty

    data = tmp_path / "demo.ndjson"
    data.write_bytes(gzip.decompress((ROOT / "adapters" / "data" / "demo.ndjson.gz").read_bytes()))
    size_mb = f"{data.stat().st_size / 1e6:.1f} MB"
    leader, follower = pty.openpty()
    env = {**_script_env(), "COLUMNS": "160", "TERM": "xterm"}
    proc = subprocess.Popen(
        [str(CUSTATE), "ingest", str(data), "--store", f"sqlite:///{tmp_path / 'a.db'}"],
        stdout=subprocess.PIPE,
        stderr=follower,
        env=env,
        cwd=tmp_path,
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the program closed its end
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(timeout=120) == 0
    os.close(leader)
    text = seen.decode(errors="replace")
    assert f"/{size_mb}" in text, text  # bytes read of the total
    assert "records" in text
    assert "custate ingest: done in " in text
    assert proc.stdout is not None
    assert b"accepted" in proc.stdout.read()


def test_long_commands_end_with_their_elapsed_time(loaded: str) -> None:
    for command in ("project", "rebuild"):
        ran = invoke(command, "--store", loaded)
        assert ran.returncode == 0, ran.stderr
        assert ran.stderr.decode().splitlines()[-1].startswith(f"custate {command}: done in ")
        assert b"done in" not in ran.stdout


@pytest.mark.parametrize("workers", [0, 2])
def test_the_bytes_read_add_up_to_the_files(tmp_path: Path, workers: int) -> None:
    """What the bar counts: every byte of every file, once, whether parsed here or by
    workers, plain or gzip."""
    from custate.adapters.ingest import parse_files

    plain = tmp_path / "a.ndjson"
    plain.write_bytes(SAMPLES_FILE.read_bytes() * 3)
    packed = ROOT / "adapters" / "data" / "demo.ndjson.gz"
    told: list[int] = []
    items = list(parse_files([str(plain), str(packed)], workers=workers, read=told.append))
    assert items
    assert sum(told) == plain.stat().st_size + packed.stat().st_size
    assert len(told) > 1
