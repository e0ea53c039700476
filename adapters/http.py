"""custate over HTTP: receive Voucherify webhooks, serve customer state.

`create_app(store)` builds the FastAPI application around one `Custate` per process:

- `POST /webhooks/voucherify` takes v2024-01-01 deliveries (or any container of
  SEMANTICS §1). With CUSTATE_WEBHOOK_SECRET set, `x-voucherify-signature` must be the hex
  HMAC-SHA256 of the body (docs/DECISIONS.md, Webhooks). It answers 2xx only after the
  activity is committed: requests hand their records to one writer thread, which appends
  whatever is waiting in one transaction (group commit) and then resolves every request of
  that batch. Redeliveries are 2xx and store nothing new; bad input is 4xx with
  `{"error", "field"}` and kept as a reject.
  The answer carries `position`: pass it as `min_position` to a read to see the delivery.
- A projector worker runs in the process (`project=False`: none; `adapters.projector`),
  woken after each write batch and, on PostgreSQL, by other processes' writes.
- Reads (`GET /customers/{id}/state`, `/customers`, `/customers/{id}/history`, ...) take
  no lock and never wait for a catch-up: they answer from the read model as it stands,
  with its position and lag in `X-Custate-*` headers (and `read_model` in the JSON of
  state and count); `?min_position=N&wait=S` waits for position N, 503 after S seconds.
- `GET /healthz` is liveness (no database), `GET /readyz` readiness (store answers, lag
  under a bound), `GET /metrics` Prometheus metrics (`adapters.metrics`); OpenAPI docs at
  /docs (assets served here, `httpdocs`). Each request is logged on `custate.http.access`
  (`adapters.logs`).
- With API tokens configured ($CUSTATE_API_TOKENS), every read (and `/metrics`) needs
  `Authorization: Bearer <token>` (`auth.require_token`); every error is `{"error", "field"}`.

Any number of processes may serve one store (`serve --workers N`, other hosts): each has
its own group commit, and their projector workers share the partitions
(docs/DECISIONS.md, Projector workers)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import queue
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from custate.adapters.api import (
    ChangesPrunedError,
    Custate,
    CustomerQuery,
    Freshness,
    QueryError,
    Reject,
    StaleReadError,
    UnknownCustomerError,
    Worker,
    WorkerEvent,
    store_fault,
)
from custate.adapters.auth import Tokens, require_configured_token, require_token
from custate.adapters.httpdocs import error_response, install_docs, install_error_handlers
from custate.adapters.metrics import CONTENT_TYPE, Metrics, ObserveRequests
from custate.adapters.readers import BadRecord, Record, records_from_value
from custate.adapters.schemas import (
    CardGapOut,
    ChangesPage,
    CountOut,
    CustomerRow,
    DiffOut,
    ErrorOut,
    ExplainOut,
    HealthOut,
    HistoryEntry,
    ReadyOut,
    StateOut,
    WebhookOut,
)
from custate.adapters.serving import (
    DEFAULT_HEADER_TIMEOUT,
    ENV_HEADER_TIMEOUT,
    PROTOCOL,
    HeaderTimeoutProtocol,
)
from custate.adapters.settings import (
    ENV_API_TOKENS_FILE,
    check_exposure,
    load_settings,
)
from custate.domain import ActivityError, parse_cut
from custate.domain.activity import INT_MAX, INT_MIN, MAX_ID_BYTES

DEFAULT_MAX_BODY = 1024 * 1024
ENV_SECRET = "CUSTATE_WEBHOOK_SECRET"
ENV_MAX_BODY = "CUSTATE_MAX_BODY_BYTES"
SIGNATURE_HEADER = "x-voucherify-signature"
WEBHOOK_SOURCE = "webhook:/webhooks/voucherify"
MAX_GROUP = 1000  # records per group commit
DEFAULT_READY_LAG = 10_000  # activities behind from which /readyz says not ready
MAX_WAIT = 30.0  # seconds a read may ask to wait for its min_position
FRESHNESS_EVERY = 0.25  # seconds a read's freshness headers may be old
LAG_COUNT_AT_MOST = 100  # lag counted exactly up to this (then estimated: Custate.freshness)

_log = logging.getLogger("custate.http")


def signature(body: bytes, secret: str) -> str:
    """The hex HMAC-SHA256 of `body` keyed with `secret`, as Voucherify sends it."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# A JSON string, escapes and all (the unrolled form: no alternation per character).
