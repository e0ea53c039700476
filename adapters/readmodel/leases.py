"""Leases on partitions, in PostgreSQL: which projector worker may write which partition.

A lease is a row of `custate_leases` (partition, owner, epoch, expires_at): a worker holds
a partition while the row names it and has not expired. Workers renew their leases every
heartbeat; one that dies or hangs stops renewing, and once its leases have expired another
worker takes them (the epoch goes up). Every write of a worker checks, in its own
transaction and before anything else, that the row still names it under the epoch it
acquired and has not expired, and locks the row (`FOR SHARE`) until it commits: a worker
whose lease was taken cannot commit, and a lease cannot be taken while a write under it is
committing (docs/DECISIONS.md, Projector workers). Beside the leases, `custate_workers`
lists the live workers (a heartbeat each), from which each worker works out its fair share.

Times are the database's (`now()`), so the workers' clocks never have to agree."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

from sqlalchemy import Connection, Engine, text

from custate.adapters.sqlschema import reading, retry_creation
from custate.domain.errors import Error

__all__ = ["LEASES_TABLE", "WORKERS_TABLE", "LeaseLost", "Leases"]

LEASES_TABLE = "custate_leases"
WORKERS_TABLE = "custate_workers"


class LeaseLost(Error):
    """A worker's lease on a partition was taken (or expired) before it could write."""


