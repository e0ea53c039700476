"""The paged form of a read model's row (format 3): a large map (orders, vouchers, reward
redemptions) of a long history is stored in pages of entries apart from the customer's
row, and the row holds `null` in its place.

An entry's page is a stable hash of its key (`page_of`), so a write rewrites only the
pages of the entries that changed, and a read is a few dozen rows joined into one JSON
object and parsed in one pass (docs/DECISIONS.md, Read model). Write the row with
`dump_row` and each page with `dump_page`; read the row with `load_row`, then each map
with `load_map`."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import msgspec

from custate.adapters.codecs.state import (
    FORMAT,
    LARGE_MAPS,
    PAGED_FORMAT,
    compact,
    encode,
    encode_text,
    read,
)
from custate.domain import shape
from custate.domain.state import CustomerState

__all__ = [
    "ENTRY_PAGES",
    "PAGED_FORMAT",
    "dump_page",
    "dump_row",
    "load_map",
    "load_row",
    "page_of",
]

ENTRY_PAGES = 64


def page_of(key: str) -> int:
    """The page an entry of a large map is stored in."""
    return zlib.crc32(key.encode()) % ENTRY_PAGES


def dump_page(entries: Mapping[str, Any]) -> str:
    """Entries of a large map (at least one) as the members of a JSON object."""
    return encode(entries)[1:-1].decode()


def dump_row(s: CustomerState, paged: Iterable[str] = ()) -> str:
    """`s` as a row, the large maps `paged` names left out (stored in pages). With none
    left out, the row is the whole state in its full form."""
    form = compact(s)
    for name in paged:
        form["format"] = PAGED_FORMAT
        form[name] = None
    return encode_text(form)


def load_row(stored: bytes | str) -> tuple[CustomerState, tuple[str, ...]]:
    """A stored state row, with the large maps it left to be stored in pages empty, and
    their names (see `dump_row`)."""
    state, j = read(stored)
    if j is None or j.format == FORMAT:
        return state, ()
    if j.format == PAGED_FORMAT:
        return state, tuple(name for name in LARGE_MAPS if getattr(j, name) is None)
    raise ValueError(f"not a state row: a stored state of format {j.format}")


# Each large map's reader, typed as the state declares the map (`dict[str, Order]`...).
_MAPS: dict[str, Callable[[str], dict[str, Any]]] = {
    name: msgspec.json.Decoder(shape.field(CustomerState, name).type).decode for name in LARGE_MAPS
}


def load_map(name: str, pages: Iterable[str]) -> dict[str, Any]:
    """The large map `name` from its pages as `dump_page` wrote them, in one pass."""
    return _MAPS[name]("{" + ",".join(pages) + "}")
