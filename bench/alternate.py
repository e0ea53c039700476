"""Run one benchmark in two checkouts, alternating, and compare every figure.

These machines are shared and their speed moves from minute to minute, so a figure of new
code is only worth its ratio to the old code's, measured in the same minutes. This runs
the same bench script with the same arguments in an old and a new checkout (each with its
own `.venv`), old first then new first in turn, each run writing its JSON (the script's
`--json PATH`), and prints each numeric figure of both sides and the ratio of their
medians (new / old):

    .venv/bin/python bench/alternate.py --old ../base --new . --runs 2 -- \\
        bench/bench_audit.py --activities 10000 --customers 100000

Both checkouts may share their generated inputs (`bench/out/`, a symlink in one of them).
The comparison so far is written after every run (`--json`, default
`bench/out/alternate.json`)."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def flatten(value: Any, prefix: str = "") -> dict[str, float]:
    """Every number in a JSON value, by its dotted path (booleans left out)."""
    out: dict[str, float] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out[prefix] = float(value)
    return out


def run_once(checkout: Path, script: list[str], out: Path) -> dict[str, float]:
    cmd = [str(checkout / ".venv" / "bin" / "python"), *script, "--json", str(out)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(
            f"{checkout}: {' '.join(script)} failed ({proc.returncode}):\n{proc.stderr}"
        )
    print(f"  {checkout.name or checkout}: {took:.0f} s", file=sys.stderr)
    return flatten(json.loads(out.read_text()))


def compare(old: list[dict[str, float]], new: list[dict[str, float]]) -> list[dict[str, Any]]:
    names = [n for n in old[0] if all(n in r for r in old + new)] if old and new else []
    rows = []
    for n in names:
        a = [r[n] for r in old]
        b = [r[n] for r in new]
        ma, mb = statistics.median(a), statistics.median(b)
        rows.append({"figure": n, "old": a, "new": b, "ratio": mb / ma if ma else None})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    width = max([len(r["figure"]) for r in rows] + [6])
    lines = [
        f"| {'figure':<{width}} | old | new | new / old |",
        f"| {'-' * width} | --- | --- | ---: |",
    ]
    for r in rows:
        fmt = ", ".join
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        old = fmt(f"{v:.4g}" for v in r["old"])
        new = fmt(f"{v:.4g}" for v in r["new"])
        lines.append(f"| {r['figure']:<{width}} | {old} | {new} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--old", type=Path, required=True, help="checkout of the old code")
    ap.add_argument("--new", type=Path, required=True, help="checkout of the new code")
    ap.add_argument("--runs", type=int, default=2, help="runs of each side")
    ap.add_argument("--json", type=Path, default=Path("bench/out/alternate.json"))
    ap.add_argument("script", nargs=argparse.REMAINDER, help="-- SCRIPT [ARGS...]")
    args = ap.parse_args(argv)
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    if not script:
        ap.error("give the bench script and its arguments after --")
    sides = {"old": args.old.resolve(), "new": args.new.resolve()}
    results: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    args.json = args.json.resolve()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    for i in range(args.runs):
        order = ["old", "new"] if i % 2 == 0 else ["new", "old"]
        print(f"run {i + 1} of {args.runs}: {' then '.join(order)}", file=sys.stderr)
        for side in order:
            out = args.json.with_name(f"{args.json.stem}_{side}_{i}.json")
            results[side].append(run_once(sides[side], script, out))
        rows = compare(results["old"], results["new"])
        args.json.write_text(json.dumps({"script": script, "rows": rows}, indent=2) + "\n")
    print(table(compare(results["old"], results["new"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
