"""The stored form of a whole `CustomerState` (format 1), for checkpoints and the read
model's rows, and the typed reader that the delta and paged forms share.

`CustomerState.to_json` is the public, self-describing form. This one is derived from the
state's declared classes (`custate.domain.shape`): each object an array of its fields in
declared order, written and read typed by msgspec, times included. It is still JSON with
the state's field names at the top (the public form's names, but that `cards`, `tiers` and
`referred_by` are not grouped; `"gaps":[...]` included, so a stored state can be searched
for gaps as text), and `"format"` names it:

- `FORMAT` (1): the whole state (`dump`, `dump_text`, `load`; `load` also reads the
  public form).
- `codecs.delta.DELTA_FORMAT` (2): a checkpoint stored against another.
- `codecs.paged.PAGED_FORMAT` (3): a row whose large maps are stored in pages.

`load` refuses the other two rather than hand out a partial state. A field added to a
class of the state goes last, with a default: arrays stored before it still load (msgspec
fills in the missing trailing fields). Why this form, and its figures: docs/DECISIONS.md
(Read model)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

import msgspec
import orjson

from custate.domain import shape
from custate.domain.state import CustomerState

FORMAT = 1
# The format numbers of the other two forms, known here so that the one reader below can
# tell them apart (their codecs: `codecs.delta`, `codecs.paged`).
DELTA_FORMAT = 2
PAGED_FORMAT = 3

# The maps that grow with a history: a stored state may hold only what changed in them
# since another stored state (`codecs.delta`), or leave them to pages (`codecs.paged`).
LARGE_MAPS = ("orders", "vouchers", "reward_redemptions")


def large_entries(s: CustomerState) -> int:
    """How many entries the large maps of `s` hold."""
    return sum(len(getattr(s, name)) for name in LARGE_MAPS)


def dump(s: CustomerState) -> bytes:
    """The whole state in its stored form."""
    return encode(compact(s))


def dump_text(s: CustomerState) -> str:
    """`dump` as text, as the stores take it."""
    return encode_text(compact(s))


_scratch = threading.local()  # `buffer`: this thread's
SCRATCH_BYTES = 4 << 20  # a larger buffer, an outlier's, is not kept


def encode_text(compact_form: dict[str, Any]) -> str:
    """A compact form (`compact`, possibly reshaped by the delta or paged codec) as JSON
    text, encoded into this thread's scratch buffer (docs/DECISIONS.md, Read model)."""
    buffer: bytearray | None = getattr(_scratch, "buffer", None)
    if buffer is None:
        buffer = _scratch.buffer = bytearray()
    _encoder.encode_into(compact_form, buffer)
    text = buffer.decode()
    if len(buffer) > SCRATCH_BYTES:
        _scratch.buffer = None
    return text


def compact(s: CustomerState) -> dict[str, Any]:
    """`s` as the stored form's object, for msgspec to encode: `"format"`, then the state's
    fields by name in order, each object an array of its fields in order: msgspec writes the
    Structs so, and the dataclasses (the objects the fold changes in place, and the gaps)
    are made rows of theirs here."""
    return _compact(s)


def _row_struct(cls: type) -> type[msgspec.Struct]:
    """An array-like Struct with the fields of dataclass `cls` (types and defaults): a
    stored row is read as one, so that it is typed, times included, and a row stored
    before a field was appended reads too."""
    spec: list[Any] = []
    for g in shape.fields(cls):
        assert g.entry is None or issubclass(g.entry, msgspec.Struct), (cls, g.name)
        if g.default_factory is not msgspec.NODEFAULT:
            spec.append((g.name, g.type, msgspec.field(default_factory=g.default_factory)))
        elif g.default is not msgspec.NODEFAULT:
            spec.append((g.name, g.type, g.default))
        else:
            spec.append((g.name, g.type))
    return msgspec.defstruct(f"{cls.__name__}Row", spec, array_like=True, gc=False, module=__name__)


