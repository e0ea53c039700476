"""Long histories' large maps, stored in pages of entries beside the customer's row.

A large map (orders, vouchers, reward redemptions) of at least `PAGED_FROM` entries is
stored in the `pages` table, an entry's page a stable hash of its key, and the customer's
row leaves it out (`codecs.paged`, which encodes rows and pages). A write rewrites only the
pages holding entries that changed since this process last wrote or read them
(`PageStore.fill(keep=...)`); without that memory it rewrites the customer's pages whole."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection

from custate.adapters.codecs import paged as paged_codec
from custate.adapters.codecs import state as state_codec
from custate.adapters.readmodel.sql import Statements, chunks
from custate.domain import CustomerState
from custate.projections.catchup import Head, Touched

__all__ = ["PAGED_FROM", "PageStore", "Paged", "paged_maps"]

# The size from which a large map is stored in pages (docs/DECISIONS.md, Read model).
PAGED_FROM = 256


def paged_maps(s: CustomerState, paged_from: int) -> tuple[str, ...]:
    """The large maps of `s` stored in pages: those of at least `paged_from` entries."""
    return tuple(n for n in state_codec.LARGE_MAPS if len(getattr(s, n)) >= paged_from)


@dataclass(frozen=True, slots=True)
class Paged:
    """A large map as this process last stored it in pages: a copy of its entries, and the
    keys on each page (kept up to date from one write to the next, not computed again)."""

    entries: dict[str, Any]
    members: dict[int, list[str]]


def _touched(
    was: Mapping[str, Any], now: Mapping[str, Any], members: dict[int, list[str]]
) -> set[int]:
    """The pages of the entries that differ between `was` and `now`; `members` is brought up
    to date with the keys added and gone (its lists are replaced, not changed)."""
    touched: set[int] = set()
    stayed = 0
    for k, v in now.items():
        old = was.get(k)
        if old is None:
            page = paged_codec.page_of(k)
            members[page] = [*members.get(page, ()), k]
            touched.add(page)
            continue
        stayed += 1
        if old is not v and old != v:
            touched.add(paged_codec.page_of(k))
    if stayed < len(was):
        for k in was:
            if k not in now:
                page = paged_codec.page_of(k)
                members[page] = [m for m in members[page] if m != k]
                touched.add(page)
    return touched


MISSING = object()  # an entry a map does not hold


def unchanged(old: Any, new: Any) -> bool:
    """Whether two entries of a map (either `MISSING`) are the same, by identity first
    (the fold replaces entries and never changes one)."""
    return old is new or (old is not MISSING and new is not MISSING and old == new)


def _touched_named(
    held: Paged, now: Mapping[str, Any], keys: Collection[str]
) -> tuple[bool, set[int]]:
    """`_touched` over the entries `keys` alone, the only ones where `now` can differ from
    `held.entries`; `held` is brought up to date in place. (Whether anything differs, the
    pages touched.)"""
    was, members = held.entries, held.members
    touched: set[int] = set()
    for k in keys:
        old, new = was.get(k, MISSING), now.get(k, MISSING)
        if unchanged(old, new):
            continue
        page = paged_codec.page_of(k)
        touched.add(page)
        if new is MISSING:
            del was[k]
            members[page] = [m for m in members[page] if m != k]
        else:
            if old is MISSING:
                members[page] = [*members.get(page, ()), k]
            was[k] = new
    return bool(touched), touched


def _rewritten(
    cid: str,
    name: str,
    now: Mapping[str, Any],
    members: dict[int, list[str]],
    pages: Collection[int],
) -> list[tuple[str, str, int, str]]:
    """The rows of the pages `pages` of map `name` as `now` holds them; the pages left
    empty are dropped from `members` (and get no row)."""
    rows = [
        (cid, name, page, paged_codec.dump_page({k: now[k] for k in members[page]}))
        for page in pages
        if members.get(page)
    ]
    for page in pages:
        if not members.get(page):
            members.pop(page, None)
    return rows


class PageStore:
    """The `pages` table, on the connection the caller gives (and its transaction)."""

    def __init__(self, sql: Statements) -> None:
        self.sql = sql

    def fill(
        self,
        c: Connection,
        states: Mapping[str, CustomerState],
        paged: Mapping[str, Sequence[str]],
        keep: Collection[str] = (),
    ) -> dict[str, dict[str, Paged]]:
        """Read the large maps `paged` names for each customer back into `states`. For the
        customers of `keep`, also what is stored (customer -> map -> `Paged`), as a write
        of this process would have remembered it: the keys on each page come with the
        page, so a writer that did not store them need not hash every key again."""
        kept: dict[str, dict[str, Paged]] = {cid: {} for cid in keep}
        for ids in chunks(list(paged)):
            rows = self.sql.pages(c, ids)
            for (cid, name), run in groupby(rows, key=itemgetter(0, 1)):
                if name not in paged[cid]:
                    continue
                if cid not in kept:
                    setattr(states[cid], name, paged_codec.load_map(name, (r[3] for r in run)))
                    continue
                whole: dict[str, Any] = {}
                members: dict[int, list[str]] = {}
                for _, _, page, text in run:
                    entries = paged_codec.load_map(name, (text,))
                    members[page] = list(entries)
                    whole.update(entries)
                setattr(states[cid], name, whole)
                kept[cid][name] = Paged(dict(whole), members)
        return kept

    def write(
        self,
        c: Connection,
        chunk: Sequence[tuple[str, tuple[CustomerState, Head]]],
        paged: Mapping[str, tuple[str, ...]],
        new: set[str],
        remembered: Mapping[str, Mapping[str, Paged]],
        written: dict[str, dict[str, Paged]] | None,
        named: Mapping[str, Touched | None] | None = None,
    ) -> None:
        """Store the large maps `paged` names for each customer of `chunk` in pages, and
        drop the pages of maps no longer stored so. For a customer whose pages this process
        wrote last (`remembered`: customer -> map -> what was stored), only the pages
        holding entries that changed: a late activity or the next one of a long history
        changes a few of its thousands. `new`: customers with nothing stored yet.
        `written`: where to put what was stored, to remember it. `named`: per customer, the
        entries of its maps where the state can differ from the remembered one
        (`Changes.touched`, since this process last wrote it): then only those are compared,
        and what is remembered is brought up to date in place (a failed write must make
        the caller `forget`)."""
        wipe: list[str] = []  # customers whose stored pages are not known here
        dropped: list[tuple[str, str]] = []  # (customer, map) no longer stored in pages
        gone: list[tuple[str, str, int]] = []
        rows: list[tuple[str, str, int, str]] = []
        for cid, (s, _) in chunk:
            names = paged[cid]
            before = remembered.get(cid)
            if before is None:
                if cid not in new:
                    wipe.append(cid)
                before = {}
            dropped += [(cid, name) for name in before if name not in names]
            after: dict[str, Paged] = {}
            keys = named.get(cid) if named is not None else None
            for name in names:
                now: dict[str, Any] = getattr(s, name)
                held = before.get(name)
                if held is not None and keys is not None:
                    differs, pages = _touched_named(held, now, keys.get(name, ()))
                    after[name] = held
                    if not differs:
                        continue
                    gone += [(cid, name, page) for page in pages]
                    rows += _rewritten(cid, name, now, held.members, pages)
                    continue
                if held is not None and held.entries == now:  # in C, by identity first
                    after[name] = held
                    continue
                if held is None:
                    members: dict[int, list[str]] = {}
                    for k in now:
                        members.setdefault(paged_codec.page_of(k), []).append(k)
                    touched: Collection[int] = list(members)
                else:
                    members = dict(held.members)  # held stays as stored, should this write fail
                    touched = _touched(held.entries, now, members)
                    gone += [(cid, name, page) for page in touched]
                rows += _rewritten(cid, name, now, members, touched)
                if written is not None:
                    after[name] = Paged(dict(now), members)
            if written is not None:
                written[cid] = after
        sql = self.sql
        for ids in chunks(wipe):
            sql.delete_customers_rows(c, sql.t.pages, ids)
        if dropped:
            sql.drop_map_pages(c, dropped)
        if gone:
            sql.drop_pages(c, gone)
        if rows:
            sql.insert(c, sql.t.pages, rows)
