"""`custate project` and `custate rebuild`: keep the read model up to date, or make it anew."""

from __future__ import annotations

import signal
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console

from custate.adapters.cli.app import app, examples
from custate.adapters.cli.common import open_store, progress_bar, took
from custate.adapters.cli.store_options import JsonOption, StoreOption

if TYPE_CHECKING:
    from custate.adapters.api import WorkerEvent


@app.command(
    epilog=examples(
        "custate project", "custate project --follow --store postgresql://localhost/custate"
    )
)
def project(
    store: StoreOption = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep following new activities until interrupted.")
    ] = False,
    poll: Annotated[
        float, typer.Option("--poll", min=0.05, help="Seconds between looks, with --follow.")
    ] = 0.5,
    as_json: JsonOption = False,
) -> None:
    """Fold newly stored activities into the read model (once, or --follow until stopped)."""
    from custate.adapters.api import CatchUpReport

    started = time.perf_counter()
    cs = open_store(store)
    stop = False

    def _stop(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    total = CatchUpReport()
    err = Console(stderr=True)
    try:
        if follow:
            signal.signal(signal.SIGINT, _stop)
            signal.signal(signal.SIGTERM, _stop)
            err.print("following new activities; Ctrl-C stops")

            def said(e: WorkerEvent) -> None:
                if e.kind != "projected":
                    err.print(f"custate project: {e.message}", markup=False, highlight=False)

            total = cs.worker(poll=poll, on_event=said).run(lambda: stop)
        else:
            total = cs.project(should_stop=lambda: stop)
    finally:
        cs.close()
    summary = {
        "projected": total.activities,
        "late": total.late,
        "batches": total.batches,
        "position": total.position,
    }
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(summary) + b"\n")
    else:
        Console().print(
            f"projected {total.activities:,} activities ({total.late:,} late re-folds); "
            f"read model at position {total.position:,}"
        )
    took(started, "project")


@app.command(epilog=examples("custate rebuild"))
def rebuild(
    store: StoreOption = None,
    as_json: JsonOption = False,
    processes: Annotated[
        int | None,
        typer.Option(
            "--processes",
            min=1,
            help="processes that decode and fold, each its own customers (default: one "
            "per core; 1: this process only)",
        ),
    ] = None,
) -> None:
    """Rebuild the read model from the store, blue/green; an interrupted rebuild resumes.

    The old tables keep answering until the new ones have caught up; then they swap in one
    step."""
    started = time.perf_counter()
    cs = open_store(store)
    err = Console(stderr=True)
    try:
        total = cs.count_activities()
        if err.is_terminal and not as_json:
            with progress_bar(err) as bar:
                task = bar.add_task("rebuilding", total=total)
                r = cs.rebuild(progress=lambda n: bar.advance(task, n), processes=processes)
        else:
            r = cs.rebuild(processes=processes)
    finally:
        cs.close()
    if as_json:
        sys.stdout.buffer.write(
            orjson.dumps({"projected": r.activities, "position": r.position}) + b"\n"
        )
    else:
        Console().print(f"rebuilt the read model from {r.activities:,} activities")
    took(started, "rebuild")
