"""The read model's connections: a thread that catches up reads through one connection."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine

from custate.adapters.sqlschema import reading

__all__ = ["Connections"]


class Connections:
    """Connections to `engine`. Inside `held()`, every `reading()` of that thread is the one
    connection `held()` opened: a catch-up reads the position, the heads, a checkpoint and
    keys, and checking a pooled connection out and back in for each read cost more than the
    reads. Writes take a connection of their own."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._local = threading.local()  # `conn`: the connection `held()` opened

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection to read with: this thread's held one, if there is one."""
        c: Connection | None = getattr(self._local, "conn", None)
        if c is not None:
            yield c
            return
        with reading(self.engine) as c:
            yield c

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold one connection for this thread's reads until the block ends."""
        with reading(self.engine) as c:
            self._local.conn = c
            try:
                yield
            finally:
                self._local.conn = None
