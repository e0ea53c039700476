"""Which generation of the read model's tables is active, and which one a rebuild builds."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Engine, MetaData, delete, insert, select, update
from sqlalchemy.exc import DBAPIError

from custate.adapters.readmodel.tables import meta_table
from custate.adapters.readmodel.views import point_views
from custate.adapters.sqlschema import create_all, driver, insert_or_ignore, reading
from custate.domain.fold import FOLD_VERSION

__all__ = ["Generations"]


def _fold_key(generation: int) -> str:
    return f"fold_version:{generation}"


class Generations:
    """The `custate_readmodel` settings table, created if missing."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._meta = meta_table(MetaData())
        create_all(engine, self._meta.metadata)
        mark = "%s" if engine.dialect.name == "postgresql" else "?"
        self._feed_query = f"SELECT value FROM {self._meta.name} WHERE name = {mark}"

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
        """Whether the store keeps a change feed (off until `enable_feed`). Asked at every
        catch-up, so through the driver: a fifth of the time through SQLAlchemy on SQLite,
        half on PostgreSQL."""
        with reading(self.engine) as c:
            row = driver(c).execute(self._feed_query, ("change_feed",)).fetchone()
        return row is not None and row[0] == "on"

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

    def active_if_any(self) -> int | None:
        """The active generation, None for a store that has none yet (nothing written)."""
        with reading(self.engine) as c:
            value = self._get(c, "active")
        return None if value is None else int(value)

    def active(self) -> int:
        """The generation that answers (1 until a rebuild swapped another in)."""
        found = self.active_if_any()  # one round trip, on every read
        if found is not None:
            return found
        with self.engine.begin() as c:
            value = self._get(c, "active")
            if value is not None:
                return int(value)
            # A new store: its first generation is built by this fold from the start.
            c.execute(insert_or_ignore(self.engine, self._meta).values(name="active", value="1"))
            self._stamp(c, 1)
            return int(self._get(c, "active") or 1)

    def _stamp(self, c: Connection, generation: int) -> None:
        """Record that `generation` is built by this code's fold (`FOLD_VERSION`)."""
        name = _fold_key(generation)
        c.execute(delete(self._meta).where(self._meta.c.name == name))
        c.execute(insert(self._meta).values(name=name, value=str(FOLD_VERSION)))

    def active_fold(self) -> tuple[int, int | None]:
        """The active generation and the fold version it was built with (see
        `fold_version`), read in one statement: consistent while a rebuild swaps."""
        meta = self._meta
        q = select(meta.c.name, meta.c.value).where(
            (meta.c.name == "active") | meta.c.name.like("fold_version:%")
        )
        with reading(self.engine) as c:
            rows = {str(n): str(v) for n, v in c.execute(q)}
        active = int(rows.get("active", 1))
        version = rows.get(_fold_key(active))
        return active, None if version is None else int(version)

    def fold_version(self, generation: int) -> int | None:
        """The fold version `generation` was built with; None when not recorded (a
        generation built before fold versions were: treated as older than any)."""
        with reading(self.engine) as c:
            value = self._get(c, _fold_key(generation))
        return None if value is None else int(value)

    def building_now(self) -> int | None:
        """The generation a rebuild is building (or left unfinished), if any."""
        with reading(self.engine) as c:
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
                self._stamp(c, int(building))
        return int(building)

    def abandon(self, generation: int) -> None:
        """Forget the unfinished build of `generation` (its tables are the caller's to
        drop): a rebuild left by another fold version is started again, not resumed."""
        meta = self._meta
        with self.engine.begin() as c:
            if self._get(c, "building") == str(generation):
                c.execute(delete(meta).where(meta.c.name == "building"))
                c.execute(delete(meta).where(meta.c.name == _fold_key(generation)))

    def activate(self, generation: int, also: Callable[[Connection], object] | None = None) -> None:
        """Make `generation` the active one, in one transaction with the end of its build
        (and `also(c)`: the rebuild's change records)."""
        meta = self._meta
        with self.engine.begin() as c:
            if also is not None:
                also(c)
            old = self._get(c, "active")
            c.execute(update(meta).where(meta.c.name == "active").values(value=str(generation)))
            c.execute(delete(meta).where(meta.c.name == "building"))
            if old is not None and int(old) != generation:
                c.execute(delete(meta).where(meta.c.name == _fold_key(int(old))))
            self._point_views(c, generation)

    def views_on(self) -> int | None:
        """The generation the stable views (`views.VIEWS`) show; None: not made yet."""
        with reading(self.engine) as c:
            value = self._get(c, "views")
        return None if value is None else int(value)

    def ensure_views(self, generation: int) -> None:
        """Point the stable views at `generation` if it is the active one and they show
        another (or none: a store made before them). Under the write lock of the `active`
        row, so it never re-points them at a generation a rebuild has just retired."""
        meta = self._meta
        try:
            with self.engine.begin() as c:
                # A write first: SQLite's write lock, PostgreSQL's row lock, until the commit.
                c.execute(update(meta).where(meta.c.name == "active").values(value=meta.c.value))
                if self._get(c, "active") != str(generation) or self._get(c, "views") == str(
                    generation
                ):
                    return
                self._point_views(c, generation)
        except DBAPIError:
            # A generation of an older layout that the views cannot show (PostgreSQL checks
            # their columns): it answers without them, and its rebuild makes them.
            return

    def _point_views(self, c: Connection, generation: int) -> None:
        meta = self._meta
        point_views(c, generation)
        c.execute(delete(meta).where(meta.c.name == "views"))
        c.execute(insert(meta).values(name="views", value=str(generation)))
