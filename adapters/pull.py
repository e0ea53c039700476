"""Pulling customers' activities from the Voucherify API into the store, resumably.

The cursor of a customer is the id of the last activity pulled and stored (`cs.pull_cursors()`,
a table beside the events). It advances only after a page's records were ingested
(committed), so a pull killed at any point refetches at most one page on the next run, and
those records are duplicates, stored once.

`backfill` pulls every customer of the project: it lists `GET /v1/customers` page by page
(the listing's cursor and the customers listed but not done are stored, `cs.pull_listings()`)
and pulls the listed customers `concurrency` at a time in a thread pool, all through one
client whose `RateGate` pauses every thread on a 429. After a kill a re-run first finishes
the customers listed and not done (or failed), then lists on from the stored cursor."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import orjson

from custate.adapters.api import Custate, IngestReport, PullCursors
from custate.adapters.readers import records_from_value
from custate.adapters.voucherify import ListingCursor, VoucherifyClient, VoucherifyError

__all__ = ["BackfillReport", "CustomerPull", "PullCursors", "backfill", "pull_customer"]

DEFAULT_CONCURRENCY = 4


@dataclass(slots=True)
class CustomerPull:
    """What a pull of one customer did: pages fetched, what became of their records, the
    cursor it left, and the error that stopped it (None: it got everything)."""

    customer_id: str
    pages: int = 0
    report: IngestReport = field(default_factory=IngestReport)
    cursor: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _add(total: IngestReport, part: IngestReport) -> None:
    total.read += part.read
    total.accepted += part.accepted
    total.duplicates += part.duplicates
    total.conflicts += part.conflicts
    total.rejected += part.rejected
    total.unrecognized += part.unrecognized
    total.resolved += part.resolved
    total._note(part.problems)


def pull_customer(
    cs: Custate,
    client: VoucherifyClient,
    cursors: PullCursors,
    customer_id: str,
    since: str | None = None,
    on_page: Callable[[CustomerPull], None] | None = None,
) -> CustomerPull:
    """Fetch and store every activity of one customer after its cursor. Errors are kept in
    the result (the caller goes on with the next customer)."""
    out = CustomerPull(customer_id, cursor=cursors.get(customer_id))
    source = f"voucherify:/v1/customers/{customer_id}/activity"
    try:
        for page in client.activity_pages(customer_id, out.cursor, since):
            location = f"after {out.cursor or 'start'}"
            items = records_from_value(page.body, source, location, customer_id)
            _add(out.report, cs.ingest_items(items, project=False))
            out.pages += 1
            if page.next_after is not None and page.next_after != out.cursor:
                cursors.set(customer_id, page.next_after)
                out.cursor = page.next_after
            if on_page is not None:
                on_page(out)
    except VoucherifyError as e:
        out.error = str(e)
    return out


@dataclass(slots=True)
class BackfillReport:
    """What a backfill did: customers `listed` by the API this run (`total`: as the API
    counts them), `resumed` (listed by an earlier run and not done), `pulled` (done) and
    `failed` (id -> error); the activities' fate (`activities`), pages fetched, shared
    pauses for 429s, retries, where the listing resumed (`resumed_after`), whether it
    reached its end (`complete`), a listing error, and the seconds it took."""

    listed: int = 0
    resumed: int = 0
    pulled: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    total: int | None = None
    activities: IngestReport = field(default_factory=IngestReport)
    pages: int = 0
    pauses: int = 0
    retries: int = 0
    resumed_after: str | None = None
    complete: bool = False
    error: str | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and self.error is None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "customers": {
                "listed": self.listed,
                "resumed": self.resumed,
                "pulled": self.pulled,
                "failed": len(self.failed),
                "total": self.total,
            },
            "activities": self.activities.to_json(),
            "pages": self.pages,
            "rate_limit_pauses": self.pauses,
            "retries": self.retries,
            "listing": {"resumed_after": self.resumed_after, "complete": self.complete},
            "failed": [{"customer_id": k, "error": v} for k, v in sorted(self.failed.items())],
            "error": self.error,
            "elapsed_seconds": round(self.elapsed, 3),
        }


def backfill(
    cs: Custate,
    client: VoucherifyClient,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    since: str | None = None,
    restart: bool = False,
    progress: Callable[[BackfillReport], None] | None = None,
) -> BackfillReport:
    """Pull every customer of the project (with `since`: the customers updated since then,
    and their activities since then), `concurrency` customers at a time. Resumable at both
    levels; nothing is stored twice. Failures are kept in the report (and in the queue, so
    a re-run tries them again)."""
    started = time.monotonic()
    out = BackfillReport()
    lock = threading.Lock()
    cursors = cs.pull_cursors()
    listings = cs.pull_listings()
    fresh = ListingCursor(order="updated_at" if since else "created_at", since=since)
    key = fresh.key()
    if restart:
        listings.forget(key)
    stored = listings.cursor(key)
    cursor = ListingCursor.from_json(orjson.loads(stored)) if stored else fresh
    cursor.done = False  # a finished listing goes on too: customers created since
    out.resumed_after = cursor.edge
    out.total = cursor.total
    pauses0 = client.gate.pauses
    retries0 = client.retries

    def report() -> None:
        out.pauses = client.gate.pauses - pauses0
        out.retries = client.retries - retries0
        out.elapsed = time.monotonic() - started
        if progress is not None:
            progress(out)

    def one(customer_id: str) -> None:
        seen = IngestReport()
        seen_pages = 0

        def on_page(p: CustomerPull) -> None:
            nonlocal seen, seen_pages
            with lock:
                delta = _minus(p.report, seen)
                _add(out.activities, delta)
                out.pages += p.pages - seen_pages
                seen_pages = p.pages
                seen = _copy(p.report)
            report()

        r = pull_customer(cs, client, cursors, customer_id, since, on_page)
        listings.finished(key, customer_id, r.error)
        with lock:
            _add(out.activities, _minus(r.report, seen))
            out.pages += r.pages - seen_pages
            if r.ok:
                out.pulled += 1
                out.failed.pop(customer_id, None)
            else:
                out.failed[customer_id] = r.error or "failed"
        report()

    workers = max(1, concurrency)
    ahead = 2 * workers  # customers handed to the pool and not done, at most
    running: set[Future[None]] = set()

    def submit(pool: ThreadPoolExecutor, customer_id: str) -> None:
        nonlocal running
        while len(running) >= ahead:
            _done, running = _settle(running)
        running.add(pool.submit(one, customer_id))

    with ThreadPoolExecutor(workers, thread_name_prefix="custate-pull") as pool:
        for customer_id, _state, _error in listings.unfinished(key):
            out.resumed += 1
            submit(pool, customer_id)
        try:
            while not cursor.done:
                customers = client.customer_page(cursor)
                ids = [str(c["id"]) for c in customers]
                listings.listed(key, ids, orjson.dumps(cursor.to_json()).decode())
                with lock:
                    out.listed += len(ids)
                    out.total = cursor.total
                report()
                for customer_id in ids:
                    submit(pool, customer_id)
        except VoucherifyError as e:
            out.error = str(e)
        while running:
            _done, running = _settle(running)
    out.complete = cursor.done
    report()
    return out


def _settle(running: set[Future[None]]) -> tuple[set[Future[None]], set[Future[None]]]:
    done, rest = wait(running, return_when=FIRST_COMPLETED)
    for f in done:
        f.result()  # an unexpected error (not the API's) stops the backfill
    return done, rest


_COUNTS = ("read", "accepted", "duplicates", "conflicts", "rejected", "unrecognized", "resolved")


def _copy(r: IngestReport) -> IngestReport:
    out = IngestReport()
    for name in _COUNTS:
        setattr(out, name, getattr(r, name))
    out.problems = list(r.problems)
    return out


def _minus(a: IngestReport, b: IngestReport) -> IngestReport:
    out = IngestReport()
    for name in _COUNTS:
        setattr(out, name, getattr(a, name) - getattr(b, name))
    out._note(a.problems[len(b.problems) :])
    return out
