"""Which generation of the read model's tables is active, and which one a rebuild builds."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Engine, MetaData, delete, insert, select, update

from custate.adapters.readmodel.tables import meta_table
from custate.adapters.sqlschema import create_all, insert_or_ignore

__all__ = ["Generations"]


class Generations:
    """The `custate_readmodel` settings table, created if missing."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._meta = meta_table(MetaData())
        create_all(engine, self._meta.metadata)

    def _get(self, c: Connection, name: str) -> str | None:
        row = c.execute(select(self._meta.c.value).where(self._meta.c.name == name)).first()
        return None if row is None else str(row[0])

    def partitions(self, default: int) -> int:
        """The store's partition count (`partitions`), set on first use: `default` for a
        new store, 1 for one made before partitions (it has an active generation already)."""
        with self.engine.begin() as c:
            value = self._get(c, "partitions")
            if value is not None:
                return int(value)
            n = default if self._get(c, "active") is None else 1
            c.execute(
                insert_or_ignore(self.engine, self._meta).values(name="partitions", value=str(n))
            )
            return int(self._get(c, "partitions") or n)

    def feed_on(self) -> bool:
        """Whether the store keeps a change feed (off until `enable_feed`)."""
        with self.engine.connect() as c:
            return self._get(c, "change_feed") == "on"

    def enable_feed(self) -> None:
        """Keep a change feed from now on, for every projector of the store."""
        with self.engine.begin() as c:
            if self._get(c, "change_feed") is None:
                c.execute(
                    insert_or_ignore(self.engine, self._meta).values(name="change_feed", value="on")
                )
            else:
                c.execute(
                    update(self._meta).where(self._meta.c.name == "change_feed").values(value="on")
                )

    def active(self) -> int:
        """The generation that answers (1 until a rebuild swapped another in)."""
        with self.engine.begin() as c:
            value = self._get(c, "active")
            if value is not None:
                return int(value)
            c.execute(insert_or_ignore(self.engine, self._meta).values(name="active", value="1"))
            return int(self._get(c, "active") or 1)

    def building_now(self) -> int | None:
        """The generation a rebuild is building (or left unfinished), if any."""
        with self.engine.connect() as c:
            value = self._get(c, "building")
        return None if value is None else int(value)

    def building(self, active: int) -> int:
        """The generation a rebuild builds: the one an interrupted rebuild left, else the
        one after `active`, from now on recorded as being built."""
        with self.engine.begin() as c:
            building = self._get(c, "building")
            if building is None:
                building = str(active + 1)
                c.execute(insert(self._meta).values(name="building", value=building))
        return int(building)

    def activate(self, generation: int, also: Callable[[Connection], object] | None = None) -> None:
        """Make `generation` the active one, in one transaction with the end of its build
        (and `also(c)`: the rebuild's change records)."""
        meta = self._meta
        with self.engine.begin() as c:
            if also is not None:
                also(c)
            c.execute(update(meta).where(meta.c.name == "active").values(value=str(generation)))
            c.execute(delete(meta).where(meta.c.name == "building"))
