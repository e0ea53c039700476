"""Helpers for the integration suites: generated activity histories, activity records,
the console script in a subprocess, and a look at what a store holds."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from custate.adapters.eventstore import ACTIVITY_TOPIC, MARKER_TOPIC, EventStore

Json = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "tests" / "data" / "samples"
BENCH_GENERATOR = ROOT / "bench" / "generate.py"
CUSTATE = Path(sys.executable).parent / "custate"
T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def sample(activity_type: str) -> Json:
    """The bundled example payload (`data`) of a type."""
    data: Json = orjson.loads((SAMPLES / f"{activity_type}.json").read_bytes())
    return data


def record(
    activity_id: str,
    customer_id: str,
    seconds: float = 0,
    activity_type: str = "customer.updated",
    name: str | None = None,
) -> Json:
    """A small valid activity record whose payload names its customer."""
    customer: Json = {"id": customer_id, "object": "customer"}
    if name is not None:
        customer["name"] = name
    return {
        "id": activity_id,
        "type": activity_type,
        "created_at": iso(T0 + timedelta(seconds=seconds)),
        "group_id": f"v-{activity_id}",
        "data": {"customer": customer},
    }


# -- generated histories --------------------------------------------------------------------


def _bench_generate() -> Any | None:
    """`bench/generate.py`'s `generate`, when that module exists and offers it."""
    if not BENCH_GENERATOR.is_file():
        return None
    spec = importlib.util.spec_from_file_location("custate_bench_generate", BENCH_GENERATOR)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and friends look their module up
    try:
        spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(spec.name, None)
        return None
    return getattr(module, "generate", None)


def _fallback(n_activities: int, n_customers: int, seed: int) -> Iterable[Json]:
    """Without the bench generator: the bundled samples, re-addressed, one customer each."""
    samples = [
        (p.name.removesuffix(".json"), orjson.loads(p.read_bytes()))
        for p in sorted(SAMPLES.glob("*.json"))
    ]
    for i in range(n_activities):
        activity_type, data = samples[i % len(samples)]
        yield {
            "id": f"evcus_s{seed}_{i:08d}",
            "type": activity_type,
            "created_at": iso(T0 + timedelta(seconds=i)),
            "group_id": f"v-s{seed}-{i}",
            "customer_id": f"cust_s{seed}_{i % n_customers:05d}",
            "data": data,
        }


def generate(n_activities: int, n_customers: int, seed: int = 0) -> list[Json]:
    """`n_activities` distinct, valid activity records of up to `n_customers` customers."""
    bench = _bench_generate()
    records = list(
        bench(n_activities, n_customers, seed)
        if bench is not None
        else _fallback(n_activities, n_customers, seed)
    )
    assert len({r["id"] for r in records}) == n_activities == len(records)
    return records


def write_ndjson(path: Path, records: Iterable[Json]) -> Path:
    with path.open("wb") as f:
        for r in records:
            f.write(orjson.dumps(r) + b"\n")
    return path


# -- the console script ------------------------------------------------------------------------


def cli_env(store: str | None = None, **extra: str) -> dict[str, str]:
    """The environment for a `custate` subprocess: no inherited CUSTATE_STORE."""
    env = {k: v for k, v in os.environ.items() if k != "CUSTATE_STORE"}
    if store is not None:
        env["CUSTATE_STORE"] = store
    env.update(extra)
    return env


def ingest_command(files: Sequence[Path], store: str, batch_size: int) -> list[str]:
    return [
        str(CUSTATE),
        "ingest",
        *map(str, files),
        "--store",
        store,
        "--batch-size",
        str(batch_size),
        "--json",
    ]


def start(args: Sequence[str], cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(args), cwd=cwd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


# -- what a store holds ------------------------------------------------------------------------


@dataclass(frozen=True)
class Contents:
    events: int  # activity events (EventStore.count())
    markers: int  # idempotency markers, one per stored activity id
    ids: Counter[str]  # activity id -> times it is found on the customer streams
    streams_contiguous: bool  # every customer stream is versions 1..n


def contents(url: str) -> Contents:
    with EventStore(url) as store:
        ids: Counter[str] = Counter()
        contiguous = True
        for customer in store.customers():
            stored = store.customer_activities(customer)
            contiguous &= [s.version for s in stored] == list(range(1, len(stored) + 1))
            for s in stored:
                assert s.activity.customer_id == customer
                ids[s.activity.id] += 1
        with store.engine.connect() as c:
            markers = c.execute(
                sa.text(f"SELECT COUNT(*) FROM {store.url.events_table} WHERE topic = :t"),
                {"t": MARKER_TOPIC},
            ).scalar_one()
        assert ACTIVITY_TOPIC != MARKER_TOPIC
        return Contents(store.count(), int(markers), ids, contiguous)


def assert_exactly_once(url: str, expected_ids: Iterable[str]) -> None:
    """Every expected activity is stored once, on its customer's stream; nothing else is."""
    expected = set(expected_ids)
    got = contents(url)
    doubled = sorted(i for i, n in got.ids.items() if n > 1)
    missing = sorted(expected - set(got.ids))
    extra = sorted(set(got.ids) - expected)
    assert not doubled, f"{len(doubled)} activities stored more than once, e.g. {doubled[:3]}"
    assert not missing, f"{len(missing)} activities lost, e.g. {missing[:3]}"
    assert not extra, f"{len(extra)} unexpected activities stored, e.g. {extra[:3]}"
    assert got.events == len(expected), (got.events, len(expected))
    assert got.markers == len(expected), (got.markers, len(expected))
    assert got.streams_contiguous, "a customer stream has a gap or a repeated version"
