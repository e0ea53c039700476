"""A rebuild's catch-up split over processes, every core decoding and folding its own
customers (`rebuild --processes N`).

Each process reads the same notification windows a one-process catch-up reads (so each
customer's batches, late re-folds and checkpoints are the same) and projects only its
share of the customers:

- A store of several partitions (PostgreSQL's default): a process per group of
  partitions, each writing the new generation's tables through its own connection, as
  projector workers do (the partitions' tracking positions keep them apart).
- A store of one partition (SQLite's): customers are split by CRC-32 of their id modulo
  the process count, and each process keeps its position in a tracking row of its own
  (`share_row`). They too write through their own connections; on SQLite one write
  transaction at a time (its lock, waited for) while the others decode and fold. Once
  all are done the parent moves the store's tracking row to where they stopped and
  deletes theirs, in one transaction. A rebuild interrupted before that leaves share
  rows: the next one builds that generation again from empty (`unfinished`).

The calling process projects the first share itself and starts a process for each
other one. Every process stops at the store's head as it was when the rebuild started;
the calling one catches the rest up after. The processes are started with the "spawn"
method, from a context made here (the process-wide start method is left as it is)."""

from __future__ import annotations

import multiprocessing
import pickle
import queue
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import delete, select, update

from custate.adapters.eventstore import APP_NAME, EventStore
from custate.adapters.readmodel.runner import CatchUpReport
from custate.adapters.readmodel.view import ReadModel

