"""Ingestion: records from any source -> batched, idempotent appends, rejects kept."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from custate.adapters.eventstore import AppendResult, EventStore
from custate.adapters.readers import BadRecord, Item, Record
from custate.adapters.rejects import Reject, RejectStore, activity_id_of

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
    items: Iterable[Item],
    batch_size: int = DEFAULT_BATCH,
    clock: Clock = utc_now,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Store every valid record once; keep every bad one. `progress` is told how many
    records each batch held.

    Parsing (CPU, holds the GIL) and writing (the database, releases it) overlap: one
    writer thread stores batch n while this thread parses batch n+1. At most one batch
    waits, so memory stays bounded, and batches are written in order."""
    report = IngestReport()
    batch: list[Record] = []
    bad: list[Reject] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="custate-writer") as writer:
        pending: Future[None] | None = None
        for item in items:
            report.read += 1
            if isinstance(item, BadRecord):
                report.rejected += 1
                bad.append(
                    Reject(
                        "invalid",
                        item.source,
                        item.location,
                        item.field,
                        item.message,
                        item.raw,
                        activity_id_of(item.raw),
                    )
                )
            else:
                batch.append(item)
            if len(batch) >= batch_size or len(bad) >= batch_size:
                if pending is not None:
                    pending.result()
                pending = writer.submit(_write, store, rejects, batch, bad, clock, report, progress)
                batch, bad = [], []
        if pending is not None:
            pending.result()
        _write(store, rejects, batch, bad, clock, report, progress)
    return report


def _write(
    store: EventStore,
    rejects: RejectStore,
    batch: list[Record],
    bad: list[Reject],
    clock: Clock,
    report: IngestReport,
    progress: Callable[[int], None] | None,
) -> None:
    if not batch and not bad:
        return
    now = clock()
    activities = [r.activity for r in batch]
    result = store.append(activities, now) if activities else AppendResult()
    report.accepted += len(result.accepted)
    report.duplicates += len(result.duplicates)
    report.unrecognized += sum(1 for a in result.accepted if not a.recognized)
    for c in result.conflicts:
        source, location = _where(batch, c.activity.id)
        bad.append(
            Reject(
                "conflict",
                source,
                location,
                "id",
                f"conflict: activity {c.activity.id} is stored with different content; "
                "the stored version is kept",
                orjson.dumps(c.activity.to_record()).decode(),
                c.activity.id,
                orjson.dumps(c.stored).decode(),
            )
        )
    report.conflicts += len(result.conflicts)
    if bad:
        rejects.add(bad, now)
        report._note(bad)
    settled = [a.id for a in result.accepted] + [a.id for a in result.duplicates]
    report.resolved += rejects.resolve(settled, now)
    if progress is not None:
        progress(len(batch) + sum(1 for r in bad if r.kind == "invalid"))


def _where(batch: list[Record], activity_id: str) -> tuple[str, str]:
    for r in reversed(batch):
        if r.activity.id == activity_id:
            return r.source, r.location
    return "<unknown>", "<unknown>"
