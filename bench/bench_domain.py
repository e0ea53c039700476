"""Throughput of the pure domain core, single process, with baselines from the same run.

(a) parse + validate: NDJSON line -> `orjson.loads` -> `custate.domain.parse_activity`,
    streamed (each activity is dropped after parsing, as an ingest loop does), against
    `orjson.loads` alone and `msgspec.convert(data, FullPayload)` alone on the same records.
(b) fold: `custate.domain.fold` over each customer's already-parsed activities (in arrival
    order), against a loop that only sorts each customer's list by the fold key and counts.
(c) memory: peak of streaming-parsing a generated NDJSON file, in a fresh subprocess (so the
    figure is not inflated by this process's in-memory data sets).

    python bench/bench_domain.py                  # table
    python bench/bench_domain.py --json out.json  # table, and the figures as JSON
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson

from custate.domain import Activity, fold, parse_activity
from custate.domain.activity import unwrap
from custate.domain.payload import FullPayload

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.generate import generate_ndjson_bytes, write_ndjson

DICT_WINDOW = 10_000
PARSE_TARGET = 30_000  # activities/s on one core (the target)
FOLD_TARGET = 150_000


def _median_rate(n: int, fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    """Median activities/s of `repeats` timed runs (after one untimed warm-up run)."""
    fn()
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times), times


def _figures(n: int, rate: float, times: list[float]) -> dict[str, Any]:
    return {
        "per_s": rate,
        "best_per_s": n / min(times),
        "us_per_activity": 1e6 / rate,
        "times_s": times,
    }


# --------------------------------------------------------------------------- (a) parse


def bench_parse(lines: list[bytes], repeats: int, kept: bool) -> dict[str, Any]:
    loads = orjson.loads
    n = len(lines)
    nbytes = sum(len(x) for x in lines)
    # The baselines on decoded dicts cycle over a window of the data, so that this process
    # does not hold every decoded record (gigabytes, and a heap the GC would keep walking).
    window = min(n, DICT_WINDOW)
    rounds, rest = divmod(n, window)
    records = [loads(x) for x in lines[:window]]
    payloads = [unwrap(r["data"])[0] for r in records]

    def validate(data: Any) -> FullPayload:
        return msgspec.convert(data, FullPayload)

    gc.freeze()

    def loads_only() -> None:
        for line in lines:
            loads(line)

    def validate_only() -> None:
        for _ in range(rounds):
            for p in payloads:
                validate(p)
        for p in payloads[:rest]:
            validate(p)

    def parse_only() -> None:  # parse_activity on already-decoded records
        for _ in range(rounds):
            for r in records:
                parse_activity(r)
        for r in records[:rest]:
            parse_activity(r)

    def full() -> None:
        for line in lines:
            parse_activity(loads(line))

    def full_kept() -> None:  # the same, keeping every Activity (what a batch fold needs)
        kept = [parse_activity(loads(line)) for line in lines]
        del kept

    out: dict[str, Any] = {"activities": n, "avg_bytes": nbytes / n}
    cases: list[tuple[str, Callable[[], None]]] = [
        ("orjson_loads", loads_only),
        ("payload_validate", validate_only),
        ("parse_activity_on_dicts", parse_only),
        ("loads_parse_activity", full),
    ]
    if kept:
        cases.append(("loads_parse_activity_kept", full_kept))
    for name, fn in cases:
        rate, times = _median_rate(n, fn, repeats)
        out[name] = _figures(n, rate, times)
    full_rate = out["loads_parse_activity"]["per_s"]
    out["ratio_full_vs_loads"] = out["orjson_loads"]["per_s"] / full_rate
    out["ratio_full_vs_validate"] = out["payload_validate"]["per_s"] / full_rate
    out["mb_per_s"] = full_rate * out["avg_bytes"] / 1e6
    gc.unfreeze()
    return out


# --------------------------------------------------------------------------- (b) fold


def _fold_key(a: Activity) -> tuple[datetime, int, str]:
    return a.key


def bench_fold(lines: list[bytes], repeats: int) -> dict[str, Any]:
    by_customer: dict[str, list[Activity]] = {}
    for line in lines:
        a = parse_activity(orjson.loads(line))
        by_customer.setdefault(a.customer_id, []).append(a)
    groups = sorted(by_customer.items())
    n = sum(len(v) for _, v in groups)
    # The parsed activities are long-lived input: keep the GC from re-walking them on every
    # full collection (a full collection over ~10M objects takes a good part of a second and
    # lands in a random run).
    gc.freeze()

    def fold_all_customers() -> None:
        for cid, acts in groups:
            fold(acts, cid)

    def baseline_sort_count() -> None:
        count = 0
        for _, acts in groups:
            for _ in sorted(acts, key=_fold_key):
                count += 1

    sizes = sorted(len(v) for _, v in groups)
    out: dict[str, Any] = {
        "activities": n,
        "customers": len(groups),
        "per_customer_median": sizes[len(sizes) // 2],
        "per_customer_max": sizes[-1],
    }
    for name, fn in (("fold", fold_all_customers), ("baseline_sort_count", baseline_sort_count)):
        rate, times = _median_rate(n, fn, repeats)
        out[name] = _figures(n, rate, times)
    out["ratio_fold_vs_baseline"] = out["baseline_sort_count"]["per_s"] / out["fold"]["per_s"]
    gc.unfreeze()
    return out


# --------------------------------------------------------------------------- (c) memory


def _peak_rss_bytes() -> int:
    """This process's peak resident set. Linux `VmHWM` starts afresh at exec; `ru_maxrss`
    would carry the parent's peak over into a child process."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _stream_child(path: str, mode: str, limit: int) -> None:
    """Runs in a fresh interpreter: parse the file line by line, print figures as JSON."""
    rss0 = _peak_rss_bytes()
    traced = mode.endswith("-traced")
    if traced:
        tracemalloc.start()
    kept: list[Activity] = []
    n = 0
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        for line in f:
            if n >= limit:
                break
            a = parse_activity(orjson.loads(line))
            n += 1
            if mode.startswith("kept"):
                kept.append(a)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] if traced else None
    print(
        json.dumps(
            {
                "mode": mode,
                "activities": n,
                "seconds": elapsed,
                "maxrss_before_bytes": rss0,
                "maxrss_after_bytes": _peak_rss_bytes(),
                "tracemalloc_peak_bytes": peak,
            }
        )
    )


