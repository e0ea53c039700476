"""The composition root: from a store URL, the parts a `Custate` runs on.

`build(url, clock)` opens the event store, the rejects store beside it and the clock, and
knows how to open the read model's active generation and the pull cursors; the service
(`custate.adapters.api.Custate`) is handed these and never builds them itself. Only this
module (and the tests) put the adapters together."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from custate.adapters.cursors import PullCursors, PullListings
from custate.adapters.eventstore import EventStore, StoreError, parse_store_url
from custate.adapters.foldfiles import parse_size
from custate.adapters.ingest import Clock, utc_now
from custate.adapters.migrations import migrate
from custate.adapters.readmodel import DEFAULT_CHECKPOINT_CACHE_BYTES, ReadModel
from custate.adapters.rejects import RejectStore

__all__ = [
    "DEFAULT_STORE",
    "ENV_CHECKPOINT_CACHE",
    "Parts",
    "build",
    "checkpoint_cache_bytes",
    "store_file",
    "store_url",
]

DEFAULT_STORE = "sqlite:///custate.db"
ENV_CHECKPOINT_CACHE = "CUSTATE_CHECKPOINT_CACHE"


def checkpoint_cache_bytes(value: int | None = None) -> int:
    """The budget of decoded checkpoints a process keeps: the one given, else
    $CUSTATE_CHECKPOINT_CACHE (`256MB`, `1G`, bytes), else 32 MiB. A customer whose state
    is stored larger than it is never kept, and each point in time of it decodes its state
    again (a 1M-activity history's is 37 MB)."""
    if value is not None:
        return value
    text = os.environ.get(ENV_CHECKPOINT_CACHE)
    if not text:
        return DEFAULT_CHECKPOINT_CACHE_BYTES
    try:
        return parse_size(text)
    except ValueError as e:
        raise StoreError(f"{ENV_CHECKPOINT_CACHE}: {e}") from None


def store_url(url: str | None = None) -> str:
    """The store to use: the one given, else $CUSTATE_STORE, else ./custate.db."""
    return url or os.environ.get("CUSTATE_STORE") or DEFAULT_STORE


def store_file(url: str) -> Path | None:
    """The file an SQLite store URL names; None for a PostgreSQL store. A URL that names
    no usable store is a `StoreError`."""
    target = parse_store_url(url)
    if target.kind != "sqlite":
        return None
    name = target.env["SQLITE_DBNAME"]
    if target.read_only:  # SQLite's URI filename: file:PATH?mode=ro
        name = unquote(name.removeprefix("file:").rsplit("?", 1)[0])
    return Path(name)


@dataclass(slots=True)
class Parts:
    """One store's adapters: the event store, its rejects, the clock that stamps record
    times, and openers for the read model and the pull cursors (tables made on first use)."""

    store: EventStore
    rejects: RejectStore
    clock: Clock
    partitions: int | None = None  # for a store created now (None: the backend's default)
    # The schema revision the store was at when opened, and the one it is at now.
    migration: tuple[str | None, str | None] = (None, None)
    checkpoint_cache_bytes: int = DEFAULT_CHECKPOINT_CACHE_BYTES

    def readmodel(self) -> ReadModel:
        """The read model's active generation, opened now."""
        return ReadModel(
            self.store,
            partitions=self.partitions,
            checkpoint_cache_bytes=self.checkpoint_cache_bytes,
        )

    def pull_cursors(self) -> PullCursors:
        return PullCursors(self.store.engine)

    def pull_listings(self) -> PullListings:
        return PullListings(self.store.engine)

    def close(self) -> None:
        self.store.close()


def build(
    url: str | None = None,
    clock: Clock = utc_now,
    partitions: int | None = None,
    cache_bytes: int | None = None,
) -> Parts:
    """The parts of the store at `url` (see `store_url`), created if needed (with
    `partitions` partitions, if given; `readmodel.partitions`), its own tables migrated to
    this code's schema (`adapters.migrations`; a store of a newer custate is refused).
    `cache_bytes`: the read model's budget of decoded checkpoints (`checkpoint_cache_bytes`)."""
    budget = checkpoint_cache_bytes(cache_bytes)
    store = EventStore(store_url(url))
    try:
        # the store's own tables to this code's schema (adapters.migrations)
        migration = migrate(store)
    except BaseException:
        store.close()
        raise
    return Parts(store, RejectStore(store.engine), clock, partitions, migration, budget)
