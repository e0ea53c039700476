"""The delta form of a stored checkpoint (format 2): stored against a checkpoint stored in
full (a `Base`), its large maps hold only the entries that differ from the base's.

A late activity's re-fold starts from a checkpoint and changes few of a long history's
thousands of orders; the checkpoints it makes are stored this way (docs/DECISIONS.md,
Read model). So are the in-order checkpoints of a long history, against the last one
stored whole, until what differs grows past a bound and the next is stored whole again
(`adapters.readmodel.runner`). Read back with `load_delta`, then `rebase` onto the base."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from custate.adapters.codecs.state import (
    DELTA_FORMAT,
    FORMAT,
    LARGE_MAPS,
    compact,
    encode_text,
    read,
)
from custate.domain.state import CustomerState

__all__ = [
    "DELTA_FORMAT",
    "Base",
    "Delta",
    "dump_counted",
    "dump_text",
    "is_delta",
    "load_delta",
    "rebase",
    "rebase_maps",
]


@dataclass(frozen=True, slots=True)
class Base:
    """A state stored in full under `key`, that states stored later may be written against:
    their large maps then hold only the entries that differ from its (`dump_text`).
    A late activity's re-fold starts from a checkpoint and changes a few of a long
    history's thousands of orders; writing each checkpoint it makes in full (233 KB for a
    10k-activity customer) was most of absorbing the activity.

    A re-fold may start from a checkpoint that is itself stored against a base: what it
    writes is then stored against that same base (never a chain, so a read is one base
    deep), as what differs from its start plus what its start held apart from the base
    (`changed`, `removed`). `maps` are copies of the start's large maps, taken before the
    fold went on from it."""

    key: str  # where the state it is written against is stored in full
    maps: dict[str, Mapping[str, Any]]
    size: int  # that state's stored size
    changed: dict[str, set[str]]  # entries where the start differs from that state
    removed: dict[str, list[str]]  # and those it lacks

    @classmethod
    def of(
        cls,
        key: str,
        s: CustomerState,
        stored: bytes | str,
        size: int,
        unchanging: CustomerState | None = None,
    ) -> Base:
        """`s`: the state stored as `stored` under `key`, before anything is folded on it.
        `unchanging`: a state equal to `s` that nothing will ever change (a remembered
        checkpoint `s` is a copy of): its maps are referenced, not copied."""
        if unchanging is not None:
            maps = {name: getattr(unchanging, name) for name in LARGE_MAPS}
        else:
            maps = {name: dict(getattr(s, name)) for name in LARGE_MAPS}
        if not is_delta(stored):
            return cls(key, maps, size, {}, {})
        partial, delta = load_delta(stored)  # a few KB
        assert delta is not None
        changed = {name: set(getattr(partial, name)) for name in LARGE_MAPS}
        return cls(delta.base, maps, size, changed, delta.removed)

    @classmethod
    def over(
        cls,
        key: str,
        stored: bytes | str,
        size: int,
        base_key: str,
        base: Mapping[str, Mapping[str, Any]],
    ) -> Base | None:
        """`of` for a state stored as `stored` under `key`, without its maps: seen through
        `base`, the large maps of the state stored whole under `base_key`, which nothing
        will ever change, so that the state itself can be folded on. None unless `stored`
        is that state, or is stored against it."""
        if not is_delta(stored):
            return cls(key, dict(base), size, {}, {}) if key == base_key else None
        partial, delta = load_delta(stored)  # a few KB
        assert delta is not None
        if delta.base != base_key:
            return None
        maps: dict[str, Mapping[str, Any]] = {
            name: _Start(getattr(partial, name), set(delta.removed.get(name, ())), base[name])
            for name in LARGE_MAPS
        }
        changed = {name: set(getattr(partial, name)) for name in LARGE_MAPS}
        return cls(delta.base, maps, size, changed, delta.removed)


class _Start(Mapping[str, Any]):
    """A large map of a state stored against a base, seen through the base's: what
    `rebase_maps` would build, without copying the base's entries. Looked up by key (what a
    re-fold's checkpoint is compared at: the entries named); iterating it goes over the
    base's whole map."""

    __slots__ = ("base", "gone", "own")

    def __init__(self, own: Mapping[str, Any], gone: set[str], base: Mapping[str, Any]) -> None:
        self.own, self.gone, self.base = own, gone, base

    def __getitem__(self, k: str) -> Any:
        if k in self.gone:
            raise KeyError(k)
        own = self.own.get(k, _NOTHING)
        return self.base[k] if own is _NOTHING else own

    def get(self, k: str, default: Any = None) -> Any:
        if k in self.gone:
            return default
        own = self.own.get(k, _NOTHING)
        return self.base.get(k, default) if own is _NOTHING else own

    def __contains__(self, k: object) -> bool:
        return k not in self.gone and (k in self.own or k in self.base)

    def __iter__(self) -> Iterator[str]:
        gone, own = self.gone, self.own
        yield from (k for k in own if k not in gone)
        yield from (k for k in self.base if k not in own and k not in gone)

    def __len__(self) -> int:
        return sum(1 for _ in self)


