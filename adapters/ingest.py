"""Ingestion: records from any source -> batched, idempotent appends, rejects kept."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.context
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from custate.adapters.eventstore import AppendResult, Encoded, EventStore
from custate.adapters.readers import (
    BadRecord,
    Item,
    Line,
    Record,
    line_items,
    ndjson_chunks,
    read_path,
)
from custate.adapters.rejects import Reject, RejectStore
from custate.domain import Activity

DEFAULT_BATCH = 1000

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class IngestReport:
    read: int = 0
    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0
    unrecognized: int = 0
    resolved: int = 0
    problems: list[Reject] = field(default_factory=list)  # the first few, for display

    MAX_PROBLEMS = 20

    @property
    def ok(self) -> bool:
        return self.rejected == 0 and self.conflicts == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "conflicts": self.conflicts,
            "rejected": self.rejected,
            "unrecognized": self.unrecognized,
            "resolved_rejects": self.resolved,
            "problems": [p.to_json() | {"raw": p.raw[:500]} for p in self.problems],
        }

    def _note(self, rejects: list[Reject]) -> None:
        room = self.MAX_PROBLEMS - len(self.problems)
        if room > 0:
            self.problems.extend(rejects[:room])


def ingest(
    store: EventStore,
    rejects: RejectStore,
    items: Iterable[Item | Encoded],
    batch_size: int = DEFAULT_BATCH,
    clock: Clock = utc_now,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Store every valid record once; keep every bad one. `items` are records as the
    readers give them, or already encoded (`parse_files`). `progress` is told how many
    records each batch held."""
    report = IngestReport()
    batch: list[Encoded] = []
    bad: list[Reject] = []
    for item in items:
        report.read += 1
        if isinstance(item, BadRecord):
            report.rejected += 1
            bad.append(_invalid(item))
        else:
            batch.append(
                Encoded.of(item.activity, item.source, item.location)
                if isinstance(item, Record)
                else item
            )
        if len(batch) >= batch_size or len(bad) >= batch_size:
            _write(store, rejects, batch, bad, clock, report, progress)
            batch, bad = [], []
    _write(store, rejects, batch, bad, clock, report, progress)
    return report


def _invalid(item: BadRecord) -> Reject:
    return Reject.bad_record(item)


def _write(
    store: EventStore,
    rejects: RejectStore,
    batch: list[Encoded],
    bad: list[Reject],
    clock: Clock,
    report: IngestReport,
    progress: Callable[[int], None] | None,
    observe: Callable[[AppendResult], None] | None = None,
) -> None:
    if not batch and not bad:
        return
    now = clock()
    result = store.append_encoded(batch, now) if batch else AppendResult()
    if observe is not None:
        observe(result)
    report.accepted += len(result.accepted)
    report.duplicates += len(result.duplicates)
    report.unrecognized += sum(1 for e in result.accepted if not e.recognized)
    for c in result.conflicts:
        bad.append(
            Reject.conflict(c.item.source, c.item.location, c.item.id, c.item.record(), c.stored)
        )
    report.conflicts += len(result.conflicts)
    if bad:
        rejects.add(bad, now)
        report._note(bad)
    settled = [e.id for e in result.accepted] + [e.id for e in result.duplicates]
    report.resolved += rejects.resolve(settled, now)
    if progress is not None:
        progress(len(batch) + sum(1 for r in bad if r.kind == "invalid"))


# -- parsing in other processes ------------------------------------------------------------
#
# Parsing and validating (JSON decode, pydantic, canonical content) is most of an ingest's
# CPU, and it holds the GIL, so a thread cannot overlap it with the writes. Worker
# processes parse plain NDJSON files in chunks of lines and send back `Encoded` records:
# bytes, cheap to pickle. Results come back in file order, so the first delivery of an
# id in a file is still the one kept.


def parse_files(
    paths: Iterable[str], customer_id: str | None = None, workers: int | None = None
) -> Iterator[Item | Encoded]:
    """Every record of every path, in order; plain NDJSON files are parsed by `workers`
    processes (default: one per core; 0 parses here), anything else here."""
    n = (os.cpu_count() or 1) if workers is None else workers
    pool: ProcessPoolExecutor | None = None
    try:
        for path in paths:
            chunks = ndjson_chunks(path) if n > 0 else None
            if chunks is None:
                yield from read_path(path, customer_id)
                continue
            if pool is None:
                pool = ProcessPoolExecutor(
                    max_workers=n,
                    mp_context=_context(),
                    initializer=_worker_init,
                    initargs=(os.getpid(),),
                )
            window: deque[Future[list[Item | Encoded]]] = deque()
            for chunk in chunks:
                window.append(pool.submit(_parse_chunk, path, chunk, customer_id))
                if len(window) > 2 * n:
                    yield from window.popleft().result()
            while window:
                yield from window.popleft().result()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _context() -> multiprocessing.context.BaseContext:
    # fork: workers start in milliseconds and inherit the imports; nothing they inherit
    # (open connections) is used in them.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _worker_init(parent: int) -> None:
    """A parser dies with its parent: an ingest killed with SIGKILL must not leave workers
    behind (holding its pipes open). Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


_PR_SET_PDEATHSIG = 1


def _parse_chunk(
    source: str, chunk: list[Line | BadRecord], customer_id: str | None
) -> list[Item | Encoded]:
    out: list[Item | Encoded] = []
    for line in chunk:
        if isinstance(line, BadRecord):
            out.append(line)
            continue
        for item in line_items(line[1], source, line[0], customer_id):
            if isinstance(item, Record):
                out.append(Encoded.of(item.activity, item.source, item.location))
            else:
                out.append(item)
    return out


@dataclass(frozen=True, slots=True)
class ActivityConflict:
    activity: Activity
    stored: dict[str, Any]


@dataclass(slots=True)
class BatchResult:
    """What became of each activity of one batch, by the objects given (for a caller that
    answers per delivery, such as the webhook endpoint)."""

    accepted: list[Activity] = field(default_factory=list)
    duplicates: list[Activity] = field(default_factory=list)
    conflicts: list[ActivityConflict] = field(default_factory=list)


def write_batch(
    store: EventStore,
    rejects: RejectStore,
    records: list[Record],
    bad: list[Reject],
    clock: Clock = utc_now,
) -> tuple[BatchResult, IngestReport]:
    """Write one batch now, in the caller's thread, and say what became of each record."""
    encoded = [Encoded.of(r.activity, r.source, r.location) for r in records]
    origin = {id(e): r.activity for e, r in zip(encoded, records, strict=True)}
    report = IngestReport(read=len(records) + len(bad), rejected=len(bad))
    seen: list[AppendResult] = []

    def keep(result: AppendResult) -> None:
        seen.append(result)

    _write(store, rejects, encoded, list(bad), clock, report, None, keep)
    out = BatchResult()
    for result in seen:
        out.accepted += [origin[id(e)] for e in result.accepted]
        out.duplicates += [origin[id(e)] for e in result.duplicates]
        out.conflicts += [ActivityConflict(origin[id(c.item)], c.stored) for c in result.conflicts]
    return out, report
