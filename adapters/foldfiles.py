"""Folding activity files into each customer's state, in memory of a bounded size.

`fold_files` reads the records once, in order. The first delivery of an activity id is the
one folded; a later delivery of that id with other content is a conflict, reported and
counted as a bad record; one with the same content is dropped silently. Activities are held
in memory while their estimated size fits the budget. Past it, they and every activity read
after them go to a temporary SQLite file (in a directory of its own under the system's
temporary directory, removed when the fold ends, also on an error or Ctrl-C), which is then
read back one customer at a time, in fold order. Either way the states are the same, are
written in customer-id order, one JSON object a line, and the reports are the same, in the
order the records were read.

What is held on disk of an activity is its fold input (`codecs.foldinput`: the typed views
the fold reads), a digest of its content to tell a conflict from a redelivery, and where
it was first read, for the conflict's report."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson

from custate.adapters.codecs import foldinput
from custate.adapters.readers import BadRecord, read_paths
from custate.domain import Activity, CustomerState, apply, fold_all, fold_key
from custate.domain.activity import LazyData

__all__ = ["DEFAULT_MEMORY", "SpillError", "fold_files", "parse_size"]

DEFAULT_MEMORY = 256 * 1024 * 1024
"""The default budget: some 16,000 activities of the usual size are held, more are folded
from disk."""

HELD_PER_CONTENT_BYTE = 6
HELD_PER_ACTIVITY = 4096
"""What an activity held in memory costs (the parsed record, its typed views, and its
content kept to tell redeliveries apart): about 6 bytes per byte of its content plus 4 KB,
fitted to generated Voucherify histories (2 KB of content, 16.5 KB held) and to activities
of a tiny payload (160 bytes, 5.2 KB held)."""

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(?:I?B)?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from `512MB`, `2G`, `1.5GiB`, `100000`: K, M, G, T are powers of 1024, and B,
    iB or nothing may follow. Raises ValueError with the reason."""
    m = _SIZE.fullmatch(text)
    if m is None:
        raise ValueError(f"not a size: {text!r}; use a number and a unit, e.g. 512MB or 2GB")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


class SpillError(OSError):
    """The temporary file could not be written (the disk is full, the directory is not
    writable)."""


Warn = Callable[[str], None]


def fold_files(
    paths: Iterable[str],
    out: IO[bytes],
    warn: Warn,
    *,
    customer: str | None = None,
    as_of: datetime | None = None,
    memory: int = DEFAULT_MEMORY,
) -> int:
    """Fold the activities of `paths` (`-` is standard input) and write each customer's
    state to `out`; `customer` is the customer of records that name none, and the only one
    written when given; `as_of` is the business-time cut. Bad records and conflicts are
    reported through `warn` as they are read; returns how many there were. Raises the
    readers' `SourceError` for a source that cannot be read, `SpillError` when the disk
    cannot take what memory cannot."""
    bad = 0
    held = _Held(memory)
    spill: _Spill | None = None
    activities: _Held | _Spill = held
    try:
        for item in read_paths(paths, customer):
            if isinstance(item, BadRecord):
                bad += 1
                warn(str(item))
                continue
            a = item.activity
            where = f"{item.source} {item.location}"
            first_where = activities.add(a, a.content(), where, customer)
            if first_where is not None:
                bad += 1
                warn(
                    f"{where}: id: conflict: {a.id} was first read at {first_where} "
                    "with different content; the first one is kept"
                )
            elif spill is None and held.full:
                spill = _Spill.open()
                spill.take(held, customer)
                activities = spill
                held = _Held(memory)  # and the activities it held are let go
        for state in activities.states(customer, as_of):
            out.write(orjson.dumps(state.to_json()) + b"\n")
    except sqlite3.Error as e:
        where = spill.directory if spill is not None else tempfile.gettempdir()
        raise SpillError(
            f"fold: cannot spill to {where}: {e}; free space there, set TMPDIR to another "
            "directory, or raise --memory"
        ) from e
    finally:
        if spill is not None:
            spill.close()
    return bad