def _codec() -> tuple[
    Callable[[CustomerState], dict[str, Any]], Callable[[Any], CustomerState], list[tuple[str, Any]]
]:
    """The stored form's writer (`compact`), its reader from the typed form (`_state`), and
    the typed form's fields, generated from the state's declared fields. A field that holds
    Structs is written and read by msgspec as it is; one that holds dataclasses (the
    objects the fold changes in place, the gaps) as rows of their fields."""
    ns: dict[str, Any] = {
        "FORMAT": FORMAT,
        "CustomerState": CustomerState,
        "astuple": msgspec.structs.astuple,
    }
    out, back, typed, head = ['"format": FORMAT'], [], [], []
    for f in shape.fields(CustomerState):
        value, stored, t = f"s.{f.name}", f"j.{f.name}", f.type
        cls = f.entry
        if cls is not None and not issubclass(cls, msgspec.Struct):
            row = _row_struct(cls)
            ns[f"cls_{f.name}"] = cls
            # A list display, not `attrgetter`: its attribute loads are specialised.
            as_row = "[" + ", ".join(f"v.{name}" for name in shape.names(cls)) + "]"
            one = f"cls_{f.name}(*astuple(r))"
            if f.kind is shape.Kind.OBJECT:
                t = row
                head.append(f"    {f.name} = {value}\n")
                value = "[" + ", ".join(f"{f.name}.{name}" for name in shape.names(cls)) + "]"
                stored = f"cls_{f.name}(*astuple({stored}))"
            elif f.kind is shape.Kind.OBJECTS:
                t = dict[str, row]  # type: ignore[valid-type]
                value = f"{{k: {as_row} for k, v in {value}.items()}}"
                stored = f"{{k: {one} for k, r in {stored}.items()}}"
            else:
                t = list[row]  # type: ignore[valid-type]
                value = f"[{as_row} for v in {value}]"
                stored = f"[{one} for r in {stored}]"
        if f.name in LARGE_MAPS:
            t = t | None  # None: stored apart (the paged form)
            stored = f"({stored} if {stored} is not None else {{}})"
        out.append(f"{f.name!r}: {value}")
        back.append(stored)
        typed.append((f.name, t))
    write = shape.generate(
        "compact",
        f"def compact(s):\n{''.join(head)}    return {{{', '.join(out)}}}\n",
        ns,
        CustomerState,
    )
    read = shape.generate(
        "state", f"def state(j):\n    return CustomerState({', '.join(back)})\n", ns, CustomerState
    )
    return write, read, typed


_compact, _state, _STORED_FIELDS = _codec()


def _time_subclass(value: object) -> str:
    # msgspec encodes `datetime` itself, but not subclasses (freezegun's FakeDatetime).
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class Envelope(msgspec.Struct, kw_only=True):
    """What a stored form holds besides the state's fields."""

    format: int
    base: str | None = None  # the delta form: stored against this key's state
    removed: dict[str, list[str]] = {}


# The compact form of any of the three formats, typed: msgspec parses it and its times in one
# pass. Its fields are the state's (`Envelope`'s besides), and typed as the state declares
# them, but that a large map is None where the paged form left it to pages, and a gap a row.
Stored = cast(
    type[Envelope],
    msgspec.defstruct(
        "Stored",
        _STORED_FIELDS,
        bases=(Envelope,),
        kw_only=True,
        module=__name__,
    ),
)
_decode = msgspec.json.Decoder(Stored).decode
_encoder = msgspec.json.Encoder(enc_hook=_time_subclass)
encode = _encoder.encode


def load(stored: bytes | str) -> CustomerState:
    """A state stored in full (either form)."""
    state, j = read(stored)
    if j is not None and j.format != FORMAT:
        raise ValueError(f"a stored state of format {j.format}: see codecs.delta and codecs.paged")
    return state


def read(stored: bytes | str) -> tuple[CustomerState, Envelope | None]:
    """The state `stored` holds, and its typed compact form (None for the public form)."""
    try:
        j = _decode(stored)
    except msgspec.ValidationError:
        return CustomerState.from_json(orjson.loads(stored)), None  # the public form
    if j.format not in (FORMAT, DELTA_FORMAT, PAGED_FORMAT):
        return CustomerState.from_json(orjson.loads(stored)), None
    return _state(j), j