class Leases:
    """The leases of a store's `partitions`, each lasting `ttl` seconds from its last
    renewal."""

    def __init__(
        self, engine: Engine, partitions: int, ttl: float, channel: str | None = None
    ) -> None:
        """`channel`: told (NOTIFY, at the commit) when a worker joins, gives up partitions
        or leaves, so that the others rebalance at once."""
        self.engine = engine
        self.partitions = partitions
        self.ttl = ttl
        self.channel = channel

        def create() -> None:
            with engine.begin() as c:
                c.execute(
                    text(
                        f"CREATE TABLE IF NOT EXISTS {LEASES_TABLE} ("
                        "partition INTEGER PRIMARY KEY, owner TEXT, "
                        "epoch BIGINT NOT NULL DEFAULT 0, "
                        "expires_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                    )
                )
                c.execute(
                    text(
                        f"CREATE TABLE IF NOT EXISTS {WORKERS_TABLE} ("
                        "worker TEXT PRIMARY KEY, seen_at TIMESTAMPTZ NOT NULL, "
                        "started_at TIMESTAMPTZ NOT NULL)"
                    )
                )
                c.execute(
                    text(
                        f"INSERT INTO {LEASES_TABLE} (partition) "
                        "SELECT generate_series(0, :n - 1) ON CONFLICT DO NOTHING"
                    ),
                    {"n": partitions},
                )

        retry_creation(create, (Exception,))

    # -- a worker's heartbeat ------------------------------------------------------------

    def heartbeat(self, worker: str, held: Mapping[int, int]) -> dict[int, int]:
        """Say `worker` is alive and renew what it holds of `held` (partition -> epoch);
        returns what it still holds (a lease taken by another is gone from it)."""
        with self.engine.begin() as c:
            joined = c.execute(
                text(
                    f"INSERT INTO {WORKERS_TABLE} (worker, seen_at, started_at) "
                    "VALUES (:w, now(), now()) "
                    "ON CONFLICT (worker) DO UPDATE SET seen_at = now() "
                    "RETURNING xmax = 0"  # a row inserted, not updated: a new worker
                ),
                {"w": worker},
            ).scalar_one()
            if joined:
                self._tell(c)
            if not held:
                return {}
            rows = c.execute(
                text(
                    f"UPDATE {LEASES_TABLE} SET expires_at = now() + make_interval(secs => :ttl) "
                    "WHERE owner = :w AND partition = ANY(:ps) RETURNING partition, epoch"
                ),
                {"w": worker, "ps": list(held), "ttl": self.ttl},
            ).all()
        return {int(p): int(e) for p, e in rows if held.get(int(p)) == int(e)}

    def fair_share(self) -> int:
        """Partitions per live worker, rounded up."""
        with reading(self.engine) as c:
            live = c.execute(
                text(
                    f"SELECT count(*) FROM {WORKERS_TABLE} "
                    "WHERE seen_at > now() - make_interval(secs => :ttl)"
                ),
                {"ttl": self.ttl},
            ).scalar_one()
        return math.ceil(self.partitions / max(1, int(live)))

    def acquire(self, worker: str, n: int) -> dict[int, int]:
        """Take up to `n` partitions that nobody holds (free, or expired); returns them with
        their new epochs."""
        if n <= 0:
            return {}
        with self.engine.begin() as c:
            rows = c.execute(
                text(
                    f"UPDATE {LEASES_TABLE} SET owner = :w, epoch = epoch + 1, "
                    "expires_at = now() + make_interval(secs => :ttl) "
                    f"WHERE partition IN (SELECT partition FROM {LEASES_TABLE} "
                    "WHERE owner IS NULL OR expires_at < now() "
                    "ORDER BY partition LIMIT :n FOR UPDATE SKIP LOCKED) "
                    "RETURNING partition, epoch"
                ),
                {"w": worker, "n": n, "ttl": self.ttl},
            ).all()
        return {int(p): int(e) for p, e in rows}

    def release(self, worker: str, partitions: Collection[int]) -> None:
        """Give up `partitions` (those `worker` still holds), for another to take at once."""
        if not partitions:
            return
        with self.engine.begin() as c:
            self._release(c, worker, partitions)
            self._tell(c)

    def _release(self, c: Connection, worker: str, partitions: Collection[int]) -> None:
        c.execute(
            text(
                f"UPDATE {LEASES_TABLE} SET owner = NULL, expires_at = now() "
                "WHERE owner = :w AND partition = ANY(:ps)"
            ),
            {"w": worker, "ps": list(partitions)},
        )

    def leave(self, worker: str, partitions: Collection[int]) -> None:
        """`worker` stops: release its partitions and drop it from the live workers."""
        with self.engine.begin() as c:
            if partitions:
                self._release(c, worker, partitions)
            c.execute(text(f"DELETE FROM {WORKERS_TABLE} WHERE worker = :w"), {"w": worker})
            self._tell(c)

    def _tell(self, c: Connection) -> None:
        if self.channel is not None:
            c.execute(text("SELECT pg_notify(:ch, '')"), {"ch": self.channel})

    # -- inside a write --------------------------------------------------------------------

    def check(self, c: Connection, worker: str, held: Mapping[int, int]) -> None:
        """In the write transaction of `c`: raise `LeaseLost` unless `worker` still holds
        every partition of `held` under its epoch there, unexpired; lock those rows until
        the transaction ends, so none can be taken while the write commits."""
        rows = c.execute(
            text(
                f"SELECT partition, epoch FROM {LEASES_TABLE} "
                "WHERE owner = :w AND partition = ANY(:ps) AND expires_at > now() "
                "FOR SHARE"
            ),
            {"w": worker, "ps": list(held)},
        ).all()
        have = {int(p): int(e) for p, e in rows}
        lost = sorted(p for p, e in held.items() if have.get(p) != e)
        if lost:
            raise LeaseLost(f"worker {worker} no longer holds partition(s) {lost}")

    # -- what `custate status` shows -------------------------------------------------------

    def table(self) -> list[tuple[int, str | None, int, bool]]:
        """Each partition: (partition, owner, epoch, held now)."""
        with reading(self.engine) as c:
            rows = c.execute(
                text(
                    f"SELECT partition, owner, epoch, owner IS NOT NULL AND expires_at > now() "
                    f"FROM {LEASES_TABLE} ORDER BY partition"
                )
            ).all()
        return [(int(p), o, int(e), bool(h)) for p, o, e, h in rows]
