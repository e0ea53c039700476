"""A rebuild's catch-up split over processes, every core decoding and folding its own
customers (`rebuild --processes N`).

Each process reads the same notification windows a one-process catch-up reads (so each
customer's batches, late re-folds and checkpoints are the same) and projects only its
share of the customers:

- PostgreSQL, with a store of several partitions: a process per group of partitions, each
  writing the new generation's tables through its own connection, as projector workers
  do (the partitions' tracking positions keep them apart).
- SQLite (one writer, one partition): customers are split by CRC-32 of their id modulo
  the process count; each process writes its customers' rows into a scratch database of
  its own beside the store, and the parent copies them all into the new generation in one
  transaction (`INSERT ... SELECT` from the attached scratch files), through its one
  connection, then removes them.

Every process stops at the store's head as it was when the rebuild started; the parent
catches the rest up itself. The processes are started with the "spawn" method, from a
context made here (the process-wide start method is left as it is)."""

from __future__ import annotations

import multiprocessing
import queue
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import update

from custate.adapters.eventstore import EventStore, make_engine, parse_store_url
from custate.adapters.readmodel.runner import CatchUpReport
from custate.adapters.readmodel.view import ReadModel

__all__ = ["PARALLEL_FROM", "parallel_catch_up", "processes_for"]

# With `processes=None`, stores of fewer activities than this are rebuilt in one process:
# starting processes costs more than they would save.
PARALLEL_FROM = 20_000


def processes_for(requested: int | None, activities: int, cpus: int | None) -> int:
    """How many processes a rebuild of `activities` uses: `requested` if given, else one
    per core (`cpus`) for a store of at least `PARALLEL_FROM` activities, else one."""
    if requested is not None:
        return requested
    if activities < PARALLEL_FROM:
        return 1
    return max(1, cpus or 1)


def parallel_catch_up(
    fresh: ReadModel,
    processes: int,
    batch_size: int,
    interval: int,
    progress: Callable[[int], None] | None = None,
) -> CatchUpReport | None:
    """Catch the (empty) generation `fresh` up to the store's head with `processes`
    processes; None when it cannot be split (a PostgreSQL store of one partition, or a
    generation an interrupted rebuild left partly built: the caller catches it up in one
    process). What is stored after the head it started from is left to the caller."""
    store = fresh.store
    if processes < 2 or any(fresh.positions().values()):
        return None
    upto = store.head()
    if upto == 0:
        return None
    if store.url.kind == "sqlite":
        return _sqlite(fresh, processes, batch_size, interval, upto, progress)
    if fresh.partitions < 2:
        return None
    groups = [list(range(fresh.partitions))[g::processes] for g in range(processes)]
    jobs = [
        {"partitions": g, "share": None, "scratch": None} for g in groups if g
    ]  # no more processes than partitions
    reports = _run(store.url.url, fresh.t.generation, batch_size, interval, upto, jobs, progress)
    return _sum(reports)


def _sqlite(
    fresh: ReadModel,
    processes: int,
    batch_size: int,
    interval: int,
    upto: int,
    progress: Callable[[int], None] | None,
) -> CatchUpReport:
    store = fresh.store
    db = Path(store.url.env["SQLITE_DBNAME"])
    with tempfile.TemporaryDirectory(prefix=f".{db.name}.rebuild-", dir=db.parent) as tmp:
        scratch = [str(Path(tmp) / f"part{g}.db") for g in range(processes)]
        jobs = [
            {"partitions": None, "share": (g, processes), "scratch": scratch[g]}
            for g in range(processes)
        ]
        reports = _run(
            store.url.url, fresh.t.generation, batch_size, interval, upto, jobs, progress
        )
        positions = {r.position for r in reports}
        if len(positions) != 1:
            raise RuntimeError(f"rebuild processes stopped at different positions: {positions}")
        _merge(fresh, scratch, positions.pop())
    return _sum(reports)


