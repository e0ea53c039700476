"""The read model's runner: catches a `view.ReadModel` up with the event store.

It reads notifications after the tracking position a batch at a time, has the projection
(`projections.catchup.plan`) plan each batch, and writes several planned batches in one
transaction (`WRITE_EVERY`), so that a customer's rows are written once per transaction,
not once per batch. Between writes an `Overlay` holds what was planned but not written, and
is what the next batch's plan reads through."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from math import isqrt
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from eventsourcing.persistence import Notification

from custate.adapters.codecs import delta
from custate.adapters.codecs import foldinput as inputs
from custate.adapters.codecs import state as state_codec
from custate.adapters.eventstore import ACTIVITY_TOPIC, decode
from custate.adapters.readmodel.partitions import partition_of_stream
from custate.domain import CustomerState
from custate.projections import catchup
from custate.projections.catchup import Changes, Head, Projected, Touched, plan
from custate.projections.keys import key_text

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from custate.adapters.readmodel.view import ReadModel

# Checked inside each write transaction, before anything is written: raises if the writer
# may no longer write (a projector worker whose lease was taken, `adapters.projector`).
Fence = Callable[["Connection"], None]

__all__ = [
    "DEFAULT_CATCHUP_BATCH",
    "WRITE_EVERY",
    "CatchUpReport",
    "Fence",
    "Overlay",
    "Runner",
    "Write",
]

# Activities read and planned per step: several late activities of one customer in a step
# cost one re-fold (docs/DECISIONS.md, Read model).
DEFAULT_CATCHUP_BATCH = 10_000
# Activities planned per write transaction: a catch-up reads `batch_size` at a time but
# writes each touched customer's state and index rows once per this many.
WRITE_EVERY = 100_000
# States this process wrote, kept for the next plan, of at most this many customers.
_STATES_AT_MOST = 50_000
# Chains of checkpoints kept from one write to the next, of at most this many customers
# (each holds a copy of a long history's large maps).
_CHAINS_AT_MOST = 1_000
# A checkpoint stored against a base may always hold this many entries (`_most`).
CHAIN_AT_LEAST = 256


def _most(entries: int) -> int:
    """How many entries a checkpoint stored against a base of `entries` entries may hold
    before the next one is stored whole: about the square root of twice the entries a
    whole checkpoint writes every `interval` activities, which keeps the entries written
    per activity low at every length of history (docs/DECISIONS.md, Costs that do not
    grow)."""
    return max(CHAIN_AT_LEAST, isqrt(64 * entries))


@dataclass(slots=True)
class _Chain:
    """A customer's checkpoint stored whole (`base`) that its later in-order checkpoints
    are stored against, and the entries that the activities folded since can have written
    (`touched`, from `Changes.touched`)."""

    base: delta.Base
    touched: Touched
    entries: int  # the base's large maps' entries
    head: Head | None = None  # kept from one write to the next: the head that write left


@dataclass(slots=True)
class CatchUpReport:
    """What a catch-up projected: activities, read batches, customers re-folded for late
    activities, and the tracking position it left."""

    activities: int = 0
    batches: int = 0
    late: int = 0
    position: int = 0


@dataclass(frozen=True, slots=True)
class Write:
    """What one transaction writes: `changes`, planned from the tracking positions
    `previous` (of the partitions projected) up to the notification `position`, with the
    checkpoints in their stored form."""

    previous: Mapping[int, int]
    position: int
    changes: Changes
    # (customer, key, stored form) of the checkpoints of activities folded in order
    checkpoints: Sequence[tuple[str, str, str]]
    # (customer, key, state, stored form, size to count in memory) of re-folds' checkpoints
    refolds: Sequence[tuple[str, str, CustomerState, str, int]]
    # each written customer's head in the database, as the plan first read it
    db_heads: Mapping[str, Head]
    # (customer, key, version, fold input) of each new activity
    keys: Sequence[tuple[str, str, int, bytes | None]]
    # per customer written, the entries of its maps the activities folded since the write
    # before can have written (`Changes.touched`, over every batch; None: not known)
    touched: Mapping[str, Touched | None]


class Overlay:
    """Planned batches not yet written, over the view: what they hold (heads, states, keys,
    checkpoints, checkpoints to drop) overlays what the database has. Implements
    `projections.catchup.ReadModelPort` for the next batch's plan, through the view's
    public methods."""

    def __init__(
        self,
        view: ReadModel,
        previous: Mapping[int, int],
        chains: Mapping[str, _Chain] | None = None,
    ) -> None:
        """`chains`: the chains of checkpoints earlier writes of this process left, each
        used only while the customer's head is the one it left (`_Chain.head`)."""
        self.view = view
        self.previous = dict(previous)  # partition -> its tracking position in the database
        self.start = min(previous.values())
        self.position = self.start  # the last notification read (and planned, if ours)
        self.read = 0  # notifications read, ours or not
        self.changes = Changes()
        self.rows: list[tuple[str, str, str]] = []  # checkpoints, stored form, when planned
        self.refolds: list[tuple[str, str, CustomerState]] = []  # re-folds' checkpoints
        # customer -> what its last re-fold's checkpoints are stored against, and the
        # entries its re-folds since that start can have written (None: not known)
        self.bases: dict[str, delta.Base] = {}
        self.refold_touched: dict[str, Touched | None] = {}
        # In-order checkpoints of long histories: each customer's chain (None: the next
        # checkpoint is stored whole), and the base each planned row is stored against.
        self.kept: Mapping[str, _Chain] = chains or {}
        self.chains: dict[str, _Chain | None] = {}
        self.row_bases: dict[tuple[str, str], delta.Base] = {}
        self.touched: dict[str, Touched | None] = {}  # `Write.touched`
        self.db_heads: dict[str, Head] = {}  # what the database had, as first read
        self.keys: dict[str, list[tuple[str, int]]] = {}  # customer -> (key, version)
        # The new activities' `keys` rows, each with its fold input (`codecs.foldinput`).
        self.key_rows: list[tuple[str, str, int, bytes | None]] = []
        self.count = 0
        self.batches = 0
        # (customer, key, keys after it) that `_remade` read for the plan's `keys_between`
        # right after, which then need not read them again
        self._tail: tuple[str, str, list[tuple[str, int]]] | None = None

    def add(
        self,
        changes: Changes,
        count: int,
        position: int,
        inputs_at: Mapping[tuple[str, int], bytes | None],
    ) -> None:
        """Overlay a batch's `changes` (`count` activities up to the notification
        `position`). `inputs_at`: the fold input of each activity of the batch, by
        (customer, version); they are kept only in the rows (no map), since a rebuild holds
        those of `WRITE_EVERY` activities until it writes them."""
        self._tail = None
        c = self.changes
        c.states.update(changes.states)
        for cid, key, version in changes.keys:
            self.keys.setdefault(cid, []).append((key, version))
            self.key_rows.append((cid, key, version, inputs_at[(cid, version)]))
        drops = changes.drop_checkpoints_from
        if drops:
            # Checkpoints planned earlier at or after a late key are dropped as well.
            self.rows = [r for r in self.rows if r[0] not in drops or r[1] < drops[r[0]]]
            self.refolds = [r for r in self.refolds if r[0] not in drops or r[1] < drops[r[0]]]
            for cid, key in drops.items():
                before = c.drop_checkpoints_from.get(cid)
                c.drop_checkpoints_from[cid] = key if before is None else min(before, key)
        self._store_checkpoints(changes)
        self.refolds.extend(changes.refold_checkpoints)
        for cid in changes.states:
            _gather(self.touched, cid, changes.touched.get(cid))
        c.late += changes.late
        c.new |= changes.new
        c.feed.extend(changes.feed)
        self.count += count
        self.batches += 1
        self.position = position

    def _store_checkpoints(self, changes: Changes) -> None:
        """After a batch: the chains its re-folds and untracked customers break, the
        entries its activities named added to the others, and what its re-folds'
        checkpoints may be stored against."""
        drops, touched = changes.drop_checkpoints_from, changes.touched
        for cid in changes.states:
            if cid not in touched or (cid in drops and not self._refolded_within(cid, drops)):
                self.chains[cid] = None  # not tracked, or re-folded from before: broken
        for cid in drops:
            _gather(self.refold_touched, cid, touched.get(cid))
        for cid, t in touched.items():
            chain = self._chain(cid)
            if chain is not None:
                _add(chain.touched, t)
        # Checkpoints that `plan` copied (a port without `keep_checkpoint`): none here.
        for cid, key, s in changes.checkpoints:
            self.keep_checkpoint(cid, key, s, None)

    def _refolded_within(self, cid: str, drops: Mapping[str, str]) -> bool:
        """Whether the customer's re-fold of this batch kept its chain: it started from the
        chain's base or a checkpoint stored against it (so its checkpoints are stored
        against that base too), and dropped none at or before the base. The state then
        differs from the base in entries the chain or the re-fold named."""
        chain = self._chain(cid)
        base = self.bases.get(cid)
        return (
            chain is not None
            and base is not None
            and base.key == chain.base.key
            and self.refold_touched.get(cid) is not None
            and drops[cid] > chain.base.key
        )

    def keep_checkpoint(self, cid: str, key: str, s: CustomerState, named: Touched | None) -> None:
        """`plan`'s hook for an in-order checkpoint: `s` as it stands now (the fold goes on
        with it), stored at once, whole, or, for a long history (`named`: the entries its
        activities of this batch named so far), against the last checkpoint stored whole
        (`_Chain`) while what differs stays under `_most`. So a checkpoint costs what it
        writes, not a copy of a long history's maps."""
        text: str | None = None
        chain = self._chain(cid) if named is not None else None
        if chain is not None and named is not None:
            candidates = {
                m: chain.touched.get(m, set()) | named.get(m, set())
                for m in chain.touched.keys() | named.keys()
            }
            text, held_n = delta.dump_counted(s, chain.base, candidates)
            if held_n > _most(chain.entries):
                text = None
            else:
                self.row_bases[(cid, key)] = chain.base
        if text is None:
            text = state_codec.dump_text(s)
            if named is not None:
                base = delta.Base.of(key, s, text, len(text))  # copies the maps
                self.chains[cid] = _Chain(
                    base, {m: set(k) for m, k in named.items()}, state_codec.large_entries(s)
                )
        self.rows.append((cid, key, text))

    def _chain(self, cid: str) -> _Chain | None:
        if cid in self.chains:
            return self.chains[cid]
        kept = self.kept.get(cid)
        chain = None
        if kept is not None and kept.head is not None and kept.head == self.db_heads.get(cid):
            chain = _Chain(kept.base, {m: set(k) for m, k in kept.touched.items()}, kept.entries)
        self.chains[cid] = chain
        return chain

    def keep_chains(self, into: MutableMapping[str, _Chain]) -> None:
        """This overlay was written: leave its chains for the next one (`into`)."""
        states = self.changes.states
        for cid, chain in self.chains.items():
            if chain is None:
                into.pop(cid, None)
            else:
                chain.head = states[cid][1]
                into[cid] = chain
        if len(into) > _CHAINS_AT_MOST:
            into.clear()

    # -- ReadModelPort -------------------------------------------------------------------

    def heads(self, customer_ids: Sequence[str]) -> dict[str, Head]:
        held = self.changes.states
        out = self.view.heads([i for i in customer_ids if i not in held])
        for i, head in out.items():
            self.db_heads.setdefault(i, head)
        out.update((i, held[i][1]) for i in customer_ids if i in held)
        return out

    def states(self, customer_ids: Sequence[str]) -> dict[str, CustomerState]:
        held = self.changes.states
        out = self.view.states([i for i in customer_ids if i not in held], remember=True)
        out.update((i, held[i][0]) for i in customer_ids if i in held)
        return out

    def checkpoint_before(self, customer_id: str, key: str) -> tuple[str, CustomerState] | None:
        """The port's, for a re-fold: its start, and the checkpoint stored in full that
        the start is (or is stored against), are remembered as the base of what the
        re-fold stores (`as_write`)."""
        dropped = self.changes.drop_checkpoints_from.get(customer_id)
        planned = [r for r in self.rows if r[0] == customer_id and r[1] < key]
        refolded = [r for r in self.refolds if r[0] == customer_id and r[1] < key]
        k, text = max((r[1], r[2]) for r in planned) if planned else ("", "")
        k2, state = (
            max(((r[1], r[2]) for r in refolded), key=itemgetter(0)) if refolded else ("", None)
        )
        if state is not None and k2 > k:
            return k2, state.copy()
        self.refold_touched[customer_id] = {}
        if planned:
            chained = self.row_bases.get((customer_id, k))
            if chained is None:
                whole = state_codec.load(text)
                self.bases[customer_id] = delta.Base.of(k, whole, text, len(text))
            else:
                partial, against = delta.load_delta(text)
                assert against is not None
                whole = delta.rebase_maps(partial, against, chained.maps)
                self.bases[customer_id] = delta.Base.of(k, whole, text, chained.size)
            return k, whole
        # The database's, less those a planned late activity drops.
        found = self.view.stored_checkpoint_before(
            customer_id, key if dropped is None else min(key, dropped), borrow=True
        )
        if found is None:
            return None
        state = found.state
        if found.stored is None:
            self.refold_touched[customer_id] = None
            return found.key, state
        chain = self._chain(customer_id)
        remembered = found.original is not None  # then not to be folded on as it is
        seen = (
            delta.Base.over(found.key, found.stored, found.size, chain.base.key, chain.base.maps)
            if chain is not None and (not remembered or self._remade(customer_id, found.key, state))
            else None
        )
        if seen is not None:
            # The start is seen through the chain's base, not copied; memory lets go of it.
            if remembered:
                self.view.checkpoints.let_go(customer_id, found.key, state)
            self.bases[customer_id] = seen
        else:
            if remembered:
                state = state.copy()
            self.bases[customer_id] = delta.Base.of(
                found.key, state, found.stored, found.size, found.original
            )
        if found.base is not None:
            self._take_up_chain(customer_id, found.base, self.bases[customer_id])
        return found.key, state

    def _remade(self, cid: str, key: str, start: CustomerState) -> bool:
        """Whether a re-fold from the checkpoint under `key` (`start`) makes a checkpoint
        of its own, which memory then holds in its place: it folds at least the activities
        projected after it and one more, and so passes a multiple of the interval if those
        reach one. Then the re-fold can take the remembered start itself; otherwise memory
        keeps it for the next late activity, and the re-fold folds a copy."""
        interval = self.view.interval
        count = start.activities.count
        tail = self.keys_between(cid, key)
        self._tail = (cid, key, tail)
        return (count + len(tail) + 1) // interval > count // interval

    def _take_up_chain(
        self, cid: str, decoded: tuple[str, CustomerState, int], start: delta.Base
    ) -> None:
        """A re-fold's start was read against a checkpoint stored whole, decoded for it
        (`decoded`: key, state, stored size; `start` is stored against it, so
        `start.key` is that key), while this process keeps no chain of the
        customer's (it did not write the in-order checkpoints: another process did, or this
        one before a restart). Nothing at or after the re-fold's start survives it, so that
        checkpoint is the last one stored whole: keep it as the customer's chain, as if this
        process had written it. The next late activity's start is then made whole with its
        maps (`Runner.chain_base`) instead of decoding it again (37 MB at 1M activities),
        and the next in-order checkpoints are stored against it. The entries where the
        state can differ from it: those the start differs in (`start.changed`,
        `start.removed`), and what the re-fold names (`Changes.touched`)."""
        key, whole, size = decoded
        entries = state_codec.large_entries(whole)
        # Chains are kept of customers whose batches name the entries they touch alone.
        if entries < catchup.TOUCHED_FROM or self._chain(cid) is not None:
            return
        maps = {m: getattr(whole, m) for m in state_codec.LARGE_MAPS}
        touched: Touched = {m: set(k) for m, k in start.changed.items()}
        for m, gone in start.removed.items():
            touched.setdefault(m, set()).update(gone)
        self.chains[cid] = _Chain(delta.Base(key, maps, size, {}, {}), touched, entries)

    def keys_between(
        self, customer_id: str, after: str | None, upto: str | None = None
    ) -> list[tuple[str, int]]:
        peeked, self._tail = self._tail, None
        if peeked is not None and upto is None and peeked[:2] == (customer_id, after):
            return peeked[2]
        found = self.view.keys_between(customer_id, after, upto)
        mine = self.keys.get(customer_id)
        if mine:
            found += [
                (k, v)
                for k, v in mine
                if (after is None or k > after) and (upto is None or k <= upto)
            ]
            found.sort()
        return found

    # -- the write -----------------------------------------------------------------------

    def as_write(self) -> Write:
        """What to write: the re-folds' checkpoints in their stored form, against the state
        their re-fold's start is stored against (itself, if stored in full) when that one
        stays, else in full."""
        refolds: list[tuple[str, str, CustomerState, str, int]] = []
        drops = self.changes.drop_checkpoints_from
        for cid, key, state in self.refolds:
            base = self.bases.get(cid)
            if base is not None and base.key < key and base.key < drops.get(cid, key):
                stored = delta.dump_text(state, base, self.refold_touched.get(cid))
                refolds.append((cid, key, state, stored, base.size))
            else:
                text = state_codec.dump_text(state)
                refolds.append((cid, key, state, text, len(text)))
        return Write(
            self.previous,
            self.position,
            self.changes,
            self.rows,
            refolds,
            self.db_heads,
            self.key_rows,
            self.touched,
        )


