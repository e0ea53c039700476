"""The shape of the customer state, declared once, and what is derived from it.

Each class of the state (`custate.domain.state`) declares its fields, in order, with their
types: a frozen msgspec Struct for the entries the fold only ever replaces, a slotted
dataclass for the objects it changes in place (and `Gap`). Everything that needs to know
the shape derives it from those declarations instead of spelling the fields out again:

- `fields(cls)`: the fields of a class in order, each with its `Kind` (a time, an object
  of another class of the state, a map of them, a plain map, a list...); `names(cls)`,
  `field(cls, name)`, `entry_classes(cls, *kinds)` (which field holds which class).
- `render(obj)` / `renderer(cls)`: the public JSON form (`to_json`). An object's JSON is its
  fields in order, times as ISO text (`format_time`), maps with their keys sorted, lists
  copied, then the attributes its class names in `json_computed` (a gap's `missing`). A
  class may instead lay its JSON out itself in `json_layout`: (JSON path, source) pairs in
  order, where a dotted path nests (`loyalty.cards`) and a source that is not a field is
  computed (`points`): `CustomerState` does.
- `reader(cls)`: the inverse of `renderer` (`from_json`); a field missing from the JSON
  takes its default.
- `copier(cls)`: a copy to fold on. The fold changes the objects of a mutable class in place
  and replaces those of a frozen one: a copy copies the mutable ones and the containers
  that hold objects, and shares the frozen ones.
- `json_paths(cls)`: where each field (or computed source) lies in the JSON, dotted.

The stored forms (`custate.adapters.codecs`) are the fields in order as well: msgspec
writes and reads the Structs as arrays directly, and the codec generates the rows of the
dataclasses (`generate`)."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from datetime import datetime
from operator import attrgetter
from typing import Any, TypeVar

import msgspec
import msgspec.inspect as mi

from custate.domain.activity import format_time, parse_time

__all__ = [
    "Field",
    "Json",
    "Kind",
    "copier",
    "entry_classes",
    "field",
    "fields",
    "frozen",
    "generate",
    "getter",
    "json_paths",
    "names",
    "reader",
    "render",
    "renderer",
]

Json = dict[str, Any]
Layout = tuple[tuple[str, str], ...]  # (JSON path, source): see the module's docstring
_T = TypeVar("_T")


class Kind(enum.Enum):
    """What a field holds, as far as the JSON form and a copy care."""

    VALUE = "value"  # a JSON value as it is: text, a number, a customer's metadata
    TIME = "time"  # a datetime; in JSON, ISO text
    OPTIONAL_TIME = "optional_time"  # a datetime or None
    OBJECT = "object"  # an object of a class of the state
    OBJECTS = "objects"  # a map of key -> object of a class of the state
    MAP = "map"  # a map of key -> plain value
    LIST = "list"  # a list of plain values
    OBJECT_LIST = "object_list"  # a list of objects of a class of the state


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    """One declared field of a class of the state."""

    name: str
    kind: Kind
    entry: type | None  # the class of the objects an OBJECT(S) / OBJECT_LIST field holds
    type: Any  # the declared annotation, resolved (`dict[str, Order]`)
    default: Any  # msgspec.NODEFAULT: none (or a factory)
    default_factory: Any  # msgspec.NODEFAULT: none

    @property
    def required(self) -> bool:
        return self.default is msgspec.NODEFAULT and self.default_factory is msgspec.NODEFAULT


_FIELDS: dict[type, tuple[Field, ...]] = {}


def fields(cls: type) -> tuple[Field, ...]:
    """The fields of `cls` (a Struct or a dataclass of the state), in declared order."""
    out = _FIELDS.get(cls)
    if out is None:
        info = mi.type_info(cls)
        assert isinstance(info, mi.StructType | mi.DataclassType), cls
        hints = typing.get_type_hints(cls)
        out = _FIELDS[cls] = tuple(
            Field(f.name, *_kind(f.type), hints[f.name], f.default, f.default_factory)
            for f in info.fields
        )
    return out


def _kind(t: mi.Type) -> tuple[Kind, type | None]:
    if isinstance(t, mi.DateTimeType):
        return Kind.TIME, None
    if isinstance(t, mi.UnionType):
        if {type(u) for u in t.types} == {mi.DateTimeType, mi.NoneType}:
            return Kind.OPTIONAL_TIME, None
        return Kind.VALUE, None
    if isinstance(t, mi.StructType | mi.DataclassType):
        return Kind.OBJECT, t.cls
    if isinstance(t, mi.DictType):
        v = t.value_type
        if isinstance(v, mi.StructType | mi.DataclassType):
            return Kind.OBJECTS, v.cls
        return Kind.MAP, None
    if isinstance(t, mi.ListType):
        v = t.item_type
        if isinstance(v, mi.StructType | mi.DataclassType):
            return Kind.OBJECT_LIST, v.cls
        return Kind.LIST, None
    return Kind.VALUE, None


def field(cls: type, name: str) -> Field:
    """The field `name` of `cls`."""
    for f in fields(cls):
        if f.name == name:
            return f
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def names(cls: type) -> tuple[str, ...]:
    """The names of the fields of `cls`, in order: the order of its stored array."""
    return tuple(f.name for f in fields(cls))


def getter(cls: type) -> Callable[[Any], tuple[Any, ...]]:
    """A function of an object of `cls` to its fields' values as a tuple, in order (in C)."""
    get = attrgetter(*names(cls))
    if len(fields(cls)) == 1:  # attrgetter of one name returns the value, not a tuple
        return lambda o: (get(o),)
    return get


