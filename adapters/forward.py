"""Outbound webhooks of the change feed (`custate forward`): batches of change records
POSTed to a URL, signed as Voucherify signs its own (hex HMAC-SHA256 of the body in
`x-custate-signature`), retried with backoff, resumed from a cursor stored in the database.

At least once: the cursor moves only after the receiver answered 2xx (or refused the batch
for good), so a crash between the POST and the cursor's update sends that batch again;
each record's `position` lets the receiver drop repeats. A timeout, a connection error, a
408, 429 or 5xx is retried with exponential backoff; after `attempts` of them the forward
stops with a `ForwardError` and the cursor where it was (nothing skipped). Any other 4xx
means the receiver refuses that batch: it is kept as a dead letter (listable, replayable)
and the forward goes on."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from sqlalchemy import BigInteger, Column, Engine, Integer, MetaData, String, Table, Text, select

from custate.adapters.notify import Listener
from custate.adapters.readmodel.feed import Page
from custate.adapters.sqlschema import create_all
from custate.domain import format_time
from custate.domain.errors import Error

__all__ = ["DeadLetter", "ForwardError", "ForwardReport", "Forwarder", "sign"]

SIGNATURE_HEADER = "x-custate-signature"
_RETRY_STATUS = frozenset({408, 425, 429})


class ForwardError(Error):
    """The receiver could not be reached or kept failing: the forward stopped, its cursor
    at the last batch delivered."""


def sign(body: bytes, secret: str) -> str:
    """Hex HMAC-SHA256 of `body` under `secret`."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A batch the receiver refused (a 4xx other than 408/425/429)."""

    id: int
    name: str
    first: int
    last: int
    status: int
    error: str
    at: str
    body: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "first_position": self.first,
            "last_position": self.last,
            "status": self.status,
            "error": self.error,
            "at": self.at,
        }


@dataclass(slots=True)
class ForwardReport:
    """What a forward did: batches and records delivered, batches dead-lettered, retries,
    and the cursor it left."""

    batches: int = 0
    records: int = 0
    dead: int = 0
    retries: int = 0
    cursor: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "records": self.records,
            "dead": self.dead,
            "retries": self.retries,
            "cursor": self.cursor,
        }


class _Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        m = MetaData()
        self.cursors = Table(
            "custate_forward_cursors",
            m,
            Column("name", String(255), primary_key=True),
            Column("position", BigInteger, nullable=False),
        )
        self.dead = Table(
            "custate_forward_dead",
            m,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("name", String(255), nullable=False),
            Column("first", BigInteger, nullable=False),
            Column("last", BigInteger, nullable=False),
            Column("status", Integer, nullable=False),
            Column("error", Text, nullable=False),
            Column("at", String(32), nullable=False),
            Column("body", Text, nullable=False),
        )
        create_all(engine, m)

    def cursor(self, name: str) -> int | None:
        with self.engine.connect() as c:
            q = select(self.cursors.c.position).where(self.cursors.c.name == name)
            v = c.execute(q).scalar_one_or_none()
            return None if v is None else int(v)

    def move(self, name: str, position: int) -> None:
        t = self.cursors
        with self.engine.begin() as c:
            if c.execute(t.update().where(t.c.name == name).values(position=position)).rowcount:
                return
            c.execute(t.insert().values(name=name, position=position))

    def bury(self, name: str, first: int, last: int, status: int, error: str, body: bytes) -> None:
        with self.engine.begin() as c:
            c.execute(
                self.dead.insert().values(
                    name=name,
                    first=first,
                    last=last,
                    status=status,
                    error=error[:2000],
                    at=format_time(datetime.now(UTC)),
                    body=body.decode(),
                )
            )

    def letters(self, name: str | None) -> list[DeadLetter]:
        t = self.dead
        q = select(t).order_by(t.c.id)
        if name is not None:
            q = q.where(t.c.name == name)
        with self.engine.connect() as c:
            return [
                DeadLetter(r.id, r.name, r.first, r.last, r.status, r.error, r.at, r.body.encode())
                for r in c.execute(q)
            ]

    def drop(self, letter_id: int) -> None:
        with self.engine.begin() as c:
            c.execute(self.dead.delete().where(self.dead.c.id == letter_id))


