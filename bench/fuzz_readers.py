"""Fuzz the readers and the record validation: N inputs (random mutations of valid NDJSON
lines, envelopes and arrays, and random bytes), each read with `read_text` and every record
encoded as the store would; anything but a `Record`, a `BadRecord` naming location and
field, or a `custate.Error` is a crash, printed with its input.

    python bench/fuzz_readers.py [N] [SEED]

Prints how many inputs ran, records and rejects seen, and crashes found."""

from __future__ import annotations

import random
import sys
import time
import traceback

import custate
from custate.adapters.eventstore import Encoded
from custate.adapters.readers import BadRecord, Record, read_text

SEEDS = [
    b'{"id": "act_1", "type": "customer.created", "created_at": "2024-01-01T00:00:00Z",'
    b' "data": {"customer": {"id": "cust_1", "metadata": {"n": 1, "big": 18446744073709551616}}}}',
    b'{"id": "wh_1", "project_id": "p", "event": {"id": "ev_1", "type": "customer.rewarded",'
    b' "created_at": "2024-01-01T10:00:00+05:00", "entity_id": "cust_1"},'
    b' "data": {"customer": {"id": "cust_1"}, "loyalty": {"points": 10}}}',
    b'[{"id": "a", "type": "order.paid", "created_at": "2024-02-29T23:59:59.999999Z",'
    b' "data": {"customer": {"id": "c"}, "order": {"id": "o", "amount": 100}}}]',
]
TOKENS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b",",
    b":",
    b"\x00",
    b"\\u0000",
    b"\n",
    b"9" * 40,
    b"-0",
    b"1e999",
    b"NaN",
    b"null",
    b"\xff",
    b"\xed\xa0\x80",
    b"9999-12-31T23:59:59-05:00",
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        pos = rng.randint(0, len(b))
        if op < 0.3 and b:
            del b[pos : pos + rng.randint(1, 8)]
        elif op < 0.6:
            b[pos:pos] = rng.choice(TOKENS)
        elif op < 0.8 and b:
            b[min(pos, len(b) - 1)] = rng.randrange(256)
        else:
            b[pos:pos] = data[rng.randint(0, len(data)) :][: rng.randint(0, 40)]
    return bytes(b)


def one(data: bytes) -> tuple[int, int]:
    records = rejects = 0
    try:
        for item in read_text(data, "<fuzz>"):
            if isinstance(item, Record):
                Encoded.of(item.activity, item.source, item.location)
                records += 1
            else:
                # a whole document is one record: its source names it, its location is ""
                whole = item.location or "\n" in data.strip().decode(errors="replace")
                if not (isinstance(item, BadRecord) and whole and item.field):
                    raise AssertionError(f"a reject naming no location or field: {item!r}")
                rejects += 1
    except custate.Error:
        rejects += 1
    return records, rejects


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 16)
    records = rejects = crashes = 0
    started = time.perf_counter()
    for i in range(n):
        if i % 10 == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
        else:
            data = b"\n".join(mutate(rng, rng.choice(SEEDS)) for _ in range(rng.randint(1, 3)))
        try:
            r, j = one(data)
        except Exception:
            crashes += 1
            print(f"CRASH on {data!r}", file=sys.stderr)
            traceback.print_exc()
            continue
        records += r
        rejects += j
    took = time.perf_counter() - started
    print(f"{n} inputs in {took:.0f} s: {records} records, {rejects} rejects, {crashes} crashes")


if __name__ == "__main__":
    main()
