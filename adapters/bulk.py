"""Bulk work (ingest, catch-up, rebuild) allocates many short-lived, acyclic objects
(parsed payloads, states): CPython's cyclic collector would walk them again and again for
nothing. While bulk work runs, collect generation 0 far less often; restore after."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

BULK_THRESHOLD = 50_000


@contextmanager
def fewer_collections() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], BULK_THRESHOLD), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