def _child(path: str, mode: str, limit: int) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, __file__, "--_child", path, mode, str(limit)],
        check=True,
        capture_output=True,
        text=True,
    )
    parsed: dict[str, Any] = json.loads(res.stdout)
    return parsed


def bench_memory(n: int, n_kept: int, customers: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"activities": n}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "stream.ndjson")
        with open(path, "wb") as f:
            write_ndjson(f, n, customers, seed)
        out["file_bytes"] = os.path.getsize(path)
        out["stream"] = _child(path, "stream", n)
        out["stream_traced"] = _child(path, "stream-traced", n)
        if n_kept:
            k = out["kept"] = _child(path, "kept", n_kept)
            growth = k["maxrss_after_bytes"] - k["maxrss_before_bytes"]
            k["rss_growth_per_activity_bytes"] = growth / k["activities"]
    return out


# --------------------------------------------------------------------------- report


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}/s"


def _table(rows: Iterable[tuple[str, ...]]) -> str:
    rows = list(rows)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, r in enumerate(rows):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(res: dict[str, Any]) -> str:
    p, f = res["parse"], res["fold"]
    out = [
        f"custate domain benchmark  {res['date']}  python {res['python']}  "
        f"cpus={res['cpus']}  repeats={res['repeats']} (median)",
        f"data: {p['activities']:,} activities, avg {p['avg_bytes']:,.0f} B/line NDJSON; "
        f"fold: {f['customers']:,} customers, median {f['per_customer_median']} / max "
        f"{f['per_customer_max']} activities each",
        "",
        "(a) parse + validate, streamed",
    ]

    def row(label: str, d: dict[str, Any], note: str = "") -> tuple[str, ...]:
        return (
            label,
            _fmt_rate(d["per_s"]),
            _fmt_rate(d["best_per_s"]),
            f"{d['us_per_activity']:.1f}",
            note,
        )

    target = "PASS" if p["loads_parse_activity"]["per_s"] >= PARSE_TARGET else "MISS"
    out.append(
        _table(
            [
                ("what", "median", "best", "us each", "note"),
                row("orjson.loads only (baseline)", p["orjson_loads"]),
                row("msgspec.convert(data, FullPayload) only (baseline)", p["payload_validate"]),
                row("parse_activity on decoded dicts", p["parse_activity_on_dicts"]),
                row(
                    "orjson.loads + parse_activity",
                    p["loads_parse_activity"],
                    f"target >= {PARSE_TARGET:,}/s: {target}; {p['mb_per_s']:.0f} MB/s",
                ),
            ]
            + (
                [
                    row(
                        "  same, appending every Activity to a list",
                        p["loads_parse_activity_kept"],
                        "allocation + GC walking a growing heap",
                    )
                ]
                if "loads_parse_activity_kept" in p
                else []
            )
        )
    )
    out.append(
        f"ratios: loads+parse is {p['ratio_full_vs_loads']:.2f}x the time of orjson.loads "
        f"alone, {p['ratio_full_vs_validate']:.2f}x msgspec.convert(data, FullPayload) alone"
    )
    out += ["", "(b) fold of already-parsed activities"]
    target = "PASS" if f["fold"]["per_s"] >= FOLD_TARGET else "MISS"
    out.append(
        _table(
            [
                ("what", "median", "best", "us each", "note"),
                row("sort by fold key + count (baseline)", f["baseline_sort_count"]),
                row("custate.domain.fold", f["fold"], f"target >= {FOLD_TARGET:,}/s: {target}"),
            ]
        )
    )
    out.append(f"ratio: fold is {f['ratio_fold_vs_baseline']:.2f}x the time of the baseline")
    m = res.get("memory")
    if m:
        mib = 1024 * 1024
        s, st = m["stream"], m["stream_traced"]
        rows = [
            ("what", "activities", "peak RSS", "RSS growth", "tracemalloc peak"),
            (
                "streamed (parse and drop)",
                f"{s['activities']:,}",
                f"{s['maxrss_after_bytes'] / mib:.1f} MiB",
                f"{(s['maxrss_after_bytes'] - s['maxrss_before_bytes']) / mib:.1f} MiB",
                f"{st['tracemalloc_peak_bytes'] / mib:.2f} MiB",
            ),
        ]
        k = m.get("kept")
        if k:
            rows.append(
                (
                    "kept (list of every Activity)",
                    f"{k['activities']:,}",
                    f"{k['maxrss_after_bytes'] / mib:.1f} MiB",
                    f"{(k['maxrss_after_bytes'] - k['maxrss_before_bytes']) / mib:.1f} MiB",
                    f"{k['rss_growth_per_activity_bytes'] / 1024:.1f} KiB per activity",
                )
            )
        out += [
            "",
            f"(c) memory, fresh process reading a {m['file_bytes'] / mib:,.0f} MiB NDJSON file "
            f"of {m['activities']:,} activities",
            _table(rows),
        ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="custate domain benchmark (single process)")
    ap.add_argument("--activities", type=int, default=100_000)
    ap.add_argument("--customers", type=int, default=1_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--late-fraction", type=float, default=0.05)
    ap.add_argument("--stream-activities", type=int, default=200_000, help="(c); 0 skips")
    ap.add_argument(
        "--kept-activities", type=int, default=20_000, help="(c) parse and keep; 0 skips"
    )
    ap.add_argument(
        "--kept", action="store_true", help="(a) also time parsing into one big list (slow)"
    )
    ap.add_argument("--json", nargs="?", const="-", metavar="PATH", help="also write JSON")
    ap.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        path, mode, limit = args._child
        _stream_child(path, mode, int(limit))
        return 0

    lines = list(
        generate_ndjson_bytes(
            args.activities, args.customers, args.seed, late_fraction=args.late_fraction
        )
    )
    res: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "repeats": args.repeats,
        "args": {k: v for k, v in vars(args).items() if k not in ("json", "_child")},
    }
    res["parse"] = bench_parse(lines, args.repeats, args.kept)
    res["fold"] = bench_fold(lines, args.repeats)
    del lines
    gc.collect()
    if args.stream_activities:
        res["memory"] = bench_memory(
            args.stream_activities,
            min(args.kept_activities, args.stream_activities),
            args.customers,
            args.seed,
        )
    print(report(res))
    if args.json:
        blob = json.dumps(res, indent=2)
        if args.json == "-":
            print(blob)
        else:
            Path(args.json).write_text(blob + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