def frozen(cls: type) -> bool:
    """Whether the objects of `cls` never change (the fold replaces them)."""
    if issubclass(cls, msgspec.Struct):
        return bool(cls.__struct_config__.frozen)
    return bool(cls.__dataclass_params__.frozen)  # type: ignore[attr-defined]


def entry_classes(cls: type, *kinds: Kind) -> dict[str, type]:
    """The fields of `cls` that hold objects of a class of the state (of one of `kinds`, if
    given), and that class: `entry_classes(CustomerState, Kind.OBJECTS)["orders"]` is
    `Order`, and `entry_classes(CustomerState, Kind.OBJECT)` names the profile and the
    counters."""
    return {
        f.name: f.entry
        for f in fields(cls)
        if f.entry is not None and (not kinds or f.kind in kinds)
    }


def json_paths(cls: type) -> dict[str, str]:
    """Where each source of `cls`'s JSON (a field, or a computed attribute) lies in it, as
    a dotted path: `json_paths(CustomerState)["cards"]` is `"loyalty.cards"`."""
    return {source: path for path, source in _layout(cls)}


def _layout(cls: type) -> Layout:
    layout: Layout | None = getattr(cls, "json_layout", None)
    if layout is not None:
        return layout
    computed: tuple[str, ...] = getattr(cls, "json_computed", ())
    return tuple((n, n) for n in (*names(cls), *computed))


# -- the public JSON ---------------------------------------------------------------------------


def _render_value(f: Field) -> Callable[[Any], Any] | None:
    """How a field's value becomes JSON, where a function does it (maps and lists of
    objects; None: an expression of `_render_expression` does)."""
    k = f.kind
    if k is Kind.MAP:
        return lambda m: dict(sorted(m.items()))
    entry = f.entry
    if entry is None:
        return None
    one: Callable[[Any], Json] = renderer(entry)
    if k is Kind.OBJECT:
        return one
    if k is Kind.OBJECTS:
        return lambda m: {key: one(v) for key, v in sorted(m.items())}
    return lambda xs: [one(x) for x in xs]


def _render_expression(f: Field | None, value: str, ns: dict[str, Any]) -> str:
    """Python source of a field's JSON from `value`, its own source (`o.name`)."""
    if f is None or f.kind is Kind.VALUE:  # computed, or a JSON value as it is
        return value
    if f.kind is Kind.TIME:
        return f"format_time({value})"
    if f.kind is Kind.OPTIONAL_TIME:
        return f"(None if {value} is None else format_time({value}))"
    if f.kind is Kind.LIST:
        return f"list({value})"
    ns[f"render_{f.name}"] = _render_value(f)
    return f"render_{f.name}({value})"


_RENDERERS: dict[type, Callable[[Any], Json]] = {}


def renderer(cls: type) -> Callable[[Any], Json]:
    """The function of an object of `cls` to its public JSON form."""
    render_ = _RENDERERS.get(cls)
    if render_ is None:
        render_ = _RENDERERS[cls] = _renderer(cls)
    return render_


def render(obj: Any) -> Json:
    """`obj`'s public JSON form (`renderer` of its class)."""
    render_ = _RENDERERS.get(obj.__class__)
    if render_ is None:
        render_ = renderer(obj.__class__)
    return render_(obj)


def _renderer(cls: type) -> Callable[[Any], Json]:
    own = {f.name: f for f in fields(cls)}
    ns: dict[str, Any] = {"format_time": format_time}
    tree: dict[str, Any] = {}  # JSON key -> Python source of its value, or a nested tree
    for path, source in _layout(cls):
        *outer, key = path.split(".")
        at = tree
        for part in outer:
            at = at.setdefault(part, {})
        at[key] = _render_expression(own.get(source), f"o.{source}", ns)
    return generate("render", f"def render(o):\n    return {_display(tree)}\n", ns, cls)


def _display(tree: dict[str, Any]) -> str:
    items = (f"{k!r}: {v if isinstance(v, str) else _display(v)}" for k, v in tree.items())
    return "{" + ", ".join(items) + "}"


def generate(name: str, source: str, ns: dict[str, Any], cls: type) -> Callable[..., Any]:
    """The function `name` that `source` defines, with `ns` as its globals, for class
    `cls`. The renderers, readers and copies (and the stored form's codec) are generated
    per class from its declared fields, as `dataclasses` generates `__init__`: each is then
    one display, as fast as one written out by hand (the JSON of a long history is
    thousands of objects). The source is the function's `__doc__`."""
    exec(source, ns)  # source made above from the declared fields' names only
    function: types.FunctionType = ns[name]
    function.__qualname__ = f"{cls.__name__}.{name}"  # in tracebacks and profiles
    function.__doc__ = source
    return function


