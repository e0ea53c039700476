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
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection

from custate.adapters.eventstore import (
    AppendResult,
    Conflict,
    Encoded,
    EventStore,
    StoreError,
    Then,
    store_wide,
)
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
    position: int = 0  # the store's last position after the ingest: a read's min_position

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
            "resolved": self.resolved,
            "position": self.position,
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
        if isinstance(item, Record):
            item = _encode(item)
        if isinstance(item, BadRecord):
            report.rejected += 1
            bad.append(_invalid(item))
        else:
            batch.append(item)
        if len(batch) >= batch_size or len(bad) >= batch_size:
            _write(store, rejects, batch, bad, clock, report, progress)
            batch, bad = [], []
    _write(store, rejects, batch, bad, clock, report, progress)
    return report


def _encode(r: Record) -> Encoded | BadRecord:
    """A record as the store writes it; a `BadRecord` if it cannot be written as JSON (an
    activity built by hand, not by the readers, which refuse what cannot be stored)."""
    try:
        return Encoded.of(r.activity, r.source, r.location)
    except (TypeError, ValueError) as e:
        return BadRecord(r.source, r.location, "<record>", f"cannot be written as JSON: {e}", "")


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
    outcomes: list[Outcome] | None = None,
) -> None:
    """Append `batch`, keep `bad` and whatever the append turned away, and count it all in
    `report`; with `outcomes`, also say what became of each member of `batch`, in order."""
    if not batch and not bad:
        return
    now = clock()
    resolved = 0

    def resolve(c: Connection, stored: list[str]) -> None:
        # in the append's transaction: the rejects of what is stored now are resolved with it
        nonlocal resolved
        resolved += rejects.resolve(stored, now, c)

    result, refused = _append(store, batch, now, resolve)
    report.position = max(report.position, result.position)
    report.accepted += len(result.accepted)
    report.duplicates += len(result.duplicates)
    report.unrecognized += sum(1 for e in result.accepted if not e.recognized)
    conflicts = [(c.item, _conflict(c)) for c in result.conflicts]
    refusals = [(e, _refusal(e, error)) for e, error in refused]
    bad = bad + [r for _, r in conflicts] + [r for _, r in refusals]
    report.conflicts += len(conflicts)
    report.rejected += len(refusals)
    if bad:
        rejects.add(bad, now)
        report._note(bad)
    report.resolved += resolved
    if progress is not None:
        progress(len(batch) + sum(1 for r in bad if r.kind == "invalid") - len(refusals))
    if outcomes is not None:
        where = {id(e): i for i, e in enumerate(batch)}
        out: list[Outcome | None] = [None] * len(batch)
        for e in result.accepted:
            out[where[id(e)]] = Outcome("stored")
        for e in result.duplicates:
            out[where[id(e)]] = Outcome("duplicate")
        for e, r in conflicts:
            out[where[id(e)]] = Outcome("conflict", r)
        for e, r in refusals:
            out[where[id(e)]] = Outcome("refused", r)
        assert all(o is not None for o in out), "every member has exactly one outcome"
        outcomes.extend(o for o in out if o is not None)


def _conflict(c: Conflict) -> Reject:
    return Reject.conflict(c.item.source, c.item.location, c.item.id, c.item.record(), c.stored)


def _refusal(e: Encoded, error: Exception) -> Reject:
    first = (str(error).strip().splitlines() or [""])[0][:300]
    return Reject.invalid(
        e.source,
        e.location,
        "<record>",
        f"the store refused it ({type(error).__name__}): {first}",
        orjson.dumps(e.record()).decode(),
        e.id,
    )


def _append(
    store: EventStore, batch: list[Encoded], now: datetime, then: Then | None = None
) -> tuple[AppendResult, list[tuple[Encoded, Exception]]]:
    """Append a group; when it fails and the store is still there, find the members it
    cannot take by halving the group (each half in its own transaction), so one record the
    database refuses never fails the others. A store that is unreachable, or that lost the
    write race too often (`StoreError`), fails the whole group: that is for a retry."""
    if not batch:
        return AppendResult(), []
    try:
        return store.append_encoded(batch, now, then), []
    except StoreError:
        raise
    except Exception as e:
        if store_wide(e) or not store.reachable():
            raise
    return _split(store, batch, now, then)


def _split(
    store: EventStore, batch: list[Encoded], now: datetime, then: Then | None
) -> tuple[AppendResult, list[tuple[Encoded, Exception]]]:
    if len(batch) == 1:
        try:
            return store.append_encoded(batch, now, then), []
        except StoreError:
            raise
        except Exception as e:
            if store_wide(e) or not store.reachable():
                raise
            return AppendResult(), [(batch[0], e)]
    result = AppendResult()
    refused: list[tuple[Encoded, Exception]] = []
    mid = len(batch) // 2
    for half in (batch[:mid], batch[mid:]):
        bad: list[tuple[Encoded, Exception]] = []
        try:
            part = store.append_encoded(half, now, then)
        except StoreError:
            raise
        except Exception as e:
            if store_wide(e):
                raise
            part, bad = _split(store, half, now, then)
        result.accepted += part.accepted
        result.duplicates += part.duplicates
        result.conflicts += part.conflicts
        result.position = max(result.position, part.position)
        refused += bad
    return result, refused


