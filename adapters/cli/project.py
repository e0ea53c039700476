"""`custate project` and `custate rebuild`: keep the read model up to date, or make it anew."""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console

from custate.adapters.cli.app import app, examples
from custate.adapters.cli.common import fail, open_store, progress_bar, took
from custate.adapters.cli.logging_options import log_format
from custate.adapters.cli.store_options import JsonOption, StoreOption

if TYPE_CHECKING:
    from custate.adapters.api import Custate, WorkerEvent
    from custate.adapters.metrics import Metrics

_log = logging.getLogger("custate.project")


@app.command(
    epilog=examples(
        "custate project",
        "custate project --follow --store postgresql://localhost/custate",
        "custate --log-format json project --follow --metrics-port 9108",
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
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=1,
            max=65535,
            help="With --follow: serve Prometheus metrics (catch-up, lag) at "
            "http://HOST:PORT/metrics (needs the server extra).",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", help="Address of --metrics-port.")
    ] = "127.0.0.1",
) -> None:
    """Fold newly stored activities into the read model (once, or --follow until stopped)."""
    from custate.adapters.api import CatchUpReport

    if metrics_port is not None and not follow:
        fail("--metrics-port needs --follow")

    started = time.perf_counter()
    cs = open_store(store)
    stop = False

    def _stop(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    total = CatchUpReport()
    err = Console(stderr=True)
    json_logs = log_format() == "json"  # then stderr holds JSON lines only
    stop_metrics = None
    try:
        if follow:
            signal.signal(signal.SIGINT, _stop)
            signal.signal(signal.SIGTERM, _stop)
            metrics: Metrics | None = None
            if metrics_port is not None:
                metrics, stop_metrics = _serve_metrics(cs, metrics_host, metrics_port)
            if json_logs:
                _log.info("following new activities")
            else:
                err.print("following new activities; Ctrl-C stops")

            def said(e: WorkerEvent) -> None:
                if metrics is not None:
                    metrics.worker_event(e)
                if e.kind == "projected":
                    return
                if json_logs:
                    _log.warning("%s", e.message, extra={"event": e.kind})
                else:
                    err.print(f"custate project: {e.message}", markup=False, highlight=False)

            total = cs.worker(poll=poll, on_event=said).run(lambda: stop)
        else:
            total = cs.project(should_stop=lambda: stop)
    finally:
        if stop_metrics is not None:
            stop_metrics()
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


def _serve_metrics(cs: Custate, host: str, port: int) -> tuple[Metrics, Callable[[], None]]:
    """This process's metrics (catch-up, lag), served on host:port; and how to stop."""
    try:
        from custate.adapters.metrics import LAG_COUNT_AT_MOST, Metrics, start_metrics_server
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "prometheus_client":
            raise
        fail("--metrics-port needs prometheus_client, in the server extra: "
             "pip install 'custate[server]'")  # fmt: skip
        raise  # unreachable
    metrics = Metrics(lambda: cs.freshness(count_at_most=LAG_COUNT_AT_MOST), http=False)
    try:
        stop = start_metrics_server(metrics, port, host)
    except OSError as e:
        fail(f"--metrics-port: cannot listen on {host}:{port}: {e.strerror or e}")
        raise  # unreachable
    _log.info("metrics at http://%s:%d/metrics", host, port)
    return metrics, stop


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