class Forwarder:
    """Forwards the pages `read(after, limit)` gives to `url`. `name` keys its cursor (and
    dead letters): by default the URL and the globs."""

    def __init__(
        self,
        engine: Engine,
        read: Callable[[int, int], Page],
        url: str,
        *,
        secret: str = "",
        name: str | None = None,
        paths: Sequence[str] | None = None,
        batch: int = 500,
        timeout: float = 10.0,
        attempts: int = 6,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        client: httpx.Client | None = None,
        listener: Callable[[], Listener] | None = None,
    ) -> None:
        """`listener`: makes what a follow waits on between pages (told of each write on
        PostgreSQL); None: a plain pause."""
        self.store = _Store(engine)
        self._listener = listener or (lambda: Listener(None, None))
        self.read = read
        self.url = url
        self.secret = secret
        self.name = name or url + ("" if not paths else " " + " ".join(paths))
        self.batch = batch
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.client = client or httpx.Client(timeout=timeout)

    def headers(self, body: bytes) -> dict[str, str]:
        h = {"content-type": "application/json"}
        if self.secret:
            h[SIGNATURE_HEADER] = sign(body, self.secret)
        return h

    def _post(self, body: bytes, report: ForwardReport, forever: bool) -> tuple[int, str]:
        """POST `body` until it is answered other than with a retryable failure; the
        status (0: never answered) and what went wrong last."""
        pause = self.backoff
        tries = 0
        while True:
            tries += 1
            try:
                r = self.client.post(self.url, content=body, headers=self.headers(body))
                status, error = r.status_code, r.text[:500]
                if status < 400 or (status < 500 and status not in _RETRY_STATUS):
                    return status, error
            except httpx.TimeoutException as e:
                status, error = 0, f"timed out after {self.timeout} s ({type(e).__name__})"
            except httpx.TransportError as e:
                status, error = 0, f"unreachable: {type(e).__name__}: {e}"
            if not forever and tries >= self.attempts:
                what = f"HTTP {status}" if status else error
                raise ForwardError(
                    f"forward to {self.url}: {what} after {tries} attempts; "
                    "the cursor stays at the last batch delivered"
                )
            report.retries += 1
            time.sleep(pause)
            pause = min(pause * 2, self.max_backoff)

    def run(
        self,
        after: int | None = None,
        follow: bool = False,
        poll: float = 0.5,
        should_stop: Callable[[], bool] | None = None,
    ) -> ForwardReport:
        """Forward from the stored cursor (or `after`, for a forward with none) until the
        feed's end (`follow`: until `should_stop()`)."""
        report = ForwardReport()
        stored = self.store.cursor(self.name)
        cursor = stored if stored is not None else (after or 0)
        report.cursor = cursor
        with self._listener() as listener:
            while True:
                page = self.read(cursor, self.batch)
                if page.records:
                    body = orjson.dumps(page.to_json())
                    status, error = self._post(body, report, forever=follow)
                    if status >= 400:
                        first, last = page.records[0].position, page.records[-1].position
                        self.store.bury(self.name, first, last, status, error, body)
                        report.dead += 1
                    else:
                        report.batches += 1
                        report.records += len(page.records)
                if page.next != cursor:
                    cursor = page.next
                    self.store.move(self.name, cursor)
                    report.cursor = cursor
                if len(page.records) < self.batch:
                    if not follow or (should_stop is not None and should_stop()):
                        return report
                    listener.wait(poll)

    def dead_letters(self, all_names: bool = False) -> list[DeadLetter]:
        return self.store.letters(None if all_names else self.name)

    def replay_dead(self) -> ForwardReport:
        """POST each dead letter again; those answered 2xx are removed."""
        report = ForwardReport()
        for letter in self.store.letters(self.name):
            status, _ = self._post(letter.body, report, forever=False)
            if status < 400:
                self.store.drop(letter.id)
                report.batches += 1
                report.records += len(orjson.loads(letter.body)["records"])
            else:
                report.dead += 1
        return report
