"""`custate history | diff | explain | gaps | report` as a user runs them, and the report
rendered in headless Chromium. The commands run in-process through the typer app
(`incli`); the catch-up shown on a terminal is a real `custate` subprocess on a pty."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.generate import generate  # noqa: E402

from .incli import Ran, invoke  # noqa: E402

Json = dict[str, Any]
CUSTATE = Path(sys.executable).parent / "custate"
CHROMIUM = Path("/usr/bin/chromium")
T0 = datetime(2025, 5, 1, tzinfo=UTC)
CUST = "cust_cli"


def run(*args: str | Path, cwd: Path) -> Ran:
    return invoke(*args, cwd=cwd)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def balance(aid: str, days: float, value: int, points: int) -> Json:
    return {
        "id": aid,
        "type": "customer.voucher.loyalty_card.points_added",
        "created_at": iso(T0 + timedelta(days=days)),
        "data": {
            "customer": {"id": CUST},
            "balance": {
                "type": "loyalty_card",
                "balance": value,
                "total": value,
                "points": points,
                "related_object": {"id": "v_x", "type": "voucher"},
            },
        },
    }


def write(path: Path, records: list[Json]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


@pytest.fixture
def late_store(tmp_path: Path, store_url: str) -> tuple[str, Path]:
    first = write(
        tmp_path / "first.ndjson",
        [
            balance("evcus_1", 0, 100, 100),
            {
                "id": "evcus_2",
                "type": "customer.updated",
                "created_at": iso(T0 + timedelta(days=0.5)),
                "data": {"customer": {"id": CUST}},
            },
            balance("evcus_3", 2, 180, 30),
        ],
    )
    late = write(tmp_path / "late.ndjson", [balance("evcus_late", 1, 150, 50)])
    for f in (first, late):
        p = run("ingest", f, "--store", store_url, cwd=tmp_path)
        assert p.returncode == 0, p.stderr.decode()
    return store_url, tmp_path


def test_a_long_history_prints_a_line_per_change(tmp_path: Path, sqlite_url: str) -> None:
    """Above a couple of thousand changes a table takes rich seconds to lay out; the lines
    must still say every activity, its record time, whether it was late, and each change."""
    records = list(generate(2_100, 1, seed=3))
    cid = records[0]["data"]["customer"]["id"]
    held, rest = records[100], records[:100] + records[101:]  # one arrives late
    run("ingest", write(tmp_path / "a.ndjson", rest), "--store", sqlite_url, cwd=tmp_path)
    run("ingest", write(tmp_path / "b.ndjson", [held]), "--store", sqlite_url, cwd=tmp_path)
    p = run("history", cid, "--store", sqlite_url, cwd=tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    lines = p.stdout.decode().splitlines()
    assert lines[0] == f"{cid}: 2,100 activities (one line per change; --json for programs)"
    j = orjson.loads(run("history", cid, "--json", "--store", sqlite_url, cwd=tmp_path).stdout)
    heads = [line for line in lines[1:] if not line.startswith("    ")]
    assert [h.split()[2] for h in heads] == [a["id"] for a in j["activities"]]
    assert [h.endswith("(late)") for h in heads] == [a["late"] for a in j["activities"]]
    assert sum(a["late"] for a in j["activities"]) >= 1
    changes = [line.split()[0] for line in lines[1:] if line.startswith("    ")]
    expected = [
        path
        for a in j["activities"]
        for path in ([c["path"] for c in a["changes"]] or ["(changed"])  # (changed nothing)
    ]
    assert changes == expected
    assert len(changes) > 2_000
    balance = next(line for line in lines if ".balance " in line)
    assert re.search(r"\.balance +(\(absent\)|-?\d+) -> -?\d+$", balance), balance
    # A diff over the whole history: `activities.count` was moved by every activity; the
    # table names the first and last two and how many, `--json` all of them.
    span = ("--as-of", "2000-01-01", "--as-of", "2100-01-01")
    d = run("diff", cid, *span, "--store", sqlite_url, cwd=tmp_path)
    assert d.returncode == 0, d.stderr.decode()
    assert b"(2,100 in all)" in d.stdout
    dj = orjson.loads(run("diff", cid, *span, "--json", "--store", sqlite_url, cwd=tmp_path).stdout)
    count = next(c for c in dj["changes"] if c["path"] == "activities.count")
    assert len(count["activities"]) == 2_100
    # explain of a field every activity moved: a line per step
    e = run("explain", cid, "activities.count", "--store", sqlite_url, cwd=tmp_path)
    assert e.returncode == 0, e.stderr.decode()
    out = e.stdout.decode().splitlines()
    at = out.index("how it got there (fold order), 2,100 steps:")
    steps = out[at + 1 :]
    assert len(steps) == 2_100
    assert steps[0].split()[1:4] == ["0", "->", "1"]
    assert steps[-1].split()[1:4] == ["2099", "->", "2100"]
    assert sum(line.endswith("(late)") for line in steps) >= 1


def test_an_audit_after_ingest_without_projecting_shows_the_catch_up(
    tmp_path: Path, sqlite_url: str
) -> None:
    """The first audit after `ingest --no-project` projects everything first: on a terminal,
    with a progress bar on stderr, and stdout is still only the answer."""
    records = list(generate(1_500, 3, seed=4))
    cid = records[0]["data"]["customer"]["id"]
    p = run(
        "ingest",
        write(tmp_path / "a.ndjson", records),
        "--no-project",
        "--store",
        sqlite_url,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr.decode()
    primary, replica = pty.openpty()  # stderr on a terminal, as a person runs it
    env = {k: v for k, v in os.environ.items() if k not in ("CUSTATE_STORE", "COLUMNS")}
    env["COLUMNS"] = "120"
    proc = subprocess.run(
        [str(CUSTATE), "history", cid, "--json", "--store", sqlite_url],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=replica,
        timeout=120,
    )
    os.close(replica)
    shown = b""
    while select.select([primary], [], [], 0.5)[0]:
        try:
            chunk = os.read(primary, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(primary)
    assert proc.returncode == 0
    assert b"projecting" in shown
    h = orjson.loads(proc.stdout)  # stdout holds the answer alone
    assert h["customer_id"] == cid
    assert h["activities"]
    # ... and the read model holds it all: nothing is left to project
    after = run("project", "--json", "--store", sqlite_url, cwd=tmp_path)
    assert orjson.loads(after.stdout)["projected"] == 0


def test_history_diff_explain_gaps(late_store: tuple[str, Path]) -> None:
    store, cwd = late_store
    p = run("history", CUST, "--json", "--store", store, cwd=cwd)
    assert p.returncode == 0, p.stderr.decode()
    h = orjson.loads(p.stdout)
    ids = [a["id"] for a in h["activities"]]
    assert ids == ["evcus_1", "evcus_2", "evcus_late", "evcus_3"]
    by = {a["id"]: a for a in h["activities"]}
    assert by["evcus_late"]["late"] is True
    k1, k2 = by["evcus_1"]["recorded_at"], by["evcus_late"]["recorded_at"]
    assert k1 < k2
    bal = [c for c in by["evcus_late"]["changes"] if c["path"] == "loyalty.cards.v_x.balance"]
    assert bal == [
        {"path": "loyalty.cards.v_x.balance", "op": "changed", "before": 100, "after": 150}
    ]

    table = run("history", CUST, "--store", store, cwd=cwd)
    assert table.returncode == 0
    assert b"evcus_late" in table.stdout
    assert b"(late)" in table.stdout
    window = run(
        "history", CUST, "--from", iso(T0 + timedelta(days=1)), "--json", "--store", store, cwd=cwd
    )
    assert [a["id"] for a in orjson.loads(window.stdout)["activities"]] == ["evcus_late", "evcus_3"]

    about = iso(T0 + timedelta(days=1, hours=1))
    d = run(
        "diff",
        CUST,
        "--as-of",
        about,
        "--known-at",
        k1,
        "--known-at",
        k2,
        "--json",
        "--store",
        store,
        cwd=cwd,
    )
    assert d.returncode == 0, d.stderr.decode()
    dj = orjson.loads(d.stdout)
    assert [a["id"] for a in dj["activities"]] == ["evcus_late"]
    assert {x for c in dj["changes"] for x in c["activities"]} == {"evcus_late"}
    assert any(
        c["path"] == "loyalty.cards.v_x.balance" and (c["before"], c["after"]) == (100, 150)
        for c in dj["changes"]
    )
    same = run(
        "diff",
        CUST,
        "--as-of",
        about,
        "--known-at",
        k1,
        "--known-at",
        k1,
        "--json",
        "--store",
        store,
        cwd=cwd,
    )
    assert orjson.loads(same.stdout)["changes"] == []
    text = run("diff", CUST, "--as-of", iso(T0), "--as-of", about, "--store", store, cwd=cwd)
    assert text.returncode == 0
    assert b"loyalty.cards.v_x.balance" in text.stdout
    bad = run("diff", CUST, "--as-of", about, "--store", store, cwd=cwd)
    assert bad.returncode == 2

    e = run(
        "explain",
        CUST,
        "loyalty.cards.v_x.balance",
        "--as-of",
        about,
        "--json",
        "--store",
        store,
        cwd=cwd,
    )
    ej = orjson.loads(e.stdout)
    assert ej["value"] == 150
    assert ej["set_by"]["id"] == "evcus_late"
    assert [s["activity"]["id"] for s in ej["chain"]] == ["evcus_1", "evcus_late"]
    e = run("explain", CUST, "loyalty.cards.v_x.balance", "--store", store, cwd=cwd)
    assert e.returncode == 0
    assert b"evcus_3" in e.stdout

    g = run("gaps", "--json", "--store", store, cwd=cwd)
    assert g.returncode == 0
    assert g.stdout == b""
    assert b"No gaps" in run("gaps", CUST, "--store", store, cwd=cwd).stdout


def test_gaps_cli_lists_the_activity_pair(tmp_path: Path, sqlite_url: str) -> None:
    f = write(
        tmp_path / "g.ndjson", [balance("evcus_a", 0, 100, 100), balance("evcus_b", 1, 190, 50)]
    )
    assert run("ingest", f, "--store", sqlite_url, cwd=tmp_path).returncode == 0
    g = run("gaps", "--json", "--store", sqlite_url, cwd=tmp_path)
    [gap] = [orjson.loads(line) for line in g.stdout.splitlines()]
    assert (
        gap["customer_id"],
        gap["previous_activity_id"],
        gap["activity_id"],
        gap["missing"],
    ) == (
        CUST,
        "evcus_a",
        "evcus_b",
        40,
    )
    assert b"evcus_b" in run("gaps", "--store", sqlite_url, cwd=tmp_path).stdout


def test_report_is_self_contained_and_chromium_draws_the_chart(
    tmp_path: Path, sqlite_url: str
) -> None:
    records = list(generate(1500, 3, seed=4))
    half = len(records) // 2
    # Deliver the later half first: the earlier half then arrives late and corrects things.
    write(tmp_path / "b.ndjson", records[half:])
    write(tmp_path / "a.ndjson", records[:half])
    for name in ("b.ndjson", "a.ndjson"):
        assert run("ingest", name, "--store", sqlite_url, cwd=tmp_path).returncode == 0
    customer = records[0]["data"]["customer"]["id"]
    out = tmp_path / "report.html"
    p = run("report", customer, "-o", out, "--store", sqlite_url, cwd=tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    page = out.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "external resource"
    assert "<script" not in page.lower() or "http" not in page
    assert 'id="balance-chart"' in page
    assert 'id="corrections"' in page  # late deliveries made corrections
    if not CHROMIUM.exists():
        pytest.skip("Chromium is not installed (/usr/bin/chromium; apt-get install -y chromium)")
    dom = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--dump-dom",
            out.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr.decode(errors="replace")[-2000:]
    html = dom.stdout.decode()
    lines = re.findall(r'<polyline[^>]*class="balance"[^>]*points="([^"]+)"', html)
    assert lines, "no balance line drawn"
    coords = lines[0].split()
    assert len(coords) >= 4
    ys = {c.split(",")[1] for c in coords}
    assert len(ys) > 1, "the balance line is flat"
    assert re.search(r'<svg id="segment-chart"[^>]*>.*?<rect class="span"', html, re.S)
    assert re.search(r'<svg id="orders-chart"[^>]*>.*?<rect class="bar"', html, re.S)