def _merge(fresh: ReadModel, scratch: Sequence[str], position: int) -> None:
    """Copy every scratch database's rows into `fresh`'s tables and set its tracking
    position, in one transaction."""
    t = fresh.t
    tables = [x for x in t.metadata.sorted_tables if x.name != t.tracking.name]
    raw = fresh.engine.raw_connection()
    try:
        cur = raw.cursor()
        names = [f"scratch{i}" for i in range(len(scratch))]
        for name, path in zip(names, scratch, strict=True):
            cur.execute(f"ATTACH DATABASE ? AS {name}", (path,))
        try:
            cur.execute("BEGIN IMMEDIATE")
            for table in tables:
                cols = ", ".join(f'"{c.name}"' for c in table.columns)
                for name in names:
                    cur.execute(
                        f'INSERT INTO main."{table.name}" ({cols}) '
                        f'SELECT {cols} FROM {name}."{table.name}"'
                    )
            tr = t.tracking
            sql = update(tr).values(notification_id=position).compile(dialect=fresh.engine.dialect)
            cur.execute(sql.string, tuple(sql.params[k] for k in sql.positiontup or ()))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        finally:
            for name in names:
                cur.execute(f"DETACH DATABASE {name}")
            cur.close()
    finally:
        raw.close()


def _sum(reports: Sequence[CatchUpReport]) -> CatchUpReport:
    return CatchUpReport(
        activities=sum(r.activities for r in reports),
        batches=max((r.batches for r in reports), default=0),
        late=sum(r.late for r in reports),
        position=min((r.position for r in reports), default=0),
    )


def _run(
    url: str,
    generation: int,
    batch_size: int,
    interval: int,
    upto: int,
    jobs: Sequence[dict[str, Any]],
    progress: Callable[[int], None] | None,
) -> list[CatchUpReport]:
    """Run each job in a process of its own; their reports, in job order. A process that
    fails stops the others, and its error is raised here."""
    ctx = multiprocessing.get_context("spawn")
    messages: Any = ctx.Queue()
    procs = [
        ctx.Process(
            target=_work,
            args=(i, url, generation, batch_size, interval, upto, job, messages),
            name=f"custate-rebuild-{i}",
            daemon=True,
        )
        for i, job in enumerate(jobs)
    ]
    reports: dict[int, CatchUpReport] = {}
    try:
        for p in procs:
            p.start()
        while len(reports) < len(procs):
            try:
                msg = messages.get(timeout=0.5)
            except queue.Empty:
                for i, p in enumerate(procs):
                    if i not in reports and not p.is_alive() and p.exitcode != 0:
                        raise RuntimeError(
                            f"rebuild process {i} (pid {p.pid}) ended with exit code {p.exitcode}"
                        ) from None
                continue
            kind = msg[0]
            if kind == "progress":
                if progress is not None:
                    progress(msg[1])
            elif kind == "done":
                reports[msg[1]] = CatchUpReport(**msg[2])
            else:
                raise RuntimeError(f"rebuild process {msg[1]} failed:\n{msg[2]}")
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            if p.pid is not None:
                p.join()
        messages.close()
    return [reports[i] for i in range(len(procs))]


def _work(
    index: int,
    url: str,
    generation: int,
    batch_size: int,
    interval: int,
    upto: int,
    job: dict[str, Any],
    messages: Any,
) -> None:
    """One process of a parallel rebuild: catch generation `generation` up to `upto` for
    its partitions or share of the customers, into the store or into its scratch file."""
    try:
        store = EventStore(url)
        try:
            engine = None
            if job["scratch"] is not None:
                engine = make_engine(parse_store_url(f"sqlite:///{job['scratch']}"))
            view = ReadModel(
                store,
                generation=generation,
                interval=interval,
                partitions=1 if engine is not None else None,
                engine=engine,
            )
            share = job["share"]
            report = view.catch_up(
                batch_size,
                lambda n: messages.put(("progress", n)),
                partitions=job["partitions"],
                share=None if share is None else tuple(share),
                upto=upto,
            )
            if engine is not None:
                engine.dispose()
        finally:
            store.close()
        messages.put(
            (
                "done",
                index,
                {
                    "activities": report.activities,
                    "batches": report.batches,
                    "late": report.late,
                    "position": report.position,
                },
            )
        )
    except BaseException:
        messages.put(("error", index, traceback.format_exc()))
        raise