def _time_in(value: Any) -> datetime:
    return parse_time(value, "time")


def _optional_time_in(value: Any) -> datetime | None:
    return None if value is None else parse_time(value, "time")


def _read_value(f: Field) -> Callable[[Any], Any] | None:
    """How a field's value is read back from JSON (None: as it is)."""
    k = f.kind
    if k is Kind.TIME:
        return _time_in
    if k is Kind.OPTIONAL_TIME:
        return _optional_time_in
    if k is Kind.MAP:
        return dict
    if k is Kind.LIST:
        return list
    entry = f.entry
    if entry is None:
        return None  # a value
    one: Callable[[Json], Any] = reader(entry)
    if k is Kind.OBJECT:
        return one
    if k is Kind.OBJECTS:
        return lambda m: {key: one(v) for key, v in m.items()}
    return lambda xs: [one(x) for x in xs]


_READERS: dict[type, Callable[[Json], Any]] = {}


def reader(cls: type[_T]) -> Callable[[Json], _T]:
    """The function of a public JSON form (`renderer`'s) back to an object of `cls`. A
    field missing from the JSON takes its default (one without a default: KeyError)."""
    read = _READERS.get(cls)
    if read is None:
        read = _READERS[cls] = _reader(cls)
    return read


def _reader(cls: type) -> Callable[[Json], Any]:
    paths = json_paths(cls)
    ns: dict[str, Any] = {"cls": cls}
    whole, lenient = [], []  # every key present; or a field's default where it is not
    for f in fields(cls):  # positional, in field order: a Struct builds fastest so
        *outer, key = paths[f.name].split(".")
        parent = "j" + "".join(f"[{part!r}]" for part in outer)
        value = f"{parent}[{key!r}]"
        conv = _read_value(f)
        if conv is not None:
            ns[f"read_{f.name}"] = conv
            value = f"read_{f.name}({value})"
        whole.append(value)
        if not f.required:
            if f.default_factory is not msgspec.NODEFAULT:
                ns[f"default_{f.name}"] = f.default_factory
                default = f"default_{f.name}()"
            else:
                ns[f"default_{f.name}"] = f.default
                default = f"default_{f.name}"
            value = f"({value} if {key!r} in {parent} else {default})"
        lenient.append(value)
    source = (
        "def read(j):\n"
        "    try:\n"
        f"        return cls({', '.join(whole)})\n"
        "    except KeyError:\n"
        f"        return cls({', '.join(lenient)})\n"
    )
    return generate("read", source, ns, cls)


# -- copies ------------------------------------------------------------------------------------


def _copy_value(f: Field) -> Callable[[Any], Any] | None:
    """How a field of a mutable object is copied (None: shared)."""
    k = f.kind
    if k is Kind.MAP:
        return dict
    if k is Kind.LIST:
        return list
    entry = f.entry
    if entry is None:
        return None  # a value, a time
    if frozen(entry):  # shared: only the container is copied
        return None if k is Kind.OBJECT else dict if k is Kind.OBJECTS else list
    one: Callable[[Any], Any] = copier(entry)
    if k is Kind.OBJECT:
        return one
    if k is Kind.OBJECTS:
        return lambda m: {key: one(v) for key, v in m.items()}
    return lambda xs: [one(x) for x in xs]


_COPIERS: dict[type, Callable[[Any], Any]] = {}


def copier(cls: type[_T]) -> Callable[[_T], _T]:
    """A function of an object of `cls` to a copy that folding on leaves the original as it
    was: the mutable objects it holds are copied, and the frozen ones shared."""
    copy = _COPIERS.get(cls)
    if copy is None:
        copy = _COPIERS[cls] = _copier(cls)
    return copy


def _copier(cls: type) -> Callable[[Any], Any]:
    if frozen(cls):
        return lambda obj: obj
    convert = {f.name: c for f in fields(cls) if (c := _copy_value(f))}
    if issubclass(cls, msgspec.Struct):
        replace = msgspec.structs.replace
        if not convert:
            return replace  # with no changes: a shallow copy, in C

        def copy(obj: Any) -> Any:
            return replace(
                obj, **{name: conv(getattr(obj, name)) for name, conv in convert.items()}
            )

        return copy
    # A dataclass: through its constructor, generated (`copy.copy`, through
    # `__reduce_ex__`, costs ten times as much, and a late activity makes two copies).
    ns: dict[str, Any] = {"cls": cls}
    args = []
    for name in names(cls):
        if name in convert:
            ns[f"copy_{name}"] = convert[name]
            args.append(f"copy_{name}(o.{name})")
        else:
            args.append(f"o.{name}")
    return generate("copy", f"def copy(o):\n    return cls({', '.join(args)})\n", ns, cls)
