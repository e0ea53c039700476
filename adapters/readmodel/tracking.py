"""The read model's tracking positions: per partition, the id of the last notification
(stored activity) projected for that partition's customers.

Exactly once: a write's rows and its partitions' new positions commit in one transaction,
and each position moves only by compare and set (`UPDATE ... SET notification_id = :new
WHERE notification_id = :previous`, `sql.Statements.advance`): a projector whose plan
started from a position another one has since moved writes nothing, rolls back, and reads
again from the new position. The position the read model as a whole reflects is the lowest
of its partitions': every activity up to it is projected."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection, Engine

from custate.adapters.readmodel.partitions import tracking_name
from custate.adapters.readmodel.sql import Statements
from custate.adapters.readmodel.tables import Tables
from custate.adapters.sqlschema import insert_or_ignore

__all__ = ["TrackingPosition"]


class TrackingPosition:
    """The positions of one generation's `partitions`, in its `tracking` table (a row each)."""

    def __init__(
        self,
        engine: Engine,
        t: Tables,
        sql: Statements,
        partitions: int,
        row: str | None = None,
    ) -> None:
        """`row`: the one row to keep the position in, instead of the store's (one
        partition): a parallel rebuild's process (`parallel`)."""
        self.sql = sql
        self.partitions = partitions
        self._names = [tracking_name(p, partitions) for p in range(partitions)]
        if row is not None:
            if partitions != 1:
                raise ValueError(f"row: {row!r} needs a store of one partition")
            self._names = [row]
        with engine.begin() as c:
            have = sql.positions(c)
            missing = [n for n in self._names if n not in have]
            if missing:
                c.execute(
                    insert_or_ignore(engine, t.tracking),
                    [{"application_name": n, "notification_id": 0} for n in missing],
                )

    def read(self, c: Connection, partition: int | None = None) -> int:
        """The position of `partition` as `c` sees it; None: the lowest of all (0: nothing
        projected yet)."""
        if partition is not None:
            return self.sql.position(c, self._names[partition])
        if self.partitions == 1:
            return self.sql.position(c, self._names[0])
        return min(self.read_all(c).values())

    def of_rows(self, rows: Mapping[str, int], partition: int | None = None) -> int:
        """`read`, from the tracking rows read already (name -> position)."""
        if partition is not None:
            return rows.get(self._names[partition], 0)
        return min(rows.get(name, 0) for name in self._names)

    def read_all(self, c: Connection) -> dict[int, int]:
        """Every partition's position."""
        if self.partitions == 1:
            return {0: self.sql.position(c, self._names[0])}
        rows = self.sql.positions(c)
        return {p: rows.get(name, 0) for p, name in enumerate(self._names)}

    def advance(self, c: Connection, previous: Mapping[int, int], new: int) -> bool:
        """Move each partition of `previous` from its position there to `new`, in the
        transaction of `c`; False if one is not where `previous` says (another projector
        moved it): the caller must then roll back what it wrote."""
        moving = {self._names[p]: at for p, at in previous.items() if at != new}
        return self.sql.advance(c, moving, new)