class _Held:
    """The activities in memory, first deliveries only, in the order read."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self.seen: dict[str, tuple[bytes, str]] = {}
        self.activities: list[Activity] = []

    @property
    def full(self) -> bool:
        return self.size > self.budget

    def add(self, a: Activity, content: bytes, where: str, customer: str | None) -> str | None:
        """Keep `a` if its id is new; where its id was first read if that was with other
        content, else None."""
        first = self.seen.get(a.id)
        if first is not None:
            return first[1] if content != first[0] else None
        self.seen[a.id] = (content, where)
        self.activities.append(a)
        self.size += len(content) * HELD_PER_CONTENT_BYTE + HELD_PER_ACTIVITY
        return None

    def states(self, customer: str | None, as_of: datetime | None) -> Iterable[CustomerState]:
        activities = self.activities
        if customer is not None:
            activities = [a for a in activities if a.customer_id == customer]
        return fold_all(activities, as_of=as_of).values()


_SCHEMA = """
CREATE TABLE activity (
    id TEXT PRIMARY KEY,        -- first deliveries only
    digest BLOB NOT NULL,       -- of its content
    location TEXT NOT NULL,     -- where it was first read
    customer_id TEXT,           -- these four are NULL when the fold does not want it
    created_us INTEGER,         -- fold key: created_at in microseconds since the epoch,
    rank INTEGER,               --           rank, id
    input BLOB                  -- codecs.foldinput
)
"""
_INSERT = "INSERT OR IGNORE INTO activity VALUES (?, ?, ?, ?, ?, ?, ?)"
_FIRST = "SELECT digest, location FROM activity WHERE id = ?"
_INDEX = (
    "CREATE INDEX fold_order ON activity (customer_id, created_us, rank, id) "
    "WHERE input IS NOT NULL"
)
_READ = (
    "SELECT customer_id, input FROM activity WHERE input IS NOT NULL "
    "ORDER BY customer_id, created_us, rank, id"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_CACHE_KIB = 32 * 1024
"""SQLite's page cache; its sort (of the fold order index) takes as much again."""


class _Spill:
    """The activities in a temporary SQLite file, first deliveries only."""

    def __init__(self, directory: tempfile.TemporaryDirectory[str]) -> None:
        self._dir = directory
        self.directory = directory.name
        self._db = sqlite3.connect(Path(directory.name) / "fold.db", isolation_level=None)
        db = self._db
        # A scratch file: nothing to recover after a crash, so no journal and no syncs.
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA temp_store = FILE")
        db.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
        db.execute(_SCHEMA)
        db.execute("BEGIN")

    @classmethod
    def open(cls) -> _Spill:
        try:
            directory = tempfile.TemporaryDirectory(prefix="custate-fold-")
        except OSError as e:
            raise SpillError(f"fold: cannot make a temporary directory: {e}") from e
        try:
            return cls(directory)
        except BaseException:
            directory.cleanup()
            raise

    def close(self) -> None:
        try:
            self._db.close()
        finally:
            self._dir.cleanup()

    def take(self, held: _Held, customer: str | None) -> None:
        """Everything `held` holds, in the order it was read."""
        seen = held.seen
        self._db.executemany(
            _INSERT,
            (self._row(a, *seen[a.id], customer) for a in held.activities),
        )

    def add(self, a: Activity, content: bytes, where: str, customer: str | None) -> str | None:
        """As `_Held.add`."""
        db = self._db
        if db.execute(_INSERT, self._row(a, content, where, customer)).rowcount:
            return None
        digest, first_where = db.execute(_FIRST, (a.id,)).fetchone()
        return str(first_where) if _digest(content) != digest else None

    @staticmethod
    def _row(a: Activity, content: bytes, where: str, customer: str | None) -> tuple[Any, ...]:
        if customer is not None and a.customer_id != customer:
            return (a.id, _digest(content), where, None, None, None, None)
        created_at, rank, _ = fold_key(a)
        blob = foldinput.dump(a, _EPOCH)
        if blob is None:  # pragma: no cover  (content() has refused such an activity already)
            raise ValueError(f"activity {a.id}: cannot hold it on disk")
        return (
            a.id,
            _digest(content),
            where,
            a.customer_id,
            (created_at - _EPOCH) // _US,
            rank,
            blob,
        )

    def states(self, customer: str | None, as_of: datetime | None) -> Iterator[CustomerState]:
        """Each customer's state, in customer-id order, folded from disk in fold order. Only
        the activities of `customer`, when given, were kept with their fold input."""
        db = self._db
        db.execute("COMMIT")
        db.execute(_INDEX)
        state: CustomerState | None = None
        for customer_id, blob in db.execute(_READ):
            if state is None or customer_id != state.customer_id:
                if state is not None:
                    state.as_of = as_of
                    yield state
                state = CustomerState(customer_id)
            loaded = foldinput.load(blob, customer_id, _NO_PAYLOAD)
            assert loaded is not None  # written by this code, in its format
            a = loaded[0]
            if as_of is None or a.created_at <= as_of:
                apply(state, a)
        if state is not None:
            state.as_of = as_of
            yield state


def _digest(content: bytes) -> bytes:
    return hashlib.blake2b(content, digest_size=16).digest()


def _no_payload(_: object) -> dict[str, Any]:
    raise RuntimeError("a fold from disk keeps the typed views of an activity, not its payload")


_NO_PAYLOAD = LazyData(_no_payload, None)
