"""Metrics and logs as an operator sees them: a real `custate serve` (and a real
`custate project --follow --metrics-port`) on loopback, scraped at /metrics and parsed
with prometheus_client's own parser; their JSON log lines read back from stderr. The
counters must equal what the test sent."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

import custate
from custate.adapters.metrics import FreshnessCollector

from .incli import invoke
from .test_serve import CUSTATE, SECRET, delivery, free_port, sign

Json = dict[str, Any]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Proc:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


def _env(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CUSTATE_")}
    environ.update(extra)
    return environ


def _launch(argv: list[str], log: Path, health: str, **env: str) -> Proc:
    """Start `custate ARGV` with stderr into `log`, once `health` answers 200."""
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [str(CUSTATE), *argv], env=_env(**env), stdout=subprocess.DEVNULL, stderr=err
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"custate {argv} exited: {log.read_text()}")
        try:
            if httpx.get(health, timeout=1).status_code == 200:
                return Proc(health.rsplit("/", 1)[0], proc, log)
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"custate {argv} did not come up")


def _stop(p: Proc) -> None:
    p.proc.terminate()
    try:
        p.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.proc.kill()
        p.proc.wait(timeout=10)


def scrape(url: str) -> Samples:
    """Every sample at `url`, by (name, labels), as prometheus_client parses the text."""
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def log_lines(path: Path) -> list[Json]:
    """Each line of a JSON-format log: every one must be a JSON object."""
    lines = path.read_bytes().splitlines()
    out = [orjson.loads(line) for line in lines if line.strip()]
    assert all(isinstance(o, dict) for o in out)
    return out


def wait_until(check: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def json_server(store_url: str, tmp_path: Path) -> Iterator[Proc]:
    port = free_port()
    argv = ["--log-format", "json", "serve", "--port", str(port), "--store", store_url]
    s = _launch(
        argv,
        tmp_path / "serve.log",
        f"http://127.0.0.1:{port}/healthz",
        CUSTATE_WEBHOOK_SECRET=SECRET,
        CUSTATE_LOG_LEVEL="info",  # the level from the environment, the format from the flag
    )
    yield s
    _stop(s)


def test_serve_metrics_count_what_was_sent_and_logs_say_it(json_server: Proc) -> None:
    s = json_server
    sent: list[tuple[str, str, int]] = []  # (request id, route, status) of each request

    def call(method: str, path: str, route: str, **kw: Any) -> httpx.Response:
        rid = uuid.uuid4().hex
        headers = {"x-request-id": rid, **kw.pop("headers", {})}
        r = httpx.request(method, f"{s.url}{path}", headers=headers, timeout=30, **kw)
        sent.append((rid, route, r.status_code))
        return r

    def deliver(body: bytes, signature: str | None = None) -> httpx.Response:
        headers = {"content-type": "application/json"}
        headers["x-voucherify-signature"] = signature or sign(body)
        return call("POST", "/webhooks/voucherify", "/webhooks/voucherify", content=body,
                    headers=headers)  # fmt: skip

    new = [orjson.dumps(delivery(f"act_m{i}", f"cust_m{i % 2}")) for i in range(5)]
    last = 0
    for body in new:
        r = deliver(body)
        assert r.status_code == 200
        last = r.json()["position"]
    for body in new[:2]:  # redeliveries
        assert deliver(body).json()["status"] == "duplicate"
    other = delivery("act_m0", "cust_m0", created_at="2024-03-02T10:00:00.000Z")
    assert deliver(orjson.dumps(other)).status_code == 409  # same id, other content
    assert deliver(b"{not json").status_code == 400
    untyped = delivery("act_bad1", "cust_m0")
    del untyped["type"], untyped["event"]["type"]
    r = deliver(orjson.dumps(untyped))
    assert r.status_code == 422, r.text
    assert deliver(new[0], signature="0" * 64).status_code == 401  # nothing kept
    r = call("GET", f"/customers/count?min_position={last}&wait=20", "/customers/count")
    assert r.status_code == 200, r.text
    for cid in ("cust_m0", "cust_m1", "nobody"):
        call("GET", f"/customers/{cid}/state", "/customers/{customer_id}/state")
    call("GET", "/no/such/route", "unmatched")

    # The projector counts a catch-up once it has committed it: readers may see it first.
    catchup = "custate_catchup_activities_total"
    wait_until(lambda: value(scrape(f"{s.url}/metrics"), catchup) == 5, "5 projected")
    m = scrape(f"{s.url}/metrics")
    ingested = "custate_activities_ingested_total"
    assert value(m, ingested, result="accepted") == 5
    assert value(m, ingested, result="duplicate") == 2
    assert value(m, ingested, result="conflict") == 1
    assert value(m, ingested, result="invalid") == 2  # the malformed body, the untyped one
    webhooks = "custate_webhook_deliveries_total"
    by_status = {dict(labels)["status"]: v for (name, labels), v in m.items() if name == webhooks}
    assert by_status == {"200": 7, "409": 1, "400": 1, "422": 1, "401": 1}
    assert value(m, catchup) == 5
    assert value(m, "custate_store_up") == 1
    assert value(m, "custate_readmodel_lag_activities") == 0
    position = value(m, "custate_readmodel_position")
    assert position == value(m, "custate_store_head") >= last
    # The histogram: one series per route template and status, never the raw path.
    count = "custate_http_request_duration_seconds_count"
    routes = {
        (dict(labels)["route"], dict(labels)["status"]): v
        for (name, labels), v in m.items()
        if name == count
    }
    assert routes[("/customers/{customer_id}/state", "200")] == 2
    assert routes[("/customers/{customer_id}/state", "404")] == 1
    assert routes[("/webhooks/voucherify", "200")] == 7
    assert routes[("unmatched", "404")] == 1
    assert not any("cust_m" in route for route, _ in routes)

    _stop(s)
    lines = log_lines(s.log)
    assert {"ts", "level", "logger", "message"} <= set(lines[0])
    access = [x for x in lines if x["logger"] == "custate.http.access"]
    for rid, route, status in sent:
        mine = [x for x in access if x["request_id"] == rid]
        assert len(mine) == 1, (rid, route, mine)
        assert (mine[0]["route"], mine[0]["status"]) == (route, status)
        assert mine[0]["duration_ms"] >= 0
    rejects = [x for x in lines if x["logger"] == "custate.rejects"]
    untyped_line = [x for x in rejects if x["location"] == "delivery wh_act_bad1"]
    assert len(untyped_line) == 1
    assert untyped_line[0]["field"] == "type"
    assert untyped_line[0]["reason"]
    assert any(x["kind"] == "conflict" and x["activity_id"] == "act_m0" for x in rejects)
    assert any(x["field"] == "body" and "malformed JSON" in x["reason"] for x in rejects)
    caught_up = [x for x in lines if x["logger"] == "custate.projector"]
    assert sum(x["activities"] for x in caught_up) == 5
    assert max(x["position"] for x in caught_up) == position
    assert caught_up[-1]["duration_ms"] > 0


def test_project_follow_serves_catch_up_and_lag_metrics(store_url: str, tmp_path: Path) -> None:
    records = [delivery(f"act_p{i}", f"cust_p{i % 3}") for i in range(12)]
    with custate.open(store_url) as cs:
        assert cs.ingest(records[:7], project=False).accepted == 7
    port = free_port()
    argv = ["--log-format", "json", "--log-level", "info", "project", "--follow"]
    argv += ["--poll", "0.1", "--metrics-port", str(port), "--store", store_url]
    url = f"http://127.0.0.1:{port}/metrics"
    p = _launch(argv, tmp_path / "project.log", url)
    try:
        total = "custate_catchup_activities_total"
        wait_until(lambda: value(scrape(url), total) == 7, "the first 7 projected")
        with custate.open(store_url) as cs:
            assert cs.ingest(records[7:], project=False).accepted == 5
        wait_until(lambda: value(scrape(url), total) == 12, "all 12 projected")
        m = scrape(url)
        assert value(m, "custate_readmodel_lag_activities") == 0
        assert value(m, "custate_store_up") == 1
        assert value(m, "custate_catchup_duration_seconds_count") >= 2
        assert not any(name.startswith("custate_http") for name, _ in m)
    finally:
        _stop(p)
    assert p.proc.returncode == 0, p.log.read_text()
    lines = log_lines(p.log)
    caught_up = [x for x in lines if x["logger"] == "custate.projector"]
    assert sum(x["activities"] for x in caught_up) == 12


def test_metrics_port_without_prometheus_client_names_the_extra(sqlite_url: str) -> None:
    # The console script, with prometheus_client made unimportable in its interpreter.
    script = (
        "import sys; sys.modules['prometheus_client'] = None; "
        "from custate.adapters.cli import main; main()"
    )
    for command in (["project", "--follow", "--metrics-port", "9"], ["serve", "--port", "9"]):
        ran = subprocess.run(
            [sys.executable, "-c", script, *command, "--store", sqlite_url],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ran.returncode == 2, ran.stderr
        assert "prometheus_client" in ran.stderr
        assert "pip install 'custate[server]'" in ran.stderr


def test_bad_log_options_are_usage_errors_naming_them(tmp_path: Path) -> None:
    ran = invoke("--log-format", "xml", "status", cwd=tmp_path)
    assert ran.returncode == 2
    assert b"--log-format" in ran.stderr
    assert b"json" in ran.stderr
    ran = invoke("status", cwd=tmp_path, env={"CUSTATE_LOG_LEVEL": "loud"})
    assert ran.returncode == 2
    assert b"--log-level" in ran.stderr
    assert b"debug" in ran.stderr


def test_a_store_that_hangs_or_fails_never_breaks_a_scrape() -> None:
    from custate.adapters.api import Freshness

    def hangs() -> Freshness:
        time.sleep(3)
        return Freshness(1, 1, 0, 0.0)

    def fails() -> Freshness:
        raise OSError("the database is away")

    for read in (hangs, fails):
        registry = CollectorRegistry()
        registry.register(FreshnessCollector(read, timeout=0.2))
        started = time.monotonic()
        assert registry.get_sample_value("custate_store_up") == 0
        assert registry.get_sample_value("custate_readmodel_lag_activities") is None
        assert time.monotonic() - started < 1.5
