"""Customers' rows: the state row (`customers`: the state and the columns queries filter on)
and the index rows derived from it (`segments`, `tiers`, `cards`, `gift_cards`, `orders`),
and their writer.

The writer diffs: a customer's next activities mostly leave its index rows as they were (a
long history has thousands of orders), so it deletes the rows no longer right and inserts
the new ones, knowing the old ones from what this process last wrote or, for a long
history, read with the state its plan folded on (either while the database still has the
head they came with), or else by reading them."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Table, select

from custate.adapters.codecs import paged as paged_codec
from custate.adapters.readmodel.pages import MISSING, Paged, PageStore, paged_maps, unchanged
from custate.adapters.readmodel.sql import Statements, chunks
from custate.adapters.readmodel.tables import Tables
from custate.domain import CustomerState
from custate.projections.catchup import Changes, Head, Touched

__all__ = ["INDEXES", "REMEMBER_ROWS_UPTO", "UPDATE_IN_PLACE_UPTO", "CustomerRows", "Index"]

# Index rows are remembered only from writes of at most this many customers: following
# new activities and absorbing late ones (where re-reading a long history's rows was the
# cost), not rebuilds, whose many customers' rows would all stay in memory.
REMEMBER_ROWS_UPTO = 1_000
# SQLite updates customers' rows in place in writes of at most this many customers (the
# following and late activities of long histories); bulk writes delete and insert.
UPDATE_IN_PLACE_UPTO = 100
# What this process remembers of at most this many customers (states and rows).
_REMEMBER_AT_MOST = 50_000

CUSTOMER = "customer_id"  # an index column holding the customer's id
KEY = "key"  # an index column holding the entry's key in its map


@dataclass(frozen=True, slots=True)
class Index:
    """An index table's rows, declared: each entry of the state's map `source` is a row of
    `table`, whose `columns` (in the table's order) are `CUSTOMER`, `KEY` or a field of the
    entry. `frozen`: the map's entries are replaced by the fold, never changed in place, so
    while the map equals the one remembered rows came from, the rows are the same and are
    neither built nor compared again (a long history has thousands of orders, and most
    activities leave them as they were)."""

    table: str  # its attribute of `Tables`
    source: str  # its attribute of `CustomerState`
    columns: tuple[str, ...]
    frozen: bool = False


INDEXES = (
    Index("segments", "segments", (KEY, CUSTOMER), frozen=True),
    Index("tiers", "tiers", (CUSTOMER, KEY, "tier_id")),
    Index("cards", "cards", (CUSTOMER, KEY, "campaign_id", "balance", "pending_points")),
    Index("gift_cards", "gift_cards", (CUSTOMER, KEY, "campaign_id", "balance")),
    Index("orders", "orders", (CUSTOMER, KEY, "status"), frozen=True),
)

IndexRows = Callable[
    [Sequence[tuple[str, tuple[CustomerState, Head]]], Mapping[str, set[str]]],
    dict[str, list[tuple[Any, ...]]],
]


def _compile(indexes: Sequence[Index]) -> IndexRows:
    """A function of (customers' states, per index the customers whose rows there are known
    unchanged) -> per index, the rows of the others, each customer's together: the loop
    `indexes` declares, written out as Python source and compiled once, so that building a
    row costs what a hand-written comprehension costs (it runs per customer written, and
    per entry of its maps)."""
    place = {CUSTOMER: "cid", KEY: "k"}
    lines = ["def index_rows(states, same):"]
    for x in indexes:
        lines.append(f"    {x.table} = []")
        if x.frozen:
            lines.append(f"    same_{x.table} = same.get({x.table!r}, ())")
    lines.append("    for cid, (s, _) in states:")
    for x in indexes:
        row = ", ".join(place.get(col, f"v.{col}") for col in x.columns)
        build = f"{x.table} += [({row}) for k, v in s.{x.source}.items()]"
        if x.frozen:
            lines += [f"        if cid not in same_{x.table}:", f"            {build}"]
        else:
            lines.append(f"        {build}")
    lines.append("    return {" + ", ".join(f"{x.table!r}: {x.table}" for x in indexes) + "}")
    namespace: dict[str, Any] = {}
    exec("\n".join(lines), namespace)  # the source is built above from `indexes` only
    index_rows: IndexRows = namespace["index_rows"]
    return index_rows


_index_rows = _compile(INDEXES)


@dataclass(frozen=True, slots=True)
class _Written:
    """What the database holds of a customer's index rows and pages under `head`: as this
    process last wrote them, or as it read them (`CustomerRows.states(remember=True)`).
    The rows of the indexes that are not frozen; for the frozen ones, copies of the maps
    their rows are made from (the rows themselves are a function of those: `_frozen_rows`,
    built only when needed, since a long history's are hundreds of thousands); the large
    maps stored in pages."""

    head: Head
    rows: dict[str, set[tuple[Any, ...]]]  # index not frozen -> rows
    sources: dict[str, dict[str, Any]]  # frozen index -> the map its rows came from
    paged: dict[str, Paged]  # large map stored in pages -> what was stored


@dataclass(slots=True)
class Written:
    """What one write stored that this process may remember once it commits."""

    # customer -> index not frozen -> rows; None: too many to remember
    rows: dict[str, dict[str, set[tuple[Any, ...]]]] | None
    paged: dict[str, dict[str, Paged]]
    # Customers whose remembered frozen maps were brought up to date in place (by the
    # entries named since), not to be copied again.
    updated: dict[str, _Written] | None = None


def _row_of(index: Index) -> Callable[[str, str, Any], tuple[Any, ...]]:
    """An index's row of one entry: (customer, key, entry) -> the row."""
    cols = index.columns

    def row(cid: str, k: str, v: Any) -> tuple[Any, ...]:
        return tuple(cid if c == CUSTOMER else k if c == KEY else getattr(v, c) for c in cols)

    return row


def _named_changes(
    index: Index, cid: str, was: Mapping[str, Any], now: Mapping[str, Any], keys: Collection[str]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]] | None:
    """The rows of `index` to delete and insert for the entries `keys` alone, the only ones
    where `now` can differ from `was`; None when none differ."""
    row = _ROWS[index.table]
    gone: list[tuple[Any, ...]] = []
    new: list[tuple[Any, ...]] = []
    for k in keys:
        old, v = was.get(k, MISSING), now.get(k, MISSING)
        if unchanged(old, v):
            continue
        if old is not MISSING:
            gone.append(row(cid, k, old))
        if v is not MISSING:
            new.append(row(cid, k, v))
    if not gone and not new:
        return None
    # An entry replaced by one with the same row (an order paid twice): neither.
    both = set(gone) & set(new)
    return [r for r in gone if r not in both], [r for r in new if r not in both]


_ROWS = {x.table: _row_of(x) for x in INDEXES if x.frozen}


def _frozen_rows(index: Index, cid: str, source: Mapping[str, Any]) -> set[tuple[Any, ...]]:
    """The rows of the frozen `index` that the customer's map `source` makes."""
    row = _ROWS[index.table]
    return {row(cid, k, v) for k, v in source.items()}


def _remember(
    written: dict[str, dict[str, set[tuple[Any, ...]]]], index: Index, rows: list[tuple[Any, ...]]
) -> None:
    """File `rows` of `index` under their customer. `_index_rows` lists each customer's rows
    together, so each customer's are one run: a set built whole, not a row at a time (a
    long history's late activity remembers thousands)."""
    for cid, run in groupby(rows, key=itemgetter(index.columns.index(CUSTOMER))):
        written.setdefault(cid, {}).setdefault(index.table, set()).update(run)


class CustomerRows:
    """The customers' state rows and index rows of one generation, on the connection the
    caller gives (and its transaction); a state's large maps of at least `paged_from`
    entries go to `pages`."""

    def __init__(self, sql: Statements, t: Tables, pages: PageStore, paged_from: int) -> None:
        self.sql = sql
        self.t = t
        self.pages = pages
        self.paged_from = paged_from
        self._indexes = [(x, getattr(t, x.table)) for x in INDEXES]
        self._frozen = [x for x in INDEXES if x.frozen]
        # The index rows this process last wrote for a customer, under the head written
        # with them: while the database still has that head, they are its rows (every write
        # of a customer's rows writes its head, and commits with the tracking position).
        self._written: dict[str, _Written] = {}

    def heads(self, c: Connection, customer_ids: Sequence[str]) -> dict[str, Head]:
        out: dict[str, Head] = {}
        for chunk in chunks(customer_ids):
            out.update((r[0], Head(r[1], r[2])) for r in self.sql.heads(c, chunk))
        return out

    def states(
        self, c: Connection, customer_ids: Sequence[str], remember: bool = False
    ) -> dict[str, CustomerState]:
        """The customers' stored states. `remember`: for those whose large maps are stored in
        pages (long histories) and that this process does not remember under the head
        read with the row, remember their index rows and pages as read, as if this process
        had written them: the next write of such a customer (its first late or new
        activity after a restart, or in another replica) then compares and rewrites only
        the entries its activities named, not every index row and page it has."""
        cu = self.t.customers
        rows: list[tuple[str, str]] = []
        heads: dict[str, Head] = {}
        for chunk in chunks(customer_ids):
            q = select(cu.c.customer_id, cu.c.state, cu.c.last_key, cu.c.last_version).where(
                cu.c.customer_id.in_(chunk)
            )
            for cid, stored, last_key, last_version in c.execute(q):
                rows.append((cid, stored))
                heads[cid] = Head(last_key, last_version)
        if not remember:
            return self._loaded(c, rows)
        known = self._written
        unknown = {
            cid: head
            for cid, head in heads.items()
            if (w := known.get(cid)) is None or w.head != head
        }
        return self._loaded(c, rows, unknown)

    def state_and_active(
        self, c: Connection, customer_id: str
    ) -> tuple[str | None, CustomerState | None]:
        """The active generation and the customer's state (None: no row), the row read in
        the statement that reads the generation."""
        active, stored = self.sql.state_and_active(c, customer_id)
        if stored is None:
            return active, None
        return active, self._loaded(c, [(customer_id, stored)])[customer_id]

    def _loaded(
        self,
        c: Connection,
        rows: Sequence[tuple[str, str]],
        remember: Mapping[str, Head] | None = None,
    ) -> dict[str, CustomerState]:
        """Stored state rows decoded, their large maps read back from pages if stored so.
        `remember`: customers whose rows and pages, if they have pages, to remember as read
        under these heads (`states`)."""
        out: dict[str, CustomerState] = {}
        paged: dict[str, tuple[str, ...]] = {}
        for cid, stored in rows:
            out[cid], names = paged_codec.load_row(stored)
            if names:
                paged[cid] = names
        if not paged:
            return out
        heads = remember or {}
        keep = [cid for cid in paged if cid in heads]
        kept = self.pages.fill(c, out, paged, keep)
        if keep and len(self._written) + len(keep) > _REMEMBER_AT_MOST:
            self._written.clear()
        for cid in keep:
            s, head = out[cid], heads[cid]
            # The rows of the indexes that are not frozen: the frozen ones are left out
            # (`same`), since they are made from the maps copied below when needed.
            built = _index_rows([(cid, (s, head))], {x.table: {cid} for x in self._frozen})
            self._written[cid] = _Written(
                head,
                {x.table: set(built[x.table]) for x in INDEXES if not x.frozen and built[x.table]},
                {x.table: dict(getattr(s, x.source)) for x in self._frozen},
                kept[cid],
            )
        return out

    def write(
        self,
        c: Connection,
        changes: Changes,
        db_heads: Mapping[str, Head] | None,
        named: Mapping[str, Touched | None] | None = None,
    ) -> Written:
        """Write the rows of every customer `changes.states` holds. `db_heads`: each
        customer's head in the database when the write's plan read it. `named`: per
        customer, the entries of its maps that the activities folded since its last write
        can have written (None: not known); for a customer this process wrote last, only
        those are compared, and what it remembers is brought up to date in place. Once the
        transaction commits, pass what this returns to `committed`; if it does not, call
        `forget`."""
        remember = len(changes.states) <= REMEMBER_ROWS_UPTO
        written = Written({} if remember else None, {}, {} if remember else None)
        # A few thousand customers at a time, so that their state text is never all in
        # memory at once.
        for chunk in chunks(sorted(changes.states.items()), 2000):
            self._write_chunk(c, chunk, changes.new, db_heads, written, named)
        return written

    def _write_chunk(
        self,
        c: Connection,
        chunk: Sequence[tuple[str, tuple[CustomerState, Head]]],
        new: set[str],
        db_heads: Mapping[str, Head] | None,
        written: Written,
        named: Mapping[str, Touched | None] | None = None,
    ) -> None:
        known = [cid for cid, _ in chunk if cid not in new]
        mine = self._remembered(known, db_heads)
        # Customers remembered whose changed entries are known: compared and written by
        # those entries alone (a long history's thousands of orders are not looked at).
        by_name = {}
        if named is not None and written.updated is not None:
            by_name = {cid: t for cid in mine if (t := named.get(cid)) is not None}
        same = self._unchanged(chunk, {cid: w for cid, w in mine.items() if cid not in by_name})
        for cid in by_name:
            for x in self._frozen:
                same.setdefault(x.table, set()).add(cid)  # their rows: below, by entry
        self._write_named(c, chunk, by_name, mine, written)
        # One decision per customer for both: the row leaves out what the pages hold.
        paged = {cid: paged_maps(s, self.paged_from) for cid, (s, _) in chunk}
        self.pages.write(
            c,
            chunk,
            paged,
            new,
            {cid: w.paged for cid, w in mine.items()},
            written.paged if written.rows is not None else None,
            by_name,
        )
        customers = [
            (
                cid,
                s.profile.status,
                s.points,
                s.activities.count,
                head.last_key,
                head.last_version,
                paged_codec.dump_row(s, paged[cid]),
            )
            for cid, (s, head) in chunk
        ]
        customers = self._replace_customers(c, known, customers)
        if customers:
            self.sql.insert(c, self.t.customers, customers)
        by_index = _index_rows(chunk, same)
        for index, table in self._indexes:
            rows = by_index[index.table]
            unchanged = same.get(index.table, set())
            if written.rows is not None and not index.frozen:
                _remember(written.rows, index, rows)
            todo = [i for i in known if i not in unchanged] if unchanged else known
            if todo:
                rows = self._replace_changed(c, index, table, todo, rows, mine)
            if rows:
                self.sql.insert(c, table, rows)

    def _write_named(
        self,
        c: Connection,
        chunk: Sequence[tuple[str, tuple[CustomerState, Head]]],
        by_name: Mapping[str, Touched],
        mine: Mapping[str, _Written],
        written: Written,
    ) -> None:
        """The frozen indexes' rows of the customers of `by_name`, by the entries named:
        the rows of those that changed are deleted and inserted, and what this process
        remembers of them is brought up to date in place."""
        if not by_name:
            return
        assert written.updated is not None
        gone: dict[str, list[tuple[Any, ...]]] = {}
        new: dict[str, list[tuple[Any, ...]]] = {}
        for cid, (s, _) in chunk:
            keys = by_name.get(cid)
            if keys is None:
                continue
            w = mine[cid]
            for x in self._frozen:
                was = w.sources[x.table]
                now = getattr(s, x.source)
                change = _named_changes(x, cid, was, now, keys.get(x.source, ()))
                if change is not None:
                    gone.setdefault(x.table, []).extend(change[0])
                    new.setdefault(x.table, []).extend(change[1])
                    for k in keys.get(x.source, ()):
                        v = now.get(k, MISSING)
                        if v is MISSING:
                            was.pop(k, None)
                        else:
                            was[k] = v
            written.updated[cid] = w
        for index, table in self._indexes:
            if gone.get(index.table):
                self.sql.delete_rows(c, table, gone[index.table])
            if new.get(index.table):
                self.sql.insert(c, table, new[index.table])

    def committed(self, changes: Changes, written: Written) -> None:
        """The write that returned `written` committed: remember what it stored."""
        memory = self._written
        if written.rows is None:
            for cid in changes.states:
                memory.pop(cid, None)
            return
        if len(memory) > _REMEMBER_AT_MOST:
            memory.clear()
        frozen = self._frozen
        updated = written.updated or {}
        for cid, (state, head) in changes.states.items():
            kept = updated.get(cid)
            if kept is not None:  # brought up to date in place by the write
                memory[cid] = _Written(
                    head, written.rows.get(cid, {}), kept.sources, written.paged.get(cid, {})
                )
                continue
            copies = {x.table: dict(getattr(state, x.source)) for x in frozen}
            memory[cid] = _Written(
                head, written.rows.get(cid, {}), copies, written.paged.get(cid, {})
            )

    def forget(self) -> None:
        """Remember nothing written so far (after a write that did not commit)."""
        self._written.clear()

    def _remembered(
        self, known: Sequence[str], db_heads: Mapping[str, Head] | None
    ) -> dict[str, _Written]:
        """What this process last wrote of those `known` customers whose rows it wrote last."""
        if not db_heads or not self._written:
            return {}
        out: dict[str, _Written] = {}
        for cid in known:
            hit = self._written.get(cid)
            if hit is not None and db_heads.get(cid) == hit.head:
                out[cid] = hit
        return out

    def _unchanged(
        self,
        chunk: Sequence[tuple[str, tuple[CustomerState, Head]]],
        remembered: Mapping[str, _Written],
    ) -> dict[str, set[str]]:
        """Per frozen index, the remembered customers whose rows there cannot have changed."""
        same: dict[str, set[str]] = {}
        if not remembered:
            return same
        for cid, (state, _) in chunk:
            w = remembered.get(cid)
            if w is None:
                continue
            for x in self._frozen:
                old = w.sources.get(x.table)
                # Equal entries, compared in C (by identity first): a fraction of building
                # and comparing their rows.
                if old is not None and old == getattr(state, x.source):
                    same.setdefault(x.table, set()).add(cid)
        return same

    def _replace_changed(
        self,
        c: Connection,
        index: Index,
        table: Table,
        known: Sequence[str],
        rows: list[tuple[Any, ...]],
        remembered: Mapping[str, _Written],
    ) -> list[tuple[Any, ...]]:
        """Delete the index rows of customers seen before that are no longer right, and
        return the rows still to insert. Reading the old rows (or remembering what was
        written) costs less than rewriting them."""
        old: set[tuple[Any, ...]] = set()
        for cid in known:
            mine = remembered.get(cid)
            if mine is None:
                continue
            if index.frozen:
                old |= _frozen_rows(index, cid, mine.sources[index.table])
            else:
                old |= mine.rows.get(index.table, set())
        unread = [cid for cid in known if cid not in remembered]
        for ids in chunks(unread):
            old.update(self.sql.customers_rows(c, table, ids))
        gone = old - set(rows)
        if gone:
            self.sql.delete_rows(c, table, list(gone))
        return [r for r in rows if r not in old]

    def _replace_customers(
        self, c: Connection, known: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> list[tuple[Any, ...]]:
        """Replace the state rows of the `known` customers; return the new customers' rows,
        still to insert. In a small write SQLite updates them in place: a row that keeps its
        size is rewritten only where its bytes changed, and a long history's state is
        hundreds of KB that a late activity changes a few bytes of. Bulk writes (thousands
        of short states) and PostgreSQL delete them, and put every row in at once."""
        if not known:
            return rows
        if self.sql.sqlite and len(known) <= UPDATE_IN_PLACE_UPTO:
            ids = set(known)
            self.sql.update_customers(c, [r for r in rows if r[0] in ids])
            return [r for r in rows if r[0] not in ids]
        for chunk in chunks(known):
            self.sql.delete_customers_rows(c, self.t.customers, chunk)
        return rows
