"""A fake Voucherify API on 127.0.0.1: `GET /v1/customers/{id}/activity`, paged like the
real one (`order=created_at`, `limit`, `starting_after_id` -> `has_more`,
`more_starting_after`; `start_date`), and `GET /v1/customers` (`order` created_at or
updated_at ascending, `starting_after` a time of that field, `page` 1-99, `limit` up to
100 -> `customers`, `total`, `has_more`), with scripted faults (429 + Retry-After, 5xx;
`fail_listing` for the listing), a rate limit window (`throttle`: every request in it is
429), 404 for unknown customers, 401 for wrong credentials, an optional pause per page, and
a log of every request (arrival time, answer) with the most served at once. A real HTTP server
in a daemon thread (http.server), on a free port; used by tests/integration/test_pull.py and
bench/bench_http.py."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import orjson

Json = dict[str, Any]

APP_ID = "fake-app-id"
APP_TOKEN = "fake-app-token"


LISTING = "/v1/customers"  # the customer_id of a listing request in the log


@dataclass
class Served:
    customer_id: str  # LISTING for the customer listing
    status: int
    starting_after_id: str | None  # the listing's: starting_after
    count: int
    at: float = 0.0  # time.monotonic() on arrival
    page: int = 1


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class FakeVoucherify:
    activities: dict[str, list[Json]] = field(default_factory=dict)
    faults: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    page_delay: float = 0.0
    log: list[Served] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    customers: dict[str, Json] = field(default_factory=dict)  # listed: id -> customer
    listing_faults: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    throttle_next: float = 0.0  # the next request opens a rate limit window this long
    throttled_until: float = 0.0
    in_flight: int = 0
    most_in_flight: int = 0

    def list_customers(self, created: dict[str, str] | None = None) -> None:
        """List every customer that has activities (and those of `created`: id -> time),
        created at its first activity's time and updated at its last one's."""
        with self.lock:
            for cid, rs in self.activities.items():
                self.customers[cid] = {
                    "id": cid,
                    "object": "customer",
                    "created_at": rs[0]["created_at"],
                    "updated_at": rs[-1]["created_at"],
                }
            for cid, at in (created or {}).items():
                self.customers[cid] = {
                    "id": cid,
                    "object": "customer",
                    "created_at": at,
                    "updated_at": at,
                }

    def fail_listing(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.listing_faults.append((status, headers or {}))

    def throttle(self, seconds: float) -> None:
        """The next request opens a window of `seconds` in which every request is 429
        (Retry-After: what is left of it, in whole seconds, at least 1)."""
        self.throttle_next = seconds

    def served(self, customer_id: str | None = None, status: int | None = None) -> list[Served]:
        with self.lock:
            return [
                s
                for s in self.log
                if (customer_id is None or s.customer_id == customer_id)
                and (status is None or s.status == status)
            ]

    def add(self, records: Iterable[Json], customer_of: Any) -> None:
        """Add activity records; `customer_of(record)` names the customer."""
        by: dict[str, list[Json]] = defaultdict(list)
        for r in records:
            by[str(customer_of(r))].append(r)
        with self.lock:
            for cid, rs in by.items():
                have = self.activities.setdefault(cid, [])
                have.extend(rs)
                have.sort(key=lambda r: (r["created_at"], r["id"]))

    def fail(self, customer_id: str, status: int, headers: dict[str, str] | None = None) -> None:
        """The next request for this customer answers `status` (queued, in order)."""
        self.faults.setdefault(customer_id, []).append((status, headers or {}))

    def pages_served(self, customer_id: str | None = None) -> int:
        with self.lock:
            return sum(
                1
                for s in self.log
                if s.status == 200 and (customer_id is None or s.customer_id == customer_id)
            )

    def answer(
        self, path: str, query: dict[str, list[str]], headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        now = time.monotonic()
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            limited = self._throttled(path, now)
            if limited is not None:
                return limited
            if path.rstrip("/") == LISTING:
                return self._listing(query, headers, now)
            return self._activity(path, query, headers, now)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _throttled(self, path: str, now: float) -> tuple[int, dict[str, str], bytes] | None:
        with self.lock:
            if self.throttle_next:
                self.throttled_until = now + self.throttle_next
                self.throttle_next = 0.0
            if now >= self.throttled_until:
                return None
            left = max(1, round(self.throttled_until - now + 0.499))
            who = LISTING if path.rstrip("/") == LISTING else unquote(path.split("/")[3])
            self.log.append(Served(who, 429, None, 0, now))
        body = b'{"code":429,"key":"too_many_requests"}'
        return 429, {"Retry-After": str(left)}, body

    def _listing(
        self, query: dict[str, list[str]], headers: dict[str, str], now: float
    ) -> tuple[int, dict[str, str], bytes]:
        if headers.get("x-app-id") != APP_ID or headers.get("x-app-token") != APP_TOKEN:
            return 401, {}, b'{"code":401,"key":"unauthorized","message":"Unauthorized"}'
        after = query.get("starting_after", [None])[0]
        page_no = int(query.get("page", ["1"])[0])
        with self.lock:
            if self.listing_faults:
                status, extra = self.listing_faults.pop(0)
                self.log.append(Served(LISTING, status, after, 0, now, page_no))
                return status, extra, orjson.dumps({"code": status, "message": "fault"})
            order = query.get("order", ["-created_at"])[0]
            assert order in ("created_at", "updated_at"), order  # ascending, as custate asks
            assert 1 <= page_no <= 99, page_no
            limit = int(query.get("limit", ["10"])[0])
            assert 1 <= limit <= 100, limit
            chosen = sorted(self.customers.values(), key=lambda c: (_time(c[order]), c["id"]))
            if after is not None:
                chosen = [c for c in chosen if _time(c[order]) > _time(after)]
            start = (page_no - 1) * limit
            page = chosen[start : start + limit]
            has_more = start + limit < len(chosen)
            self.log.append(Served(LISTING, 200, after, len(page), now, page_no))
        body: Json = {
            "object": "list",
            "data_ref": "customers",
            "customers": page,
            "total": len(chosen),
            "has_more": has_more,
        }
        if self.page_delay:
            time.sleep(self.page_delay)
        return 200, {}, orjson.dumps(body)

    def _activity(
        self, path: str, query: dict[str, list[str]], headers: dict[str, str], now: float
    ) -> tuple[int, dict[str, str], bytes]:
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[:2] != ["v1", "customers"] or parts[3] != "activity":
            return 404, {}, b'{"code":404,"message":"Resource not found"}'
        cid = unquote(parts[2])
        after = query.get("starting_after_id", [None])[0]
        if headers.get("x-app-id") != APP_ID or headers.get("x-app-token") != APP_TOKEN:
            return 401, {}, b'{"code":401,"key":"unauthorized","message":"Unauthorized"}'
        with self.lock:
            queued = self.faults.get(cid)
            if queued:
                status, extra = queued.pop(0)
                self.log.append(Served(cid, status, after, 0, now))
                return status, extra, orjson.dumps({"code": status, "message": "fault"})
            records = self.activities.get(cid)
            if records is None:
                self.log.append(Served(cid, 404, after, 0, now))
                return 404, {}, orjson.dumps({"code": 404, "key": "not_found"})
            assert query.get("order", [""])[0] == "created_at", query
            limit = min(100, int(query.get("limit", ["10"])[0]))
            since = query.get("start_date", [None])[0]
            if since is not None:
                records = [r for r in records if _time(r["created_at"]) >= _time(since)]
            start = 0
            if after is not None:
                ids = [r["id"] for r in records]
                start = ids.index(after) + 1 if after in ids else len(records)
            page = records[start : start + limit]
            has_more = start + limit < len(records)
            self.log.append(Served(cid, 200, after, len(page), now))
        body: Json = {"object": "list", "data_ref": "data", "data": page, "has_more": has_more}
        if has_more:
            body["more_starting_after"] = page[-1]["id"]
        if self.page_delay:
            time.sleep(self.page_delay)
        return 200, {}, orjson.dumps(body)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeVoucherify
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        u = urlparse(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra, body = self.fake.answer(u.path, parse_qs(u.query), headers)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeServer:
    """`with FakeServer(fake) as url:` serves `fake` on 127.0.0.1 at a free port."""

    def __init__(self, fake: FakeVoucherify) -> None:
        handler = type("Handler", (_Handler,), {"fake": fake})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)
