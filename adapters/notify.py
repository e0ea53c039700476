"""Waiting to be told: a `LISTEN` connection of its own on PostgreSQL, a plain pause on SQLite.

A follower that has read everything waits on a `Listener` instead of sleeping its whole
poll: on PostgreSQL the writer's transaction sends `NOTIFY` (delivered when it commits), and
the wait returns as soon as one arrives; the poll stays as the bound, should a notification
be lost (a dropped connection: it reconnects on the next wait). On SQLite, or with no
channel, `wait` just sleeps."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

__all__ = ["Listener"]


class Listener:
    """Waits for a notification on `channel` (None: none come, `wait` sleeps). Open it
    before reading what the notifications announce, so nothing sent after the read is
    missed: `with Listener(...) as w: read(); w.wait(poll)`."""

    def __init__(self, conninfo: str | None, channel: str | None) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._conn: Any = None
        self._pause = threading.Event()  # never set: an interruptible sleep

    def __enter__(self) -> Listener:
        self._connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _connect(self) -> None:
        if self._conn is not None or self._conninfo is None or self._channel is None:
            return
        import psycopg

        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
            conn.execute(f'LISTEN "{self._channel}"')
        except psycopg.Error:  # waits fall back to the pause; the next wait tries again
            return
        self._conn = conn

    def wait(self, timeout: float) -> bool:
        """Until a notification arrives (True) or `timeout` seconds pass (False). Several
        pending notifications are taken at once."""
        self._connect()
        conn = self._conn
        if conn is None:
            self._pause.wait(timeout)
            return False
        import psycopg

        try:
            got = False
            for _ in conn.notifies(timeout=timeout, stop_after=1):
                got = True
            if got:  # drain what else arrived meanwhile, without waiting
                for _ in conn.notifies(timeout=0):
                    pass
            return got
        except psycopg.Error:
            self.close()
            return False

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
