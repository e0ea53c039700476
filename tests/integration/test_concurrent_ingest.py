"""Two `custate ingest` processes at once, over files that share half their records, into
one store (a fresh one: they also race to create it). Every activity ends up stored once."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from .histories import assert_exactly_once, generate, ingest_command, start, write_ndjson

N = 3_000


@pytest.mark.slow
@pytest.mark.parametrize("batch_sizes", [(100, 250)])
def test_overlapping_ingests_store_each_activity_once(
    store_url: str, tmp_path: Path, batch_sizes: tuple[int, int]
) -> None:
    records = generate(N, 80, seed=21)
    # files of 2,000 records; the 1,000 in the middle are in both, met in another order
    a = records[: 2 * N // 3]
    b = records[N // 3 :]
    random.Random(21).shuffle(b)
    file_a = write_ndjson(tmp_path / "a.ndjson", a)
    file_b = write_ndjson(tmp_path / "b.ndjson", b)

    procs = [
        start(ingest_command([file_a], store_url, batch_sizes[0]), tmp_path),
        start(ingest_command([file_b], store_url, batch_sizes[1]), tmp_path),
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err.decode()
    reports = [orjson.loads(out) for out, _ in outputs]

    for report, size in zip(reports, (len(a), len(b)), strict=True):
        assert report["read"] == size
        assert report["accepted"] + report["duplicates"] == size, report
        assert (report["conflicts"], report["rejected"]) == (0, 0), report
    # each shared record was taken by exactly one of the two
    assert reports[0]["accepted"] + reports[1]["accepted"] == N
    assert reports[0]["duplicates"] + reports[1]["duplicates"] == len(a) + len(b) - N

    assert_exactly_once(store_url, [r["id"] for r in records])
