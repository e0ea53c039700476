"""Prometheus metrics of one custate process, and the HTTP middleware that feeds them.

`Metrics` holds its own `CollectorRegistry` (never prometheus_client's process-wide
default one): each app (`create_app`) or projector process has its own set, so that
several apps in one process do not collide and the library touches no global state.

- `custate_activities_ingested_total{result}`: records the webhook endpoint's group commit
  wrote, by what became of them: `accepted` (stored), `duplicate` (stored before, same
  content), `conflict` (stored before with other content), `invalid` (not an activity, or
  one the store could not hold; kept as a reject).
- `custate_webhook_deliveries_total{status}`: webhook answers, by HTTP status.
- `custate_http_request_duration_seconds{route,status}`: a histogram per route template
  (`/customers/{customer_id}/state`, never the raw path: the label set is bounded;
  `unmatched` for a path no route has) and status.
- `custate_catchup_activities_total` and `custate_catchup_duration_seconds`: what this
  process's projector worker folded into the read model, and how long each catch-up took.
- `custate_readmodel_lag_activities`, `custate_readmodel_lag_seconds`,
  `custate_readmodel_position`, `custate_store_head`: read from the store when scraped
  (`FreshnessCollector`), within a time bound; `custate_store_up` is 0 when the store
  did not answer in time or failed (the lag gauges are then left out), so a store fault
  never fails the scrape.

Counters count what this process did since it started: under `serve --workers N` each
worker process has its own, and Prometheus sums them (docs/DECISIONS.md, Metrics)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from custate.adapters.api import Freshness, WorkerEvent

__all__ = [
    "CONTENT_TYPE",
    "INGEST_RESULTS",
    "LAG_COUNT_AT_MOST",
    "FreshnessCollector",
    "Metrics",
    "ObserveRequests",
    "start_metrics_server",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
INGEST_RESULTS = ("accepted", "duplicate", "conflict", "invalid")
# What the webhook's group commit says of a record -> the metric's `result`.
_RESULT_OF = {"stored": "accepted", "duplicate": "duplicate", "conflict": "conflict"}
WEBHOOK_ROUTE = "/webhooks/voucherify"
UNMATCHED = "unmatched"
DEFAULT_SCRAPE_TIMEOUT = 1.0  # seconds a scrape waits for the store's freshness
LAG_COUNT_AT_MOST = 100  # lag counted exactly up to this, estimated past it (as /readyz)
# Request durations: a read answers in milliseconds, a webhook after its group commit,
# a long poll (`/changes?wait=`) or a `min_position` wait in up to a minute.
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_CATCHUP_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300)

_log = logging.getLogger("custate.metrics")
_access = logging.getLogger("custate.http.access")


class FreshnessCollector(Collector):
    """Gauges of how fresh the read model is, read by calling `read` at each scrape. The
    call runs in a thread of its own and the scrape waits for it at most `timeout`
    seconds; while one is still running (a hung store) no other is started. A call that
    fails or is late gives `custate_store_up 0` and no lag gauges."""

    def __init__(
        self, read: Callable[[], Freshness], timeout: float = DEFAULT_SCRAPE_TIMEOUT
    ) -> None:
        self.read = read
        self.timeout = timeout
        self._lock = threading.Lock()
        self._pending: Future[Freshness] | None = None

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(name, doc) for name, doc in _GAUGES] + [
            GaugeMetricFamily("custate_store_up", _UP)
        ]

    def collect(self) -> Iterable[Metric]:
        fresh = self._look()
        up = GaugeMetricFamily("custate_store_up", _UP)
        up.add_metric([], 0.0 if fresh is None else 1.0)
        if fresh is None:
            return [up]
        values = (
            fresh.lag_activities,
            fresh.lag_seconds,
            fresh.position,
            fresh.head,
        )
        out: list[Metric] = [up]
        for (name, doc), value in zip(_GAUGES, values, strict=True):
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], float(value))
            out.append(g)
        return out

    def _look(self) -> Freshness | None:
        with self._lock:
            pending = self._pending
            if pending is None or pending.done():
                pending = Future()
                threading.Thread(
                    target=self._run, args=(pending,), name="custate-metrics", daemon=True
                ).start()
                self._pending = pending
        try:
            return pending.result(timeout=self.timeout)
        except TimeoutError:
            _log.warning("metrics: the store did not answer within %.1f s", self.timeout)
        except Exception as e:
            _log.warning("metrics: the store failed: %s: %s", type(e).__name__, e)
        return None

    def _run(self, into: Future[Freshness]) -> None:
        try:
            into.set_result(self.read())
        except BaseException as e:
            into.set_exception(e)


_UP = "1 if the store answered this scrape's look at the read model in time, else 0."
_GAUGES = (
    (
        "custate_readmodel_lag_activities",
        "Activities stored but not yet in the read model (estimated past 100).",
    ),
    ("custate_readmodel_lag_seconds", "Seconds the oldest activity not yet projected has waited."),
    ("custate_readmodel_position", "The store position the read model reflects."),
    ("custate_store_head", "The store's last position."),
)


class Metrics:
    """One process's (or one app's) metrics, in a registry of their own (`registry`).
    `freshness`, if given, is read at each scrape for the lag gauges
    (`FreshnessCollector`); `http` adds the request and webhook metrics."""

    def __init__(
        self,
        freshness: Callable[[], Freshness] | None = None,
        *,
        http: bool = True,
        scrape_timeout: float = DEFAULT_SCRAPE_TIMEOUT,
    ) -> None:
        r = self.registry = CollectorRegistry()
        self.catchup = Counter(
            "custate_catchup_activities",
            "Activities this process's projector folded into the read model.",
            registry=r,
        )
        self.catchup_seconds = Histogram(
            "custate_catchup_duration_seconds",
            "How long each of this process's projector catch-ups took.",
            buckets=_CATCHUP_BUCKETS,
            registry=r,
        )
        self.ingested: Counter | None = None
        self.requests: Histogram | None = None
        self.webhooks: Counter | None = None
        if http:
            self.ingested = Counter(
                "custate_activities_ingested",
                "Webhook records written, by result: accepted, duplicate, conflict, invalid.",
                ["result"],
                registry=r,
            )
            for result in INGEST_RESULTS:
                self.ingested.labels(result)
            self.requests = Histogram(
                "custate_http_request_duration_seconds",
                "HTTP request durations, by route template and status.",
                ["route", "status"],
                buckets=_HTTP_BUCKETS,
                registry=r,
            )
            self.webhooks = Counter(
                "custate_webhook_deliveries",
                "Webhook deliveries answered, by HTTP status.",
                ["status"],
                registry=r,
            )
        if freshness is not None:
            r.register(FreshnessCollector(freshness, scrape_timeout))

    def written(self, outcomes: Sequence[str], rejected: int) -> None:
        """A group commit wrote records with these `outcomes` (`stored`, `duplicate`,
        `conflict`, `refused`) and kept `rejected` invalid ones as rejects."""
        if self.ingested is None:
            return
        counts = dict.fromkeys(INGEST_RESULTS, 0)
        counts["invalid"] = rejected
        for o in outcomes:
            counts[_RESULT_OF.get(o, "invalid")] += 1
        for result, n in counts.items():
            if n:
                self.ingested.labels(result).inc(n)

    def worker_event(self, e: WorkerEvent) -> None:
        """What a projector worker said: a catch-up's activities and duration count."""
        if e.kind == "projected" and e.report is not None:
            self.catchup.inc(e.report.activities)
            if e.seconds:
                self.catchup_seconds.observe(e.seconds)

    def request(self, route: str, status: int, seconds: float) -> None:
        """An HTTP request to `route` (its template) was answered `status` in `seconds`."""
        if self.requests is None or self.webhooks is None:
            return
        self.requests.labels(route, str(status)).observe(seconds)
        if route == WEBHOOK_ROUTE:
            self.webhooks.labels(str(status)).inc()

    def exposition(self) -> bytes:
        """The registry in Prometheus's text format (`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


class ObserveRequests:
    """ASGI middleware, outermost: times each HTTP request, counts it in `metrics` by its
    route template and status, and logs one `custate.http.access` line for it (method,
    route, path, status, duration, the `X-Request-ID` the response carries)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        rid = "-"

        async def send_and_see(message: Any) -> None:
            nonlocal status, rid
            if message["type"] == "http.response.start":
                status = int(message["status"])
                for k, v in message.get("headers", ()):
                    if k.lower() == b"x-request-id":
                        rid = v.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, send_and_see)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.metrics.request(route, status, seconds)
            if _access.isEnabledFor(logging.INFO):
                _log_access(scope, route, status, seconds, rid)


def _log_access(scope: Any, route: str, status: int, seconds: float, rid: str) -> None:
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else str(scope.get("path"))
    method = scope.get("method", "-")
    ms = round(seconds * 1000, 3)
    _access.info(
        "%s %s %d %.1f ms (request id %s)",
        method,
        path,
        status,
        ms,
        rid,
        extra={
            "method": method,
            "route": route,
            "path": path,
            "status": status,
            "duration_ms": ms,
            "request_id": rid,
        },
    )


def start_metrics_server(
    metrics: Metrics, port: int, host: str = "127.0.0.1"
) -> Callable[[], None]:
    """Serve `metrics` at http://host:port/metrics from a daemon thread (a process without
    an HTTP app of its own: `custate project --follow --metrics-port`); returns the
    function that stops it. Raises OSError when the address cannot be listened on."""
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
