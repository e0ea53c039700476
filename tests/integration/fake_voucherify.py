"""A fake Voucherify API on 127.0.0.1: `GET /v1/customers/{id}/activity`, paged like the
real one (`order=created_at`, `limit`, `starting_after_id` -> `has_more`,
`more_starting_after`), with scripted faults (429 + Retry-After, 5xx), 404 for unknown
customers, 401 for wrong credentials, and an optional pause per page. A real HTTP server
in a daemon thread (http.server), on a free port; used by tests/integration/test_pull.py and
bench/bench_http.py."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import orjson

Json = dict[str, Any]

APP_ID = "fake-app-id"
APP_TOKEN = "fake-app-token"


@dataclass
class Served:
    customer_id: str
    status: int
    starting_after_id: str | None
    count: int


@dataclass
class FakeVoucherify:
    activities: dict[str, list[Json]] = field(default_factory=dict)
    faults: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    page_delay: float = 0.0
    log: list[Served] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

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
                self.log.append(Served(cid, status, after, 0))
                return status, extra, orjson.dumps({"code": status, "message": "fault"})
            records = self.activities.get(cid)
            if records is None:
                self.log.append(Served(cid, 404, after, 0))
                return 404, {}, orjson.dumps({"code": 404, "key": "not_found"})
            assert query.get("order", [""])[0] == "created_at", query
            limit = min(100, int(query.get("limit", ["10"])[0]))
            start = 0
            if after is not None:
                ids = [r["id"] for r in records]
                start = ids.index(after) + 1 if after in ids else len(records)
            page = records[start : start + limit]
            has_more = start + limit < len(records)
            self.log.append(Served(cid, 200, after, len(page)))
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