_STRING = re.compile(rb'("[^"\\]*(?:\\.[^"\\]*)*")', re.DOTALL)
_JSON_SPACE = b" \t\n\r"


def strip_whitespace(body: bytes) -> bytes:
    """`body` without the whitespace outside its JSON strings; everything else, the
    strings' escapes (`\\u00eb`) included, byte for byte as it was. Linear: the strings
    are split out by one regex, the rest stripped by `bytes.translate`."""
    parts = _STRING.split(body)
    parts[::2] = [p.translate(None, _JSON_SPACE) for p in parts[::2]]
    return b"".join(parts)


def signature_ok(body: bytes, given: str | None, secret: str) -> bool:
    """The signature of the raw body; failing that, of the body with the whitespace outside
    its strings removed (what Voucherify signs: a pretty-printed delivery's escapes stay as
    they were) or of the body re-serialised compactly (`JSON.stringify` of the parsed
    payload, what some receivers compute; docs/DECISIONS.md). All need the secret;
    comparisons take constant time."""
    if not given:
        return False
    given = given.strip().lower()
    if hmac.compare_digest(signature(body, secret), given):
        return True
    compact = strip_whitespace(body)
    if compact != body and hmac.compare_digest(signature(compact, secret), given):
        return True
    try:
        reserialised = orjson.dumps(orjson.loads(body))
    except orjson.JSONDecodeError:
        return False
    return reserialised not in (body, compact) and hmac.compare_digest(
        signature(reserialised, secret), given
    )


def _error(status: int, error: str, field: str | None = None, **extra: Any) -> JSONResponse:
    return error_response(status, error, field, **extra)