def _gather(into: dict[str, Touched | None], cid: str, more: Touched | None) -> None:
    """Add `more` to what `into` holds for `cid`; None (not known) once either is."""
    held = into.get(cid, {})
    if more is None or held is None:
        into[cid] = None
    else:
        _add(held, more)
        into[cid] = held


def _add(into: Touched, more: Touched) -> None:
    for m, keys in more.items():
        held = into.get(m)
        if held is None:
            into[m] = set(keys)
        else:
            held |= keys


class Runner:
    """Catches `view` up. Keeps the states this process wrote (or planned), for the next
    plan: an entry is used only while its head is the one in the database."""

    def __init__(self, view: ReadModel) -> None:
        self.view = view
        self._states: dict[str, tuple[CustomerState, Head]] = {}
        self._chains: dict[str, _Chain] = {}  # checkpoints' chains (`Overlay`)

    def chain_base(
        self, customer_id: str, head: Head
    ) -> tuple[str, Mapping[str, Mapping[str, Any]]] | None:
        """The key and large maps of the checkpoint stored whole that the customer's
        chain of checkpoints is stored against, while `head` is the head this process's
        last write of it left (`checkpoints.KnownBases`)."""
        chain = self._chains.get(customer_id)
        if chain is None or chain.head != head:
            return None
        return chain.base.key, chain.base.maps

    def forget(self) -> None:
        """Keep nothing of earlier writes (what they held may be gone or erased)."""
        self._states.clear()
        self._chains.clear()

    def catch_up(
        self,
        batch_size: int = DEFAULT_CATCHUP_BATCH,
        progress: Callable[[int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        partitions: Collection[int] | None = None,
        fence: Fence | None = None,
        share: tuple[int, int] | None = None,
        upto: int | None = None,
        move_idle: bool = True,
    ) -> CatchUpReport:
        """Project everything stored since the tracking positions of `partitions` (None:
        all), `batch_size` activities read at a time, `WRITE_EVERY` written a transaction;
        `progress(n)` after each batch planned; `should_stop()` before each read: True ends
        the catch-up after writing what was planned. `fence` runs first in every write.
        `share=(g, n)`: only the customers whose CRC-32 modulo `n` is `g` (one process of
        a parallel rebuild; the batches are the same notification windows as without it).
        `upto`: read no notification after this id. `move_idle=False`: when nothing of
        `partitions` was stored since, leave their positions where they are rather than
        write them past the others' activities (a projector woken by every write of the
        store, most of them for partitions another worker holds, moves its idle ones now
        and then, not at every write)."""
        with self.view.one_connection():
            try:
                return self._catch_up(
                    batch_size, progress, should_stop, partitions, fence, share, upto, move_idle
                )
            except BaseException:
                # `plan` folds on from kept states in place: after a failure they may hold
                # activities that were never written, under heads that still match.
                self.forget()
                raise

    def _catch_up(
        self,
        batch_size: int,
        progress: Callable[[int], None] | None,
        should_stop: Callable[[], bool] | None,
        partitions: Collection[int] | None,
        fence: Fence | None,
        share: tuple[int, int] | None = None,
        upto: int | None = None,
        move_idle: bool = True,
    ) -> CatchUpReport:
        view = self.view
        count = view.partitions
        mine = set(range(count)) if partitions is None else set(partitions)
        report = CatchUpReport()
        if not mine:
            return report
        recorder = view.store.recorder
        view.store.keep_statistics()  # the window reads below are planned from them
        feed = view.feed  # asked once a catch-up: the store's setting

        def fresh() -> Overlay:
            positions = view.positions()
            return Overlay(view, {p: at for p, at in positions.items() if p in mine}, self._chains)

        def in_share(stream: str) -> bool:
            return share is None or partition_of_stream(stream, share[1]) == share[0]

        def wanted(i: int, stream: str) -> bool:
            """Of a window read whole: this catch-up's rows its partitions have not passed."""
            if count > 1 and i <= overlay.previous[partition_of_stream(stream, count)]:
                return False
            return in_share(stream)

        every = share is None and len(mine) == count  # this catch-up holds every partition

        overlay = fresh()
        last = False  # the last select found less than a batch: nothing more was stored
        while True:
            notes: Sequence[Notification] = ()
            read_to = overlay.position  # the last notification id read
            if not last and (should_stop is None or not should_stop()):
                if (share is not None and count == 1) or (every and count > 1):
                    # A parallel rebuild's share of one partition, or every partition: the
                    # window, and its rows (those of the partitions it has not passed).
                    listed_n, read_to, notes = view.store.activity_window(
                        overlay.position, batch_size, upto, wanted
                    )
                    last = listed_n < batch_size
                    overlay.read += listed_n
                    if listed_n and not notes:
                        overlay.position = read_to
                        continue
                elif count > 1 or share is not None:
                    # Ids and streams first, then only this worker's rows: the others'
                    # partitions cost a row id each, not their state.
                    listed = view.store.activity_notes(overlay.position, batch_size)
                    last = len(listed) < batch_size
                    if upto is not None and listed and listed[-1][0] > upto:
                        listed = [x for x in listed if x[0] <= upto]
                        last = True
                    if listed:
                        read_to = listed[-1][0]
                        previous = overlay.previous
                        ids = [
                            i
                            for i, stream in listed
                            if i > previous.get(partition_of_stream(stream, count), i)
                            and in_share(stream)
                        ]
                        notes = view.store.notifications(ids)
                        overlay.read += len(listed)
                        if not notes:
                            overlay.position = read_to
                            continue
                else:
                    notes = recorder.select_notifications(
                        overlay.position,
                        batch_size,
                        topics=[ACTIVITY_TOPIC],
                        inclusive_of_start=False,
                    )
                    last = len(notes) < batch_size
                    if upto is not None and notes and notes[-1].id > upto:
                        notes = [n for n in notes if n.id <= upto]
                        last = True
                    if notes:
                        read_to = notes[-1].id
                        overlay.read += len(notes)
            if not notes:
                idle = overlay.count == 0 and not move_idle
                if overlay.position > overlay.start and not idle:
                    if self._flush(overlay, report, fence):
                        break
                    overlay = fresh()  # lost a race: read again
                    last = False
                    continue
                break
            last_id = read_to
            batch = []
            inputs_at: dict[tuple[str, int], bytes | None] = {}
            for n in notes:
                s = decode(n.state, n.originator_version, n.id)
                batch.append(Projected(s.activity, s.version, key_text(s.activity), s.recorded_at))
                inputs_at[(s.activity.customer_id, s.version)] = inputs.dump(
                    s.activity, s.recorded_at
                )
            # A late activity re-folds its customer's recent tail: keep what was just
            # decoded, so that tail is not read and decoded again.
            view.keep_parsed(batch)
            changes = plan(
                batch,
                overlay,
                view,
                view.interval,
                self._states,
                feed=feed,
                keep_checkpoint=overlay.keep_checkpoint,
            )
            overlay.add(changes, len(batch), last_id, inputs_at)
            self._states.update(changes.states)
            if progress is not None:
                progress(len(batch))
            if overlay.count >= WRITE_EVERY or overlay.read >= 4 * WRITE_EVERY:
                if not self._flush(overlay, report, fence):
                    overlay = fresh()
                    last = False
                    continue
                overlay = Overlay(
                    view, dict.fromkeys(overlay.previous, overlay.position), self._chains
                )
        report.position = report.position or min(view.positions().values())
        return report

    def _flush(self, overlay: Overlay, report: CatchUpReport, fence: Fence | None) -> bool:
        """Write what `overlay` holds in one transaction; False if another projector moved
        a tracking position first (then nothing is written, and the kept states are
        dropped)."""
        if not self.view.write(overlay.as_write(), fence):
            self.forget()
            return False
        overlay.keep_chains(self._chains)
        states = self._states
        states.update(overlay.changes.states)
        if len(states) > _STATES_AT_MOST:
            states.clear()
        report.activities += overlay.count
        report.batches += overlay.batches
        report.late += overlay.changes.late
        report.position = overlay.position
        return True
