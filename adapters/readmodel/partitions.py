"""Partitions: the fixed split of customers that projector workers divide between them.

A customer's partition is a hash of its id modulo the store's partition count, which is
set when the store is created and never changes (changing it would move customers between
partitions, whose tracking positions would then be wrong). Each partition has its own
tracking position (`tracking.TrackingPosition`), so a worker that holds some partitions
projects exactly those customers' activities, once each, whoever held them before."""

from __future__ import annotations

import zlib

from custate.adapters.eventstore import APP_NAME

__all__ = [
    "DEFAULT_PARTITIONS_POSTGRESQL",
    "DEFAULT_PARTITIONS_SQLITE",
    "MAX_PARTITIONS",
    "partition_of",
    "partition_of_stream",
    "tracking_name",
]

# PostgreSQL stores are made for several workers: 16 partitions share evenly between 1, 2,
# 4, 8 or 16 of them (docs/DECISIONS.md, Projector workers). On SQLite one projector runs
# at a time, so one partition.
DEFAULT_PARTITIONS_POSTGRESQL = 16
DEFAULT_PARTITIONS_SQLITE = 1
MAX_PARTITIONS = 1024

_STREAM_PREFIX = "customer:"


def partition_of(customer_id: str, partitions: int) -> int:
    """The partition of `customer_id` among `partitions` (CRC-32 of its UTF-8 bytes: stable
    across processes, machines and Python versions, unlike `hash`)."""
    if partitions == 1:
        return 0
    return zlib.crc32(customer_id.encode("utf-8", "surrogatepass")) % partitions


def partition_of_stream(originator_id: str, partitions: int) -> int:
    """The partition of a customer's stream id (`customer:<id>`), from a notification,
    without decoding the event."""
    return partition_of(originator_id.removeprefix(_STREAM_PREFIX), partitions)


def tracking_name(partition: int, partitions: int) -> str:
    """The tracking row of `partition`: the store's one row when it has one partition (as
    stores made before partitions have), else one per partition."""
    return APP_NAME if partitions == 1 else f"{APP_NAME}:{partition}"