DEFAULT_BODY_TIMEOUT = 10.0  # seconds for a request body to arrive whole (a slow client: 408)
_REQUEST_ID: ContextVar[str] = ContextVar("custate_request_id", default="-")
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestIds:
    """ASGI middleware: every response carries `X-Request-ID` (the client's, if it sent a
    sane one, else a new one); an exception that reached it is logged with that id and
    answered with a generic body, no exception text: 503 `the store is unavailable` for a
    store fault, else 500 `internal error`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _SANE_ID.fullmatch(given) else uuid.uuid4().hex
        token = _REQUEST_ID.set(rid)
        started = False

        async def send_with_id(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [*message.get("headers", []), (b"x-request-id", rid.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as e:
            _log.exception(
                "request %s %s failed (request id %s)", scope.get("method"), scope.get("path"), rid
            )
            if started:
                raise
            fault = store_fault(e) is not None
            status = 503 if fault else 500
            body = orjson.dumps(
                {
                    "error": "the store is unavailable" if fault else "internal error",
                    "request_id": rid,
                }
            )
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send_with_id({"type": "http.response.body", "body": body})
        finally:
            _REQUEST_ID.reset(token)


def _json(value: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(value), status_code=status, media_type="application/json")


# -- writing: one thread, group commit -------------------------------------------------------


@dataclass(slots=True)
class _Job:
    records: list[Record]
    bad: list[Reject]
    future: Future[list[str]] = field(default_factory=Future)


class Service:
    """The store behind the app: one Custate, one writer thread (group commit) and, unless
    told not to, a projector worker (`adapters.projector.Worker`) in a thread of its own.
    Reads take no lock: they answer from the read model as it stands."""

    def __init__(self, cs: Custate, owned: bool, project: bool = True) -> None:
        self.cs = cs
        self.owned = owned
        self.project_here = project
        self._jobs: queue.Queue[_Job] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.worker: Worker | None = None
        self.metrics: Metrics | None = None
        self.batches = 0
        self.head = 0  # the store's position after this process's last write
        self._fresh: dict[int | None, tuple[float, Freshness]] = {}

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        targets = [(self._writer, "custate-writer")]
        if self.project_here:
            # It shares the interpreter with the requests: it pauses after every catch-up.
            self.worker = self.cs.worker(on_event=self._worker_event, settle_from=1)
            targets.append((self._project, "custate-proj"))
        for target, name in targets:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        if self.worker is not None:
            self.worker.wake()
        for t in self._threads:
            t.join(timeout=30)
        self._threads.clear()
        if self.owned:
            self.cs.close()

    def submit(self, records: list[Record], bad: list[Reject]) -> Future[list[str]]:
        """Hand records to the writer; the future gives one outcome per record (`stored`,
        `duplicate`, `conflict`, `refused`) once they are committed."""
        job = _Job(records, bad)
        if self._stop.is_set():
            job.future.set_exception(RuntimeError("the server is shutting down"))
        else:
            self._jobs.put(job)
        return job.future

    def _writer(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            jobs = [job]
            n = len(job.records) + len(job.bad)
            while n < MAX_GROUP:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                jobs.append(more)
                n += len(more.records) + len(more.bad)
            self._write(jobs)

    def _write(self, jobs: list[_Job]) -> None:
        records = [r for j in jobs for r in j.records]
        bad = [b for j in jobs for b in j.bad]
        try:
            outcomes, position = self.cs.store_records(records, bad)
            # What a read of these records waits for (`min_position`): the store's head as
            # the write committed covers them, and a duplicate's first delivery, stored before.
            self.head = max(self.head, position) if records else self.head
        except Exception as e:
            for j in jobs:
                j.future.set_exception(e)
            return
        self.batches += 1
        if self.metrics is not None:
            self.metrics.written(outcomes, len(bad))
        start = 0
        for j in jobs:
            j.future.set_result(outcomes[start : start + len(j.records)])
            start += len(j.records)
        if records and self.worker is not None:
            self.worker.wake()

    def _worker_event(self, e: WorkerEvent) -> None:
        _log_worker_event(e)
        if self.metrics is not None:
            self.metrics.worker_event(e)

    def _project(self) -> None:
        assert self.worker is not None
        self.worker.run(self._stop.is_set)

    def freshness(self, customer_id: str | None = None) -> Freshness:
        """How fresh the read model is, for a read's headers: measured at most every
        `FRESHNESS_EVERY` seconds per partition (a lower bound of what the read reflects:
        the position only grows)."""
        part = None if customer_id is None else self.cs.partition_of(customer_id)
        now = time.monotonic()
        hit = self._fresh.get(part)
        if hit is not None and now - hit[0] < FRESHNESS_EVERY:
            return hit[1]
        fresh = self.cs.freshness(customer_id, count_at_most=LAG_COUNT_AT_MOST)
        self._fresh[part] = (now, fresh)
        return fresh

    def check_ready(self) -> Freshness:
        """The store answers; how fresh the read model is (raises what the store raised)."""
        self.cs.ping()
        return self.cs.freshness(count_at_most=LAG_COUNT_AT_MOST)

    def projector_json(self) -> dict[str, Any]:
        if self.worker is None:
            return {"in_process": False}
        return {"in_process": True, "worker": self.worker.name, "partitions": self.worker.held}


def _log_worker_event(e: WorkerEvent) -> None:
    if e.kind in ("waiting", "error", "leases", "rebuild"):
        _log.warning("projector: %s", e.message)


# What parameters may hold: what the store can (no NUL, which PostgreSQL text cannot hold;
# ids within MAX_ID_BYTES), else 422 instead of a query the database refuses.
_NO_NUL = r"^[^\x00]*$"
CustomerId = Annotated[str, Path(pattern=_NO_NUL, max_length=MAX_ID_BYTES)]
Key = Annotated[str | None, Query(pattern=_NO_NUL, max_length=MAX_ID_BYTES)]
Points = Annotated[int | None, Query(ge=INT_MIN, le=INT_MAX)]


@dataclass(frozen=True)
class _Consistency:
    """Read-your-writes: answer once the read model has reached `min_position` (the
    `position` a webhook's answer or an ingest gave), waiting at most `wait` seconds."""

    min_position: Annotated[int | None, Query(ge=0, le=INT_MAX)] = None
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 5.0


_NO_WAIT = _Consistency()  # a read that does not wait for a position


@dataclass(frozen=True)
class _CustomerFilters(CustomerQuery):
    """The read model's filters as query parameters: within what it stores."""

    segment: Key = None
    tier: Key = None
    campaign: Key = None
    min_points: Points = None
    max_points: Points = None
    status: Key = None
    order_status: Key = None


# -- the app ----------------------------------------------------------------------------------

_ERRORS = {
    400: "a cut or parameter that does not parse (the field named)",
    401: "missing or wrong bearer token (when API tokens are configured)",
    404: "unknown customer",
    410: "records after that position were pruned",
    422: "a parameter out of range (the field named)",
    503: "min_position not reached within wait, or the store unavailable: retry",
}


def _answers(model: Any, *codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a read: `model` on 200, the error shape on `codes`."""
    out: dict[int | str, dict[str, Any]] = {200: {"model": model}}
    for c in codes:
        out[c] = {"model": ErrorOut, "description": _ERRORS[c]}
    return out


_READ = (400, 401, 422, 503)
_CUSTOMER_READ = (400, 401, 404, 422, 503)


def _cut_or_none(value: str | None, name: str) -> Any:
    return None if value is None or value == "" else parse_cut(value, name)


def create_app(
    store: str | Custate | None = None,
    *,
    secret: str | None = None,
    max_body_bytes: int | None = None,
    project: bool = True,
    ready_lag: int = DEFAULT_READY_LAG,
    ready_timeout: float = 1.0,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    api_tokens: Sequence[str] | None = None,
) -> FastAPI:
    """The application. `store` is a store URL (opened here, closed at shutdown), an open
    `Custate` (left open), or None ($CUSTATE_STORE, else ./custate.db). `secret` defaults
    to $CUSTATE_WEBHOOK_SECRET (unset or empty: signatures are not checked). `project`: run
    a projector worker in this process. `/readyz` is 503 from `ready_lag` activities behind,
    or when the store does not answer within `ready_timeout` seconds. A request body that
    has not arrived whole within `body_timeout` seconds is a 408. `api_tokens` (default:
    $CUSTATE_API_TOKENS and $CUSTATE_API_TOKENS_FILE's): the bearer tokens every read
    requires (none: reads are open; `adapters.auth`). Bad CUSTATE_* settings raise
    `SettingsError` naming the variable (`adapters.settings`)."""
    settings = load_settings()
    tokens = Tokens(api_tokens if api_tokens is not None else settings.tokens())
    key = secret if secret is not None else settings.webhook_secret.get_secret_value()
    limit = max_body_bytes if max_body_bytes is not None else settings.max_body_bytes
    cs = store if isinstance(store, Custate) else Custate(store)
    service = Service(cs, owned=not isinstance(store, Custate), project=project)
    metrics = service.metrics = Metrics(service.freshness)

    # The long polls of `/changes` are woken by the feed's NOTIFY on PostgreSQL.
    bell = cs.changes_bell()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.start()
        bell.start()
        try:
            yield
        finally:
            await asyncio.to_thread(bell.stop)
            await asyncio.to_thread(service.stop)

    app = FastAPI(
        title="custate",
        summary="Voucherify customer activities in; customer state, as of any time, out.",
        lifespan=lifespan,
        docs_url=None,  # install_docs: served from local assets, not a CDN
        redoc_url=None,
    )
    app.state.service = service
    app.state.api_tokens = tokens
    app.add_middleware(RequestIds)
    app.add_middleware(ObserveRequests, metrics=metrics)  # outermost: sees every answer
    install_error_handlers(app)
    install_docs(app, "custate")
    reads = [Depends(require_token)]

    async def read_body(request: Request) -> bytes | JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return _error(400, "Content-Length is not a number", "content-length")
            if size > limit:
                return _error(413, f"the body is over the limit of {limit} bytes", "body")
        body = bytearray()
        try:
            async with asyncio.timeout(body_timeout):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > limit:
                        return _error(413, f"the body is over the limit of {limit} bytes", "body")
        except TimeoutError:
            return _error(408, f"the body did not arrive within {body_timeout:g} s", "body")
        return bytes(body)

    async def store_and_wait(records: list[Record], bad: list[Reject]) -> list[str] | Response:
        try:
            return await asyncio.wrap_future(service.submit(records, bad))
        except Exception:
            rid = _REQUEST_ID.get()
            _log.exception("request id %s: the store failed a write", rid)
            return _error(503, "the store is unavailable", None, request_id=rid)

    @app.post(
        "/webhooks/voucherify",
        summary="Receive a Voucherify webhook delivery (v2024-01-01 envelope)",
        responses={
            200: {"model": WebhookOut, "description": "stored (or already stored): durable"},
            400: {"model": ErrorOut, "description": "malformed JSON (kept as a reject)"},
            401: {
                "model": ErrorOut,
                "description": "bad or missing x-voucherify-signature (nothing kept)",
            },
            408: {"model": ErrorOut, "description": "the body did not arrive in time"},
            409: {
                "model": ErrorOut,
                "description": "same activity id, other content (kept as a reject)",
            },
            413: {"model": ErrorOut, "description": "body over the limit"},
            422: {"model": ErrorOut, "description": "not a valid activity (kept as a reject)"},
            503: {"model": ErrorOut, "description": "store unavailable: retry"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
    async def webhook(request: Request) -> Response:
        body = await read_body(request)
        if isinstance(body, Response):
            return body
        if key and not signature_ok(body, request.headers.get(SIGNATURE_HEADER), key):
            return _error(
                401,
                f"bad or missing {SIGNATURE_HEADER} (HMAC-SHA256 of the body)",
                SIGNATURE_HEADER,
            )
        text = body.decode("utf-8", errors="replace")
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            reject = Reject.not_json(WEBHOOK_SOURCE, "body", text, str(e))
            stored = await store_and_wait([], [reject])
            if isinstance(stored, Response):
                return stored
            return _error(400, f"malformed JSON: {e}", "body", kept_as_reject=True)
        delivery = value.get("id") if isinstance(value, dict) else None
        location = f"delivery {delivery}" if isinstance(delivery, str) else "delivery"
        items = list(records_from_value(value, WEBHOOK_SOURCE, location, None, text))
        records = [i for i in items if isinstance(i, Record)]
        bads = [i for i in items if isinstance(i, BadRecord)]
        rejects = [Reject.bad_record(b) for b in bads]
        if not items:
            rejects.append(
                Reject.invalid(WEBHOOK_SOURCE, location, "body", "no activity in it", text)
            )
        outcomes = await store_and_wait(records, rejects)
        if isinstance(outcomes, Response):
            return outcomes
        if rejects:
            first = rejects[0]
            return _error(
                422, f"{first.field}: {first.reason}", first.field, kept_as_reject=True,
                stored=outcomes.count("stored"),
            )  # fmt: skip
        if "refused" in outcomes:
            i = outcomes.index("refused")
            return _error(
                422,
                f"activity {records[i].activity.id}: the store cannot hold it",
                "<record>",
                kept_as_reject=True,
                stored=outcomes.count("stored"),
            )
        if "conflict" in outcomes:
            i = outcomes.index("conflict")
            return _error(
                409,
                f"activity {records[i].activity.id} is stored with different content; "
                "the stored version is kept",
                "id",
                kept_as_reject=True,
            )
        ids = [r.activity.id for r in records]
        return _json(
            {
                "status": "stored" if "stored" in outcomes else "duplicate",
                "activity_ids": ids,
                "stored": outcomes.count("stored"),
                "duplicates": outcomes.count("duplicate"),
                "position": service.head,
            }
        )

    def bad_cut(e: ActivityError) -> JSONResponse:
        return _error(400, f"{e.field}: {e.message}", e.field)

    def not_there(e: QueryError | StaleReadError) -> Response:
        """A position that cannot be waited for (400), or was not reached in time (503)."""
        if isinstance(e, QueryError):
            return _error(400, str(e), "min_position")
        r = _error(503, str(e), "min_position", position=e.position)
        r.headers["Retry-After"] = "1"
        return r

    async def answered(
        read: Callable[[], Any],
        after: _Consistency,
        customer_id: str | None = None,
        embed: bool = False,
    ) -> Response:
        """`answer`, for an async endpoint: the wait for `after.min_position` holds no
        thread (waiting reads held the server's threadpool, and under a stream of writes
        and reads of them the reads queued behind each other), then the read runs in the
        threadpool."""
        if after.min_position is not None:
            try:
                await cs.await_position(after.min_position, customer_id, after.wait)
            except (QueryError, StaleReadError) as e:
                return not_there(e)
        return await run_in_threadpool(answer, read, _NO_WAIT, customer_id, embed)

    def answer(
        read: Callable[[], Any],
        after: _Consistency,
        customer_id: str | None = None,
        embed: bool = False,
    ) -> Response:
        """One read, as JSON, with how fresh it is in headers (and in the JSON as
        `read_model`, with `embed`): answered once the read model has reached
        `after.min_position`, if given (503 after `after.wait` seconds). A cut that does not
        parse is 400 naming it, an unknown customer 404. `read` may answer with a response
        of its own."""
        try:
            if after.min_position is not None:
                cs.wait_for(after.min_position, customer_id, after.wait)
            fresh = service.freshness(customer_id)
            value = read()
        except ActivityError as e:
            return bad_cut(e)
        except (QueryError, StaleReadError) as e:
            return not_there(e)
        except UnknownCustomerError as e:
            return _error(404, str(e), "customer_id")
        if isinstance(value, Response):
            return value
        if embed and isinstance(value, dict):
            value = {**value, "read_model": fresh.to_json()}
        out = _json(value)
        out.headers.update(fresh.headers())
        return out

    @app.get(
        "/customers/{customer_id}/state",
        summary="A customer's state, as of any time",
        dependencies=reads,
        responses=_answers(StateOut, *_CUSTOMER_READ),
    )
    async def get_state(
        customer_id: CustomerId,
        after: Annotated[_Consistency, Depends()],
        as_of: Annotated[str | None, Query(description="business time T")] = None,
        known_at: Annotated[str | None, Query(description="record time K")] = None,
    ) -> Response:
        return await answered(
            lambda: cs.state(
                customer_id,
                as_of=_cut_or_none(as_of, "as_of"),
                known_at=_cut_or_none(known_at, "known_at"),
            ).to_json(),
            after,
            customer_id,
            embed=True,
        )

    @app.delete(
        "/customers/{customer_id}/personal-data",
        summary="Erase a customer's personal data (GDPR Art. 17); needs a bearer token",
        dependencies=[Depends(require_configured_token)],
        responses={401: {"model": ErrorOut, "description": "no or a wrong bearer token"}},
    )
    def delete_personal_data(
        customer_id: CustomerId,
        by: Annotated[str | None, Query(description="who asked for it, kept")] = None,
    ) -> Response:
        return _json(cs.erase(customer_id, by).to_json())

    @app.get(
        "/customers",
        summary="Customers matching every filter given (read model)",
        dependencies=reads,
        responses=_answers(list[CustomerRow], *_READ),
    )
    async def get_customers(
        filters: Annotated[_CustomerFilters, Depends()],
        consistency: Annotated[_Consistency, Depends()],
        limit: Annotated[int | None, Query(ge=1, le=100_000)] = 1000,
        after: Annotated[
            str | None,
            Query(
                description="The last customer id of the previous page.",
                pattern=_NO_NUL,
                max_length=MAX_ID_BYTES,
            ),
        ] = None,
    ) -> Response:
        return await answered(
            lambda: [
                r.to_json() for r in cs.customers(**asdict(filters), limit=limit, after=after)
            ],
            consistency,
        )

    @app.get(
        "/customers/count",
        summary="How many customers match every filter given",
        dependencies=reads,
        responses=_answers(CountOut, *_READ),
    )
    async def get_customers_count(
        filters: Annotated[_CustomerFilters, Depends()],
        after: Annotated[_Consistency, Depends()],
    ) -> Response:
        return await answered(
            lambda: {"count": cs.count_customers(**asdict(filters))}, after, embed=True
        )

    @app.get(
        "/customers/{customer_id}/history",
        summary="Each activity and what it changed",
        dependencies=reads,
        responses=_answers(list[HistoryEntry], *_CUSTOMER_READ),
    )
    def get_history(
        customer_id: CustomerId,
        consistency: Annotated[_Consistency, Depends()],
        start: Annotated[str | None, Query(alias="from")] = None,
        end: Annotated[str | None, Query(alias="to")] = None,
        known_at: str | None = None,
    ) -> Response:
        def read() -> Any:
            a = _cut_or_none(start, "from")
            b = _cut_or_none(end, "to")
            k = _cut_or_none(known_at, "known_at")
            return [e.to_json() for e in cs.history(customer_id, a, b, k)]

        return answer(read, consistency, customer_id)

    @app.get(
        "/customers/{customer_id}/diff",
        summary="What changed between two cuts, and which activities did it",
        description="`as_of` twice (and `known_at` at most once): what changed in business "
        "time. `as_of` at most once and `known_at` twice: what the activities recorded in "
        "between changed about that time (None: about now), the corrections an auditor sees.",
        dependencies=reads,
        responses=_answers(DiffOut, *_CUSTOMER_READ),
    )
    def get_diff(
        customer_id: CustomerId,
        consistency: Annotated[_Consistency, Depends()],
        as_of: Annotated[list[str] | None, Query()] = None,
        known_at: Annotated[list[str] | None, Query()] = None,
    ) -> Response:
        def read() -> Any:
            ts = [_cut_or_none(v, "as_of") for v in as_of or []]
            ks = [_cut_or_none(v, "known_at") for v in known_at or []]
            if len(ts) == 2 and len(ks) <= 1:
                d = cs.diff_as_of(customer_id, ts[0], ts[1], ks[0] if ks else None)
            elif len(ts) <= 1 and len(ks) == 2:
                d = cs.diff_known_at(customer_id, ts[0] if ts else None, ks[0], ks[1])
            else:
                field = "as_of" if len(ts) != 2 and len(ks) < 2 else "known_at"
                message = "give as_of twice (business time), or known_at twice (corrections)"
                return _error(400, message, field)
            return d.to_json()

        return answer(read, consistency, customer_id)

    @app.get(
        "/customers/{customer_id}/explain",
        summary="Which activity set a field's value, and the earlier values",
        dependencies=reads,
        responses=_answers(ExplainOut, *_CUSTOMER_READ),
    )
    def get_explain(
        customer_id: CustomerId,
        path: Annotated[str, Query(description="e.g. loyalty.cards.v_1.balance")],
        consistency: Annotated[_Consistency, Depends()],
        as_of: str | None = None,
        known_at: str | None = None,
    ) -> Response:
        return answer(
            lambda: cs.explain(
                customer_id, path, _cut_or_none(as_of, "as_of"), _cut_or_none(known_at, "known_at")
            ).to_json(),
            consistency,
            customer_id,
        )

    @app.get(
        "/gaps",
        summary="Balance breaks per card: activities missing upstream",
        dependencies=reads,
        responses=_answers(list[CardGapOut], *_READ),
    )
    def get_gaps(
        consistency: Annotated[_Consistency, Depends()], customer_id: Key = None
    ) -> Response:
        return answer(lambda: [g.to_json() for g in cs.gaps(customer_id)], consistency)

    @app.get(
        "/changes",
        summary="Change records of derived state after a position (long poll with wait)",
        dependencies=reads,
        responses={
            **_answers(ChangesPage, 401, 410, 422, 503),
            400: {
                "model": ErrorOut,
                "description": "a negative or future position, a malformed glob, the feed off",
            },
        },
    )
    async def get_changes(
        after: Annotated[int, Query(description="records after this position")] = 0,
        customer: Key = None,
        path: Annotated[
            list[str] | None, Query(description="path globs (repeatable), e.g. segments.*")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 1000,
        wait: Annotated[
            float, Query(ge=0, le=60, description="seconds to wait for a record")
        ] = 0.0,
    ) -> Response:
        """`{records, next}`: ask after `next` for the following page. With `wait`, an
        empty page is answered only after that many seconds without a record; the wait
        never blocks the event loop (each look runs in a worker thread)."""
        deadline = asyncio.get_running_loop().time() + wait
        position = after
        pause = 0.01  # between looks without NOTIFY (SQLite), doubling up to 0.1 s
        while True:
            try:
                page = await asyncio.to_thread(cs.changes, position, customer, path, limit)
            except ChangesPrunedError as e:
                return _error(410, str(e), "after", pruned_upto=e.pruned_upto)
            except QueryError as e:
                field = "path" if "glob" in str(e) else "limit" if "limit" in str(e) else "after"
                return _error(400, str(e), field)
            now = asyncio.get_running_loop().time()
            if page.records or now >= deadline:
                return _json(page.to_json())
            position = page.next
            await bell.wait(min(pause, deadline - now))
            pause = min(pause * 2, 1.0 if bell.live else 0.1)

    @app.get(
        "/metrics",
        summary="Prometheus metrics of this process (text format)",
        dependencies=reads,
    )
    def get_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get(
        "/healthz",
        summary="Liveness: the process answers (no database involved)",
        responses={200: {"model": HealthOut}},
    )
    def healthz() -> Response:
        return _json({"status": "ok", "write_batches": service.batches})

    @app.get(
        "/readyz",
        summary="Readiness: the store answers and the read model's lag is under the bound",
        responses={
            200: {"model": ReadyOut},
            503: {"model": ReadyOut, "description": "store unreachable, or the lag over the bound"},
        },
    )
    async def readyz() -> Response:
        try:
            fresh = await asyncio.wait_for(
                asyncio.to_thread(service.check_ready), timeout=ready_timeout
            )
        except TimeoutError:
            return _json({"status": "unavailable", "store": "no answer in time"}, 503)
        except Exception as e:
            _log.warning("readyz: the store is unreachable: %s: %s", type(e).__name__, e)
            return _json({"status": "unavailable", "store": "unreachable"}, 503)
        ready = fresh.lag_activities < ready_lag
        body = {
            "status": "ok" if ready else "lagging",
            "store": "reachable",
            "read_model": fresh.to_json(),
            "max_lag": ready_lag,
            "projector": service.projector_json(),
            "write_batches": service.batches,
        }
        out = _json(body, 200 if ready else 503)
        out.headers.update(fresh.headers())
        return out

    return app


ENV_PROJECT = "CUSTATE_SERVE_PROJECT"


def app_from_env() -> FastAPI:
    """The application of one of `serve --workers N`'s processes: the store from
    $CUSTATE_STORE, a projector in-process unless $CUSTATE_SERVE_PROJECT is `0`."""
    return create_app(None, project=load_settings().serve_project)


def serve(
    store: str | None,
    host: str = "127.0.0.1",
    port: int = 8080,
    log: Callable[[str], None] | None = None,
    *,
    workers: int = 1,
    project: bool = True,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    log_config: dict[str, Any] | None = None,
    api_tokens_file: str | None = None,
    insecure: bool = False,
) -> None:
    """Run the app under uvicorn until interrupted: `workers` processes (each its own group
    commit and, with `project`, its own projector worker). A connection whose request
    headers have not arrived within `header_timeout` seconds is closed (`serving`).
    `log_config`: a `logging.config.dictConfig` dict uvicorn applies in each process
    (`logs.uvicorn_config`); None leaves uvicorn's own. The CUSTATE_* settings are checked
    first; beyond loopback, API tokens and a webhook secret are required unless `insecure`
    (`settings.check_exposure`): SettingsError."""
    import uvicorn

    from custate.adapters.api import store_url
    from custate.adapters.report import mask_password

    logging_kw: dict[str, Any] = {} if log_config is None else {"log_config": log_config}
    settings = load_settings(api_tokens_file=api_tokens_file)
    say = log if log is not None else _log.warning
    for warning in check_exposure(host, settings, insecure):
        say(warning)
    HeaderTimeoutProtocol.header_timeout = header_timeout
    os.environ[ENV_HEADER_TIMEOUT] = str(header_timeout)  # for --workers processes
    if log is not None:
        where = mask_password(store_url(store))
        auth = f"{len(settings.tokens())} API token(s)" if settings.tokens() else "no API tokens"
        log(f"custate serve: http://{host}:{port} (docs at /docs), store {where}, {auth}")
    if workers == 1:
        uvicorn.run(
            create_app(store, project=project, api_tokens=settings.tokens()),
            host=host,
            port=port,
            http=PROTOCOL,
            access_log=False,
            log_level="warning",
            **logging_kw,
        )
        return
    # uvicorn starts each worker from an import string: the settings go by environment.
    if store is not None:
        os.environ["CUSTATE_STORE"] = store
    if api_tokens_file is not None:
        os.environ[ENV_API_TOKENS_FILE] = api_tokens_file
    os.environ[ENV_PROJECT] = "1" if project else "0"
    uvicorn.run(
        "custate.adapters.http:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        http=PROTOCOL,
        access_log=False,
        log_level="warning",
        **logging_kw,
    )