_NOTHING = object()


@dataclass(frozen=True, slots=True)
class Delta:
    """What a state stored against a `Base` needs from it: the base's key, and the entries
    of its large maps that are gone."""

    base: str
    removed: dict[str, list[str]]


_DELTA_HEAD = f'{{"format":{DELTA_FORMAT},"base":'
_DELTA_HEAD_BYTES = _DELTA_HEAD.encode()


def is_delta(stored: bytes | str) -> bool:
    """Whether `stored` was written against a `Base` (and `load_delta` must read it)."""
    head = _DELTA_HEAD if isinstance(stored, str) else _DELTA_HEAD_BYTES
    return stored.startswith(head)  # type: ignore[arg-type]


def dump_text(
    s: CustomerState, base: Base, touched: Mapping[str, Collection[str]] | None = None
) -> str:
    """`s` stored against `base`: its large maps as what differs from the base's."""
    return dump_counted(s, base, touched)[0]


def dump_counted(
    s: CustomerState, base: Base, touched: Mapping[str, Collection[str]] | None = None
) -> tuple[str, int]:
    """`dump_text`, and how many entries of the large maps it holds (changed or gone).
    `touched`: map -> keys, the only entries where `s` can differ from the state `base` was
    made of (`Base.of`'s `s`, before anything was folded on it): then only those are looked
    at, not every entry of a long history's maps (None: every entry)."""
    form, held = _against(compact(s), base, touched)
    return encode_text(form), held


def rebase_maps(
    partial: CustomerState, delta: Delta, maps: Mapping[str, Mapping[str, Any]]
) -> CustomerState:
    """`rebase`, from the large maps of the base state alone (a `Base`'s `maps`)."""
    for name in LARGE_MAPS:
        entries = dict(maps[name])
        entries.update(getattr(partial, name))
        for k in delta.removed.get(name, ()):
            entries.pop(k, None)
        setattr(partial, name, entries)
    return partial


def load_delta(stored: bytes | str) -> tuple[CustomerState, Delta | None]:
    """A stored checkpoint, and, if it was stored against a `Base`, what `rebase` needs:
    the state's large maps then hold only what differs from the base's."""
    state, j = read(stored)
    if j is None or j.format == FORMAT:
        return state, None
    if j.format == DELTA_FORMAT and j.base is not None:
        return state, Delta(j.base, j.removed)
    raise ValueError(f"not a checkpoint: a stored state of format {j.format}")


def rebase(partial: CustomerState, delta: Delta, base: CustomerState) -> CustomerState:
    """`partial` (from `load_delta`) made whole with the large maps of `base`, the state
    stored under `delta.base`. (A key removed that the base lacks: gone since the re-fold's
    start, which had it.)"""
    return rebase_maps(partial, delta, {name: getattr(base, name) for name in LARGE_MAPS})


def _against(
    form: dict[str, Any], base: Base, touched: Mapping[str, Collection[str]] | None
) -> tuple[dict[str, Any], int]:
    removed: dict[str, list[str]] = {}
    out = {"format": DELTA_FORMAT, "base": base.key, **form}  # `is_delta` reads the head
    out["format"] = DELTA_FORMAT
    held = 0
    for name in LARGE_MAPS:
        now: dict[str, Any] = form[name]
        was = base.maps[name]
        # The fold replaces entries and never changes one, and the re-fold's state shares
        # the base's: by identity is enough (an equal copy is only written again).
        if touched is None:
            changed = {k: v for k, v in now.items() if was.get(k) is not v}
            kept = len(now) - sum(1 for k in changed if k not in was)
            gone = [k for k in was if k not in now] if kept < len(was) else []
        else:
            keys = touched.get(name, ())
            changed = {k: now[k] for k in keys if k in now and was.get(k) is not now[k]}
            gone = [k for k in keys if k in was and k not in now]
        for k in base.changed.get(name, ()):
            if k in now:
                changed.setdefault(k, now[k])
        gone += [k for k in base.removed.get(name, ()) if k not in now]
        out[name] = changed
        held += len(changed) + len(gone)
        if gone:
            removed[name] = gone
    out["removed"] = removed
    return out, held
