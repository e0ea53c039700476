"""`custate forward` against a receiver on loopback (a real HTTP server in a thread) that
fails, times out and recovers: every record delivered, signed, in order, at least once; the
cursor resumes; a refused batch becomes a dead letter that can be listed and replayed; an
unreachable URL stops with a clear error and skips nothing."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

import custate

from .histories import ROOT, generate

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.e2e.incli import invoke

SECRET = "whsec_forward"


class Receiver:
    """Answers each POST with the next scripted behaviour ("ok" once the script is done):
    an HTTP status, or "slow" (answers 200 after 1 s: past the client's timeout)."""

    def __init__(self, script: list[str | int]) -> None:
        self.script = list(script)
        self.bodies: list[bytes] = []  # bodies answered 2xx
        self.signatures_ok: list[bool] = []
        self.calls = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.calls += 1
                step = receiver.script.pop(0) if receiver.script else 200
                if step == "slow":
                    time.sleep(1.0)
                    step = 200
                if step == 200:
                    receiver.bodies.append(body)
                    want = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                    receiver.signatures_ok.append(self.headers["x-custate-signature"] == want)
                self.send_response(int(step))
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

            def handle(self) -> None:
                with contextlib.suppress(BrokenPipeError):  # the client timed out
                    super().handle()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def positions(self) -> list[int]:
        return [r["position"] for b in self.bodies for r in orjson.loads(b)["records"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory() -> Iterator[Any]:
    made: list[Receiver] = []

    def make(script: list[str | int]) -> Receiver:
        r = Receiver(script)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def test_forward_retries_failures_and_timeouts_then_resumes_from_its_cursor(
    store_url: str, receiver_factory: Any
) -> None:
    rx = receiver_factory([500, "slow", 503, 200])
    with custate.open(store_url, change_feed=True) as cs:
        cs.ingest(generate(150, 5, seed=4))
        every = [r.position for r in cs.changes(limit=100_000).records]
        fw = cs.forwarder(rx.url, secret=SECRET, batch=100, timeout=0.3, backoff=0.01)
        report = fw.run()
        assert report.retries == 3
        assert report.cursor == every[-1]
        # All of them, in order; a batch whose answer timed out may have been processed by
        # the receiver too and is sent again (at least once): the positions tell repeats.
        got = rx.positions()
        assert list(dict.fromkeys(got)) == every
        assert all(rx.signatures_ok)
        # Resumed from its stored cursor: nothing again, then only what is new.
        again = cs.forwarder(rx.url, secret=SECRET, batch=100).run()
        assert (again.records, again.batches) == (0, 0)
        cs.ingest(generate(20, 2, seed=99))
        more = cs.forwarder(rx.url, secret=SECRET, batch=100).run()
        assert more.records > 0
        got = rx.positions()
        assert list(dict.fromkeys(got)) == [r.position for r in cs.changes(limit=100_000).records]


def test_a_refused_batch_is_a_dead_letter_listed_and_replayed(
    store_url: str, receiver_factory: Any, tmp_path: Path
) -> None:
    rx = receiver_factory([422])
    with custate.open(store_url, change_feed=True) as cs:
        cs.ingest(generate(60, 3, seed=5))
        every = [r.position for r in cs.changes(limit=100_000).records]
    ran = invoke(
        "forward", "--url", rx.url, "--store", store_url, "--secret", SECRET,
        "--batch", "10", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr.decode()
    report = orjson.loads(ran.stdout)
    assert report["dead"] == 1
    assert report["cursor"] == every[-1]
    assert rx.positions() == every[10:]
    listed = invoke("forward", "--url", rx.url, "--store", store_url, "--dead-letters", "--json")
    (letter,) = [orjson.loads(x) for x in listed.stdout.splitlines()]
    assert (letter["first_position"], letter["last_position"], letter["status"]) == (
        every[0],
        every[9],
        422,
    )
    replayed = invoke(
        "forward", "--url", rx.url, "--store", store_url, "--secret", SECRET, "--replay"
    )
    assert replayed.returncode == 0, replayed.stderr.decode()
    assert sorted(rx.positions()) == every  # nothing skipped in the end
    assert all(rx.signatures_ok)
    left = invoke("forward", "--url", rx.url, "--store", store_url, "--dead", "--json")
    assert left.stdout == b""


def test_an_unreachable_url_stops_with_a_clear_error_and_keeps_the_cursor(
    store_url: str, tmp_path: Path
) -> None:
    with custate.open(store_url, change_feed=True) as cs:
        cs.ingest(generate(30, 2, seed=6))
    url = "http://127.0.0.1:9/nothing-listens"
    ran = invoke(
        "forward", "--url", url, "--store", store_url, "--attempts", "2", "--timeout", "0.5",
        cwd=tmp_path,
    )  # fmt: skip
    assert ran.returncode == 1
    err = ran.stderr.decode()
    assert "unreachable" in err
    assert "after 2 attempts" in err
    with custate.open(store_url, change_feed=True) as cs:
        fw = cs.forwarder(url)
        assert fw.store.cursor(fw.name) is None  # nothing was marked as sent
