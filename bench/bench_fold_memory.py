"""Peak memory (resident set size) of `custate fold` on a generated history, folded in
memory and folded from disk, and whether both print the same bytes.

The history is `bench/generate.py`'s (late and duplicate deliveries on by default), written
as NDJSON to a scratch directory. Each run is `custate fold FILE --memory SIZE` in a
subprocess, its peak RSS read from `os.wait4`:

- held: `--memory 1TB`, so every activity is held in memory (the fold as it was before it
  had a budget);
- spilled: the default budget (or `--memory`), past which activities go to a temporary
  SQLite file;
- baseline (with `--baseline PATH`): another `custate` executable, e.g. an older checkout's,
  run without `--memory`.

The outputs of all runs are compared byte for byte. Times are reported too, but this
measures memory: run it on a quiet machine for times worth quoting.

    python bench/bench_fold_memory.py --activities 200000 --customers 4000
    python bench/bench_fold_memory.py -n 1000000 -m 20000 --skip-held --json out.json
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.generate import write_ndjson

CUSTATE = str(Path(sys.executable).with_name("custate"))
HELD = "1TB"


@dataclass(frozen=True)
class Run:
    name: str
    command: list[str]
    peak_rss_mb: float
    seconds: float
    exit_code: int
    output_bytes: int
    same_output: bool  # as the first run's


def measure(name: str, command: list[str], out: Path, reference: Path | None) -> Run:
    """Run `command` with its stdout in `out`; its peak RSS from the kernel's accounting."""
    start = time.perf_counter()
    with out.open("wb") as f:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=f)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    same = reference is None or filecmp.cmp(out, reference, shallow=False)
    return Run(
        name=name,
        command=command,
        peak_rss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
        seconds=round(seconds, 2),
        exit_code=code,
        output_bytes=out.stat().st_size,
        same_output=same,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--activities", "-n", type=int, default=200_000)
    ap.add_argument("--customers", "-m", type=int, default=4_000)
    ap.add_argument("--seed", "-s", type=int, default=0)
    ap.add_argument("--late-fraction", type=float, default=0.1)
    ap.add_argument("--duplicate-fraction", type=float, default=0.05)
    ap.add_argument("--memory", help="the spilled run's --memory (default: the CLI's default)")
    ap.add_argument("--input", type=Path, help="fold this file instead of generating one")
    ap.add_argument("--baseline", help="another custate executable, run without --memory")
    ap.add_argument(
        "--skip-held", action="store_true", help="no held run (it needs ~17 KB per activity)"
    )
    ap.add_argument("--custate", default=CUSTATE, help="the custate executable under test")
    ap.add_argument("--workdir", type=Path, help="scratch directory (default: a temporary one)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-fold-", dir=args.workdir) as scratch:
        work = Path(scratch)
        source = args.input
        if source is None:
            source = work / "history.ndjson"
            with source.open("wb") as f:
                records = write_ndjson(
                    f,
                    args.activities,
                    args.customers,
                    args.seed,
                    late_fraction=args.late_fraction,
                    duplicate_fraction=args.duplicate_fraction,
                )
        else:
            with source.open("rb") as f:
                records = sum(1 for _ in f)
        size = source.stat().st_size
        plan: list[tuple[str, list[str]]] = []
        if args.baseline:
            plan.append(("baseline", [args.baseline, "fold", str(source)]))
        if not args.skip_held:
            plan.append(("held", [args.custate, "fold", str(source), "--memory", HELD]))
        spilled = [args.custate, "fold", str(source)]
        plan.append(("spilled", spilled + (["--memory", args.memory] if args.memory else [])))

        runs: list[Run] = []
        reference: Path | None = None
        for name, command in plan:
            out = work / f"{name}.out"
            runs.append(measure(name, command, out, reference))
            reference = reference or out

    result = {
        "input": {
            "records": records,
            "bytes": size,
            "activities": None if args.input else args.activities,
            "customers": None if args.input else args.customers,
            "late_fraction": args.late_fraction,
            "duplicate_fraction": args.duplicate_fraction,
        },
        "runs": [asdict(r) for r in runs],
        "all_outputs_identical": all(r.same_output for r in runs),
    }
    print(f"{records:,} records, {size / 1e6:,.0f} MB")
    print(f"{'run':<10} {'peak RSS':>12} {'time':>9} {'exit':>5}  same output")
    for r in runs:
        print(
            f"{r.name:<10} {r.peak_rss_mb:>9,.0f} MB {r.seconds:>8.1f}s {r.exit_code:>5}  "
            f"{'yes' if r.same_output else 'NO'}"
        )
    print(orjson.dumps(result).decode())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    same_exit = len({r.exit_code for r in runs}) == 1
    return 0 if result["all_outputs_identical"] and same_exit else 1


if __name__ == "__main__":
    raise SystemExit(main())
