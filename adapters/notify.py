"""Waiting to be told: a `LISTEN` connection of its own on PostgreSQL, a plain pause on SQLite.

A follower that has read everything waits on a `Listener` instead of sleeping its whole
poll: on PostgreSQL the writer's transaction sends `NOTIFY` (delivered when it commits), and
the wait returns as soon as one arrives; the poll stays as the bound, should a notification
be lost (a dropped connection: it reconnects on the next wait). On SQLite, or with no
channel, `wait` just sleeps."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

__all__ = ["Bell", "Listener"]


class Listener:
    """Waits for a notification on `channel`, or on any of `also` (None: none come, `wait`
    sleeps). Open it before reading what the notifications announce, so nothing sent after
    the read is missed: `with Listener(...) as w: read(); w.wait(poll)`."""

    def __init__(
        self, conninfo: str | None, channel: str | None, also: tuple[str, ...] = ()
    ) -> None:
        self._conninfo = conninfo
        self._channels = () if channel is None else (channel, *also)
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
        if self._conn is not None or self._conninfo is None or not self._channels:
            return
        import psycopg

        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
            for channel in self._channels:
                conn.execute(f'LISTEN "{channel}"')
        except psycopg.Error:  # waits fall back to the pause; the next wait tries again
            return
        self._conn = conn

    def wait(self, timeout: float) -> bool:
        """Until a notification arrives (True) or `timeout` seconds pass (False). Several
        pending notifications are taken at once."""
        return bool(self.wait_any(timeout))

    def wait_any(self, timeout: float) -> set[str]:
        """Until a notification arrives or `timeout` seconds pass: the channels notified
        (empty: none). Several pending notifications are taken at once."""
        self._connect()
        conn = self._conn
        if conn is None:
            self._pause.wait(timeout)
            return set()
        import psycopg

        try:
            got = {n.channel for n in conn.notifies(timeout=timeout, stop_after=1)}
            if got:  # drain what else arrived meanwhile, without waiting
                got.update(n.channel for n in conn.notifies(timeout=0))
            return got
        except psycopg.Error:
            self.close()
            return set()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class Bell:
    """One `Listener` in a thread of its own, ringing for any number of waiters, asyncio
    (`wait`) or threads (`rings`, `wait_after`): the HTTP long polls of one process share one
    `LISTEN` connection. `channel` None: it never rings, and a wait is a plain pause."""

    def __init__(self, conninfo: str | None, channel: str | None, poll: float = 1.0) -> None:
        self._listener = Listener(conninfo, channel)
        self.live = channel is not None and conninfo is not None
        self._poll = poll
        self._waiters: set[tuple[Any, Any]] = set()  # (loop, asyncio.Event)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rang = threading.Condition(self._lock)
        self.rings = 0  # notifications taken so far (several pending count once)

    def start(self) -> None:
        """Listen from now on: a notification sent after `start` returns is not missed."""
        with self._lock:
            if not self.live or self._thread is not None:
                return
            self._listener.__enter__()
            self._thread = threading.Thread(target=self._run, name="custate-bell", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._poll + 5)
            self._thread = None
        self._listener.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._listener.wait(self._poll):
                with self._lock:
                    waiters = list(self._waiters)
                    self.rings += 1
                    self._rang.notify_all()
                for loop, event in waiters:
                    loop.call_soon_threadsafe(event.set)

    def wait_after(self, seen: int, timeout: float) -> int:
        """In a thread: until the bell has rung more than `seen` times (read `rings` before
        looking at what it announces) or `timeout` seconds pass; the rings so far."""
        if not self.live or self._thread is None:
            time.sleep(timeout)
            return self.rings
        with self._lock:
            self._rang.wait_for(lambda: self.rings > seen, timeout)
            return self.rings

    async def wait_async(self, seen: int, timeout: float) -> None:
        """`wait_after` for asyncio: until the bell has rung more than `seen` times or
        `timeout` seconds pass."""
        import asyncio

        if not self.live or self._thread is None:
            await asyncio.sleep(timeout)
            return
        item = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            if self.rings > seen:
                return
            self._waiters.add(item)
        try:
            await asyncio.wait_for(item[1].wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.discard(item)

    async def wait(self, timeout: float) -> None:
        """Until the next notification or `timeout` seconds, whichever comes first."""
        await self.wait_async(self.rings, timeout)
