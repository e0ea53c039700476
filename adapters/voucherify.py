"""A small client for the two Voucherify endpoints custate reads:
`GET /v1/customers/{customerId}/activity` and `GET /v1/customers`, paged, with retries.

Credentials come from CUSTATE_VOUCHERIFY_APP_ID / CUSTATE_VOUCHERIFY_APP_TOKEN (sent as
X-App-Id / X-App-Token), the base URL from CUSTATE_VOUCHERIFY_URL (default
https://api.voucherify.io). 429 and 5xx answers (and transport errors) are retried with
exponential backoff (tenacity), honouring Retry-After, a bounded number of times; 401/403/404
and other 4xx answers are not retried. A 429 pauses every request made through the same
`RateGate` (shared by all the threads of a backfill) until its Retry-After has passed."""

from __future__ import annotations

import ipaddress
import os
import random
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import tenacity

from custate.domain.errors import Error

DEFAULT_URL = "https://api.voucherify.io"
PAGE_LIMIT = 100
MAX_LISTING_PAGE = 99  # GET /v1/customers: `page` goes from 1 to 99
ENV_URL = "CUSTATE_VOUCHERIFY_URL"
ENV_APP_ID = "CUSTATE_VOUCHERIFY_APP_ID"
ENV_APP_TOKEN = "CUSTATE_VOUCHERIFY_APP_TOKEN"

Json = dict[str, Any]