# -- parsing in other processes ------------------------------------------------------------
#
# Parsing and validating (JSON decode, pydantic, canonical content) is most of an ingest's
# CPU, and it holds the GIL, so a thread cannot overlap it with the writes. Worker
# processes parse plain NDJSON files in chunks of lines and send back `Encoded` records:
# bytes, cheap to pickle. Results come back in file order, so the first delivery of an
# id in a file is still the one kept.


def parse_files(
    paths: Iterable[str],
    customer_id: str | None = None,
    workers: int | None = None,
    read: Callable[[int], None] | None = None,
) -> Iterator[Item | Encoded]:
    """Every record of every path, in order; plain NDJSON files are parsed by `workers`
    processes (default: one per core; 0 parses here), anything else here. `read` is told
    how many bytes of the files were handed on: a plain NDJSON file's as each chunk of
    lines is, any other file's once it is read to its end (stdin: never)."""
    n = (os.cpu_count() or 1) if workers is None else workers
    pool: ProcessPoolExecutor | None = None
    try:
        for path in paths:
            chunks = ndjson_chunks(path) if n > 0 else None
            if chunks is None:
                yield from read_path(path, customer_id)
                if read is not None and path != "-":
                    read(_size(path))
                continue
            if pool is None:
                pool = ProcessPoolExecutor(
                    max_workers=n,
                    mp_context=_context(),
                    initializer=_worker_init,
                    initargs=(os.getpid(),),
                )
            # A chunk's bytes are about its lines' (line ends and blank lines aside); the
            # file's last report makes up the rest, so that the counts add up to its size.
            left = [_size(path) if read is not None else 0]
            window: deque[tuple[Future[list[Item | Encoded]], int]] = deque()
            for chunk in chunks:
                size = sum(len(x[1]) + 1 for x in chunk if not isinstance(x, BadRecord))
                window.append((pool.submit(_parse_chunk, path, chunk, customer_id), size))
                if len(window) > 2 * n:
                    yield from _handed(window.popleft(), read, left)
            while window:
                yield from _handed(window.popleft(), read, left)
            if read is not None and left[0] > 0:
                read(left[0])
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def _handed(
    parsed: tuple[Future[list[Item | Encoded]], int],
    read: Callable[[int], None] | None,
    left: list[int],
) -> list[Item | Encoded]:
    """A parsed chunk's items, telling `read` its bytes (never more than the file has
    left, `left[0]`)."""
    items = parsed[0].result()
    if read is not None:
        n = min(parsed[1], left[0])
        left[0] -= n
        if n:
            read(n)
    return items


def _size(path: str) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


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


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one record of a batch: `stored`, `duplicate` (stored before, same
    content), `conflict` (stored before with other content; the stored one stays) or
    `refused` (the store could not hold it). `reject` is what was kept of a conflict or a
    refusal, with its reason."""

    status: str
    reject: Reject | None = None


@dataclass(slots=True)
class BatchResult:
    """What became of each record of one batch: `outcomes`, one per record in the order
    given (for a caller that answers per delivery, such as the webhook endpoint); and the
    same sorted by outcome."""

    outcomes: list[Outcome] = field(default_factory=list)
    accepted: list[Activity] = field(default_factory=list)
    duplicates: list[Activity] = field(default_factory=list)
    conflicts: list[ActivityConflict] = field(default_factory=list)
    refused: list[Activity] = field(default_factory=list)
    position: int = 0  # the store's head once the batch committed: a read's min_position


def write_batch(
    store: EventStore,
    rejects: RejectStore,
    records: list[Record],
    bad: list[Reject],
    clock: Clock = utc_now,
) -> tuple[BatchResult, IngestReport]:
    """Write one batch now, in the caller's thread, and say what became of each record. A
    record the store refuses is kept as a reject and the others are written all the same."""
    items = [_encode(r) for r in records]
    encoded = [e for e in items if isinstance(e, Encoded)]
    unwritable = [_invalid(b) for b in items if isinstance(b, BadRecord)]
    report = IngestReport(read=len(records) + len(bad), rejected=len(bad) + len(unwritable))
    written: list[Outcome] = []
    _write(store, rejects, encoded, list(bad) + unwritable, clock, report, None, written)
    refusals = iter(unwritable)
    stored = iter(written)
    outcomes = [
        next(stored) if isinstance(e, Encoded) else Outcome("refused", next(refusals))
        for e in items
    ]
    out = BatchResult(outcomes, position=report.position)
    for r, o in zip(records, outcomes, strict=True):
        if o.status == "stored":
            out.accepted.append(r.activity)
        elif o.status == "duplicate":
            out.duplicates.append(r.activity)
        elif o.status == "conflict":
            assert o.reject is not None
            assert o.reject.stored is not None
            out.conflicts.append(ActivityConflict(r.activity, orjson.loads(o.reject.stored)))
        else:
            out.refused.append(r.activity)
    return out, report