__all__ = ["PARALLEL_FROM", "parallel_catch_up", "processes_for", "share_row", "unfinished"]

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
    processes; None when it cannot be split (a generation an interrupted one-process
    rebuild left partly built: the caller catches it up in one process). What is stored after the head it started from is left to the caller."""
    store = fresh.store
    if processes < 2 or any(fresh.positions().values()):
        return None
    upto = store.head()
    if upto == 0:
        return None
    if fresh.partitions < 2:
        return _shares(fresh, processes, batch_size, interval, upto, progress)
    groups = [list(range(fresh.partitions))[g::processes] for g in range(processes)]
    # no more processes than partitions
    jobs = [{"partitions": g, "share": None} for g in groups if g]
    reports = _run(store, fresh.t.generation, batch_size, interval, upto, jobs, progress)
    return _sum(reports)


def share_row(group: int, of: int) -> str:
    """The tracking row of share `group` of `of` of a parallel SQLite rebuild."""
    return f"{APP_NAME}:share{group}of{of}"


def unfinished(fresh: ReadModel) -> bool:
    """Whether `fresh`'s tables hold an interrupted parallel SQLite rebuild's rows (share
    tracking rows): they cannot be resumed, and must be built again from empty."""
    tr = fresh.t.tracking
    with fresh.engine.connect() as c:
        names = c.execute(select(tr.c.application_name)).scalars().all()
    return any(str(n).startswith(f"{APP_NAME}:share") for n in names)


def _shares(
    fresh: ReadModel,
    processes: int,
    batch_size: int,
    interval: int,
    upto: int,
    progress: Callable[[int], None] | None,
) -> CatchUpReport:
    store = fresh.store
    jobs = [{"partitions": None, "share": (g, processes)} for g in range(processes)]
    reports = _run(store, fresh.t.generation, batch_size, interval, upto, jobs, progress)
    positions = {r.position for r in reports}
    if len(positions) != 1:
        raise RuntimeError(f"rebuild processes stopped at different positions: {positions}")
    position = positions.pop()
    tr = fresh.t.tracking
    with fresh.engine.begin() as c:
        c.execute(
            update(tr).where(tr.c.application_name == APP_NAME).values(notification_id=position)
        )
        c.execute(delete(tr).where(tr.c.application_name.like(f"{APP_NAME}:share%")))
    return _sum(reports)


def _sum(reports: Sequence[CatchUpReport]) -> CatchUpReport:
    return CatchUpReport(
        activities=sum(r.activities for r in reports),
        batches=max((r.batches for r in reports), default=0),
        late=sum(r.late for r in reports),
        position=min((r.position for r in reports), default=0),
    )


def _run(
    store: EventStore,
    generation: int,
    batch_size: int,
    interval: int,
    upto: int,
    jobs: Sequence[dict[str, Any]],
    progress: Callable[[int], None] | None,
) -> list[CatchUpReport]:
    """Run the first job in this process and each other one in a process of its own; their
    reports, in job order. This process would only wait otherwise: working one share
    itself saves a process (its memory, and its start). A process that fails stops the
    others, and its error is raised here."""
    ctx = multiprocessing.get_context("spawn")
    messages: Any = ctx.Queue()
    url = store.url.url
    procs = {
        i: ctx.Process(
            target=_work,
            args=(i, url, generation, batch_size, interval, upto, job, messages),
            name=f"custate-rebuild-{i}",
            daemon=True,
        )
        for i, job in enumerate(jobs)
        if i
    }
    reports: dict[int, CatchUpReport] = {}

    def handle(block: bool) -> None:
        """The other processes' messages so far (waiting up to 0.5 s for one if `block`);
        raise if one of them failed."""
        while True:
            try:
                msg = messages.get(timeout=0.5) if block else messages.get_nowait()
            except queue.Empty:
                for i, p in procs.items():
                    if i not in reports and not p.is_alive() and p.exitcode != 0:
                        raise RuntimeError(
                            f"rebuild process {i} (pid {p.pid}) ended with exit code {p.exitcode}"
                        ) from None
                return
            kind = msg[0]
            if kind == "progress":
                if progress is not None:
                    progress(msg[1])
            elif kind == "done":
                reports[msg[1]] = msg[2]
            else:
                _, i, text, error = msg
                if error is None:
                    raise RuntimeError(f"rebuild process {i} failed:\n{text}")
                error.add_note(f"(in rebuild process {i}, pid {procs[i].pid})\n{text}")
                raise error
            if block:
                return

    def mine(n: int) -> None:
        if progress is not None:
            progress(n)
        handle(block=False)  # between this process's batches: has another one failed?

    try:
        for p in procs.values():
            p.start()
        reports[0] = _catch_up_job(store, generation, batch_size, interval, upto, jobs[0], mine)
        while len(reports) < len(jobs):
            handle(block=True)
        for p in procs.values():
            p.join()
    finally:
        for p in procs.values():
            if p.is_alive():
                p.terminate()
        for p in procs.values():
            if p.pid is not None:
                p.join()
        messages.close()
    return [reports[i] for i in range(len(jobs))]


def _catch_up_job(
    store: EventStore,
    generation: int,
    batch_size: int,
    interval: int,
    upto: int,
    job: dict[str, Any],
    progress: Callable[[int], None],
) -> CatchUpReport:
    """Catch generation `generation` up to `upto` for the job's partitions or share of the
    customers."""
    share = job["share"]
    view = ReadModel(
        store,
        generation=generation,
        interval=interval,
        tracking_row=None if share is None else share_row(*share),
    )
    return view.catch_up(
        batch_size,
        progress,
        partitions=job["partitions"],
        share=None if share is None else tuple(share),
        upto=upto,
    )


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
    """One other process of a parallel rebuild: `_catch_up_job`, its progress and its report
    sent to the first; or its error, which the first raises as its own (when it can be
    pickled: else a `RuntimeError` with its traceback), and exit 1."""
    try:
        store = EventStore(url)
        try:
            report = _catch_up_job(
                store,
                generation,
                batch_size,
                interval,
                upto,
                job,
                lambda n: messages.put(("progress", n)),
            )
        finally:
            store.close()
        messages.put(("done", index, report))
    except BaseException as e:
        messages.put(("error", index, traceback.format_exc(), _portable(e)))
        sys.exit(1)  # multiprocessing sends what is queued before the process ends


def _portable(e: BaseException) -> BaseException | None:
    """`e`, if it survives being sent to another process, else None."""
    try:
        pickle.loads(pickle.dumps(e))
    except Exception:
        return None
    return e