class VoucherifyError(Error):
    """A request that failed for good (after any retries)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ConfigError(VoucherifyError):
    pass


class PlainHttpCredentialsWarning(UserWarning):
    """The API credentials are about to cross the network unencrypted."""


def plain_http_warning(base_url: str) -> str | None:
    """What to warn of when `base_url` would carry X-App-Id/X-App-Token over plain http://
    to a host that is not loopback (None: https, or this machine)."""
    url = httpx.URL(base_url)
    if url.scheme != "http":
        return None
    host = url.host
    if host == "localhost" or host.endswith(".localhost"):
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return (
        f"{base_url} is plain http:// to {host}: the Voucherify credentials "
        "(X-App-Id, X-App-Token) will cross the network unencrypted; use https://"
    )


@dataclass(frozen=True, slots=True)
class VoucherifyConfig:
    base_url: str
    app_id: str
    app_token: str

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> VoucherifyConfig:
        env = os.environ if environ is None else environ
        app_id = env.get(ENV_APP_ID, "")
        token = env.get(ENV_APP_TOKEN, "")
        missing = [n for n, v in ((ENV_APP_ID, app_id), (ENV_APP_TOKEN, token)) if not v]
        if missing:
            raise ConfigError(f"set {' and '.join(missing)} (Voucherify API credentials)")
        return cls((env.get(ENV_URL) or DEFAULT_URL).rstrip("/"), app_id, token)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a customer's activities, as the API answered it."""

    body: Json
    data: list[Any]
    has_more: bool
    next_after: str | None  # the cursor for the next page (or of the last activity seen)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent/unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class RateGate:
    """One pause shared by every request made through it: a 429 anywhere holds them all
    until its Retry-After has passed (`pause`); each request first waits it out (`wait`).
    Thread-safe. `clock` and `sleep` are injectable (tests)."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        self.lock = threading.Lock()
        self.until = 0.0
        self.pauses = 0  # pauses begun (a 429 while paused extends the pause it is in)

    def pause(self, seconds: float) -> None:
        with self.lock:
            now = self.clock()
            if self.until <= now:
                self.pauses += 1
            self.until = max(self.until, now + seconds)

    def remaining(self) -> float:
        with self.lock:
            return max(0.0, self.until - self.clock())

    def wait(self) -> float:
        """Sleep until no pause is in force (another 429 may extend it meanwhile)."""
        waited = 0.0
        while (left := self.remaining()) > 0:
            self.sleep(left)
            waited += left
        return waited


class _Retryable(Exception):
    def __init__(self, why: str, retry_after: float | None, rate_limited: bool) -> None:
        super().__init__(why)
        self.why = why
        self.retry_after = retry_after
        self.rate_limited = rate_limited


class VoucherifyClient:
    """The API client. Thread-safe: the threads of a backfill share one client, its
    connection pool and its `RateGate`."""

    def __init__(
        self,
        config: VoucherifyConfig,
        *,
        max_attempts: int = 6,
        backoff: float = 0.5,
        max_delay: float = 60.0,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[int, float, str], None] | None = None,
        gate: RateGate | None = None,
        page_limit: int = PAGE_LIMIT,
    ) -> None:
        self.config = config
        insecure = plain_http_warning(config.base_url)
        if insecure is not None:
            # the default filter shows it once, on stderr
            warnings.warn(insecure, PlainHttpCredentialsWarning, stacklevel=2)
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.max_delay = max_delay
        self.sleep = sleep
        self.on_retry = on_retry
        self.gate = gate if gate is not None else RateGate(sleep=sleep)
        self.page_limit = max(1, min(PAGE_LIMIT, page_limit))
        self.retries = 0
        self._count = threading.Lock()
        self.http = httpx.Client(
            base_url=config.base_url,
            headers={
                "X-App-Id": config.app_id,
                "X-App-Token": config.app_token,
                "Accept": "application/json",
                "User-Agent": "custate",
            },
            timeout=timeout,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> VoucherifyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _backoff(self, attempt: int) -> float:
        base: float = self.backoff * 2.0 ** (attempt - 1)
        return min(self.max_delay, base * random.uniform(0.5, 1.0))

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """Tenacity's wait: a 5xx or transport error backs off (Retry-After if given); a
        429 has paused the gate, which the next attempt waits out (so 0 here)."""
        e = state.outcome.exception() if state.outcome is not None else None
        if isinstance(e, _Retryable) and e.rate_limited:
            return 0.0
        if isinstance(e, _Retryable) and e.retry_after is not None:
            return min(e.retry_after, self.max_delay)
        return self._backoff(state.attempt_number)

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        with self._count:
            self.retries += 1
        if self.on_retry is None:
            return
        e = state.outcome.exception() if state.outcome is not None else None
        why = e.why if isinstance(e, _Retryable) else str(e)
        delay = state.upcoming_sleep or self.gate.remaining()
        self.on_retry(state.attempt_number, delay, why)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.sleep(seconds)

    def get_json(self, path: str, params: dict[str, str | int], what: str) -> Json:
        """GET with retries on 429/5xx/transport errors; a VoucherifyError otherwise."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(_Retryable),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            return retrying(self._get_once, path, params, what)
        except _Retryable as e:
            raise VoucherifyError(
                f"{what}: gave up after {self.max_attempts} attempts ({e.why})"
            ) from None

    def _get_once(self, path: str, params: dict[str, str | int], what: str) -> Json:
        self.gate.wait()
        try:
            r = self.http.get(path, params=params)
        except httpx.TransportError as e:
            raise _Retryable(f"{type(e).__name__}: {e}", None, False) from e
        if r.status_code == 200:
            try:
                body = orjson.loads(r.content)
            except orjson.JSONDecodeError as e:
                raise VoucherifyError(f"{what}: the answer is not JSON ({e})", 200) from e
            if not isinstance(body, dict):
                raise VoucherifyError(f"{what}: the answer is not a JSON object", 200)
            return body
        if r.status_code in (401, 403):
            raise VoucherifyError(
                f"{what}: HTTP {r.status_code} unauthorized: check {ENV_APP_ID} and "
                f"{ENV_APP_TOKEN}{_detail(r)}",
                r.status_code,
            )
        if r.status_code == 404:
            raise VoucherifyError(f"{what}: HTTP 404 not found{_detail(r)}", 404)
        if r.status_code != 429 and r.status_code < 500:
            raise VoucherifyError(f"{what}: HTTP {r.status_code}{_detail(r)}", r.status_code)
        retry_after = retry_after_seconds(r.headers.get("Retry-After"))
        if r.status_code == 429:
            # The limit is the project's: every thread pauses, not only this one.
            delay = retry_after if retry_after is not None else self._backoff(1)
            self.gate.pause(min(delay, self.max_delay))
            raise _Retryable("HTTP 429", retry_after, True)
        raise _Retryable(f"HTTP {r.status_code}", retry_after, False)

    def activity_page(
        self, customer_id: str, starting_after_id: str | None = None, since: str | None = None
    ) -> Page:
        params: dict[str, str | int] = {"order": "created_at", "limit": self.page_limit}
        if starting_after_id:
            params["starting_after_id"] = starting_after_id
        if since:
            params["start_date"] = since
        path = f"/v1/customers/{quote(customer_id, safe='')}/activity"
        body = self.get_json(path, params, f"customer {customer_id}")
        ref = body.get("data_ref", "data")
        data = body.get(ref if isinstance(ref, str) else "data")
        if not isinstance(data, list):
            raise VoucherifyError(f"customer {customer_id}: the answer holds no activity list")
        more = body.get("more_starting_after")
        last_id = _last_id(data)
        next_after = more if isinstance(more, str) and more else last_id
        return Page(body, data, bool(body.get("has_more")) and bool(data), next_after)

    def activity_pages(
        self, customer_id: str, starting_after_id: str | None = None, since: str | None = None
    ) -> Iterator[Page]:
        """Every page after the cursor, oldest first. Bounded: stops when the API says there
        is no more, or when a page brings no new cursor."""
        cursor = starting_after_id
        while True:
            page = self.activity_page(customer_id, cursor, since)
            yield page
            if not page.has_more or page.next_after is None or page.next_after == cursor:
                return
            cursor = page.next_after

    def customer_page(self, cursor: ListingCursor) -> list[Json]:
        """The customers of the listing's next page not met before, and `cursor` moved
        past them (its `done` set at the end of the listing)."""
        params: dict[str, str | int] = {"order": cursor.order, "limit": self.page_limit}
        after = cursor.starting_after()
        if after is not None:
            params["starting_after"] = after
        if cursor.page > 1:
            params["page"] = cursor.page
        body = self.get_json("/v1/customers", params, "the customer listing")
        ref = body.get("data_ref", "customers")
        data = body.get(ref if isinstance(ref, str) else "customers")
        if not isinstance(data, list):
            raise VoucherifyError("the customer listing: the answer holds no customer list")
        total = body.get("total")
        after_this = total if isinstance(total, int) and not isinstance(total, bool) else None
        before = cursor.count - (cursor.page - 1) * self.page_limit
        more = body.get("has_more")
        has_more = bool(more) if isinstance(more, bool) else len(data) >= self.page_limit
        new = cursor.advance(data, has_more and bool(data))
        if after_this is not None:  # the API counts what follows `starting_after`
            cursor.total = max(cursor.count, before + after_this - (len(data) - len(new)))
        return new


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def _format_ms(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class ListingCursor:
    """Where a listing of `GET /v1/customers` stands, stored between pages so a killed
    backfill resumes it. The API pages with `starting_after`, a time of the `order` field
    (`created_at`, or `updated_at` for `--since`), ascending. Customers sharing the last
    time of a page are not lost: the next page is asked from 1 ms before that time (the
    `edge`) and the ones already met there (`seen`) are skipped; a page made only of such
    ties moves on with `page` instead. `since` is where a listing by `updated_at` starts."""

    order: str = "created_at"
    since: str | None = None
    edge: str | None = None
    seen: list[str] = field(default_factory=list)
    page: int = 1
    done: bool = False
    total: int | None = None  # customers in the whole listing, as the API counts them
    count: int = 0  # customers listed so far

    def key(self) -> str:
        """The name of this listing among the stored ones."""
        return f"customers?order={self.order}&since={self.since or ''}"

    def starting_after(self) -> str | None:
        edge = _parse_time(self.edge)
        if edge is None:
            return self.since
        return _format_ms(edge - timedelta(milliseconds=1))

    def advance(self, customers: list[Any], has_more: bool) -> list[Json]:
        edge = _parse_time(self.edge)
        seen = set(self.seen)
        new: list[Json] = []
        last: datetime | None = None
        for c in customers:
            if not isinstance(c, dict) or not isinstance(c.get("id"), str) or not c["id"]:
                continue
            t = _parse_time(c.get(self.order))
            if t is None:
                raise VoucherifyError(
                    f"the customer listing: customer {c['id']} has no readable {self.order}"
                )
            last = t
            if edge is not None and (t < edge or (t == edge and c["id"] in seen)):
                continue
            new.append(c)
        self.count += len(new)
        if last is None or not has_more:
            self.done = True
        if last is not None:
            if edge is not None and last == edge:
                if not new:  # a whole page of ties at the edge: page on through them
                    self.page += 1
                    if self.page > MAX_LISTING_PAGE:
                        raise VoucherifyError(
                            f"the customer listing: over {MAX_LISTING_PAGE} pages of "
                            f"customers with {self.order} {self.edge}"
                        )
                self.seen = sorted(seen | {str(c["id"]) for c in new})
            else:
                self.edge = last.isoformat()
                self.page = 1
                self.seen = sorted(
                    str(c["id"])
                    for c in customers
                    if isinstance(c, dict) and _parse_time(c.get(self.order)) == last
                )
        return new

    def to_json(self) -> Json:
        return {
            "order": self.order,
            "since": self.since,
            "edge": self.edge,
            "seen": self.seen,
            "page": self.page,
            "done": self.done,
            "total": self.total,
            "count": self.count,
        }

    @classmethod
    def from_json(cls, value: Json) -> ListingCursor:
        return cls(
            order=str(value.get("order") or "created_at"),
            since=value.get("since"),
            edge=value.get("edge"),
            seen=[str(i) for i in value.get("seen") or []],
            page=int(value.get("page") or 1),
            done=bool(value.get("done")),
            total=value.get("total"),
            count=int(value.get("count") or 0),
        )


def _last_id(data: list[Any]) -> str | None:
    for item in reversed(data):
        if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
            return str(item["id"])
    return None


def _detail(r: httpx.Response) -> str:
    text = r.text.strip()
    return f": {text[:300]}" if text else ""
