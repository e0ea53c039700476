"""A small client for the one Voucherify endpoint custate reads:
`GET /v1/customers/{customerId}/activity`, paged, with retries.

Credentials come from CUSTATE_VOUCHERIFY_APP_ID / CUSTATE_VOUCHERIFY_APP_TOKEN (sent as
X-App-Id / X-App-Token), the base URL from CUSTATE_VOUCHERIFY_URL (default
https://api.voucherify.io). 429 and 5xx answers (and transport errors) are retried with
exponential backoff, honouring Retry-After, a bounded number of times; 401/403/404 and
other 4xx answers are not retried."""

from __future__ import annotations

import ipaddress
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from custate.domain.errors import Error

DEFAULT_URL = "https://api.voucherify.io"
PAGE_LIMIT = 100
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


class VoucherifyClient:
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

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        base: float = self.backoff * 2.0**attempt
        return min(self.max_delay, base * random.uniform(0.5, 1.0))

    def get_json(self, path: str, params: dict[str, str | int], what: str) -> Json:
        """GET with retries on 429/5xx/transport errors; a VoucherifyError otherwise."""
        last = ""
        for attempt in range(self.max_attempts):
            retry_after: float | None = None
            try:
                r = self.http.get(path, params=params)
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}"
            else:
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
                    raise VoucherifyError(
                        f"{what}: HTTP {r.status_code}{_detail(r)}", r.status_code
                    )
                last = f"HTTP {r.status_code}"
                retry_after = retry_after_seconds(r.headers.get("Retry-After"))
            if attempt == self.max_attempts - 1:
                break
            delay = self._delay(attempt, retry_after)
            if self.on_retry is not None:
                self.on_retry(attempt + 1, delay, last)
            self.sleep(delay)
        raise VoucherifyError(f"{what}: gave up after {self.max_attempts} attempts ({last})")

    def activity_page(
        self, customer_id: str, starting_after_id: str | None = None, since: str | None = None
    ) -> Page:
        params: dict[str, str | int] = {"order": "created_at", "limit": PAGE_LIMIT}
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


def _last_id(data: list[Any]) -> str | None:
    for item in reversed(data):
        if isinstance(item, dict) and isinstance(item.get("id"), str) and item["id"]:
            return str(item["id"])
    return None


def _detail(r: httpx.Response) -> str:
    text = r.text.strip()
    return f": {text[:300]}" if text else ""
