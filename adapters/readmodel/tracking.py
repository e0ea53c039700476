"""The read model's tracking position: the id of the last notification (stored activity)
it projected.

Exactly once: a write's rows and its new position commit in one transaction, and the
position moves only by compare and set (`UPDATE ... SET notification_id = :new WHERE
notification_id = :previous`, `sql.Statements.advance`): a projector whose plan started
from a position another one has since moved writes nothing, rolls back, and reads again
from the new position."""

from __future__ import annotations

from sqlalchemy import Connection, Engine

from custate.adapters.eventstore import APP_NAME
from custate.adapters.readmodel.sql import Statements
from custate.adapters.readmodel.tables import Tables
from custate.adapters.sqlschema import insert_or_ignore

__all__ = ["TrackingPosition"]


class TrackingPosition:
    """The position of one generation, in its `tracking` table (one row)."""

    def __init__(self, engine: Engine, t: Tables, sql: Statements) -> None:
        self.sql = sql
        with engine.begin() as c:
            c.execute(
                insert_or_ignore(engine, t.tracking).values(
                    application_name=APP_NAME, notification_id=0
                )
            )

    def read(self, c: Connection) -> int:
        """The position as `c` sees it (0: nothing projected yet)."""
        return self.sql.position(c, APP_NAME)

    def advance(self, c: Connection, previous: int, new: int) -> bool:
        """Move the position from `previous` to `new` in the transaction of `c`; False, and
        nothing changed, if it is not at `previous` (another projector moved it): the
        caller must then roll back what it wrote."""
        return self.sql.advance(c, APP_NAME, previous, new)
