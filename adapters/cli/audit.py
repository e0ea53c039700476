"""`custate history | diff | explain | gaps | report`: what each activity changed, what changed
between two cuts and which activities did it, why a field has its value, missing activities,
and a self-contained HTML report."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from custate.adapters.cli.app import EXIT_BAD_RECORDS, app, examples
from custate.adapters.cli.common import (
    Column,
    customer_store,
    cut,
    fail,
    number,
    output_format,
    show_records,
    write_tsv,
)
from custate.adapters.cli.store_options import FormatOption, JsonOption, StoreOption

if TYPE_CHECKING:
    from custate.projections.audit import (
        CardGap,
        DiffEntry,
        FieldChange,
        HistoryEntry,
        StateDiff,
        ValueStep,
    )

# custate.projections.audit's operations, here so that `custate --help` does not import the
# domain (tests/unit/test_cli_startup.py checks they agree).
ADDED, REMOVED = "added", "removed"


def format_time(t: datetime) -> str:
    """custate.domain.format_time, imported when a command first prints a time."""
    from custate.domain import format_time as formatted

    return formatted(t)


Customer = Annotated[str, typer.Argument(help="The Voucherify customer id (cust_...).")]
ABSENT = "(absent)"
# Above this many rows (a history's changes, a diff's fields, an explanation's steps), one
# line per row instead of a table: rich lays a table out whole (docs/DECISIONS.md).
TABLE_UPTO = 2_000


def _value(v: Any) -> str:
    return escape(orjson.dumps(v).decode())


def _plain(v: Any) -> str:
    return orjson.dumps(v).decode()


def _sides(
    c: FieldChange | DiffEntry | ValueStep, value: Callable[[Any], str] = _value
) -> tuple[str, str]:
    before = ABSENT if c.op == ADDED else value(c.before)
    after = ABSENT if c.op == REMOVED else value(c.after)
    return before, after


def _json_out(value: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")


@app.command(
    epilog=examples(
        "custate history cust_1",
        "custate history cust_1 --from 2024-01-01 --to 2024-03-31",
        "custate history cust_1 --known-at 2024-02-01T00:00:00Z --format json",
    )
)
def history(
    customer_id: Customer,
    start: Annotated[
        str | None, typer.Option("--from", help="List activities with created_at >= T1.")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="List activities with created_at <= T2.")
    ] = None,
    known_at: Annotated[
        str | None, typer.Option("--known-at", help="Only what the store held at K.")
    ] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
    fmt: FormatOption = None,
) -> None:
    """Each activity in fold order: created_at, record time, type, id, and what it changed."""
    form = output_format(fmt, as_json, "json")
    t1, t2 = cut(start, "--from"), cut(end, "--to")
    k = cut(known_at, "--known-at")
    with customer_store(store) as cs:
        entries = cs.history(customer_id, t1, t2, k)
    if form == "json":
        _json_out({"customer_id": customer_id, "activities": [e.to_json() for e in entries]})
        return
    if form == "ndjson":
        out = sys.stdout.buffer
        for e in entries:
            out.write(orjson.dumps({"customer_id": customer_id, **e.to_json()}) + b"\n")
        return
    if form == "tsv":
        write_tsv(HISTORY_COLUMNS, _history_rows(entries))
        return
    if sys.stdout.isatty() and sum(len(e.changes) or 1 for e in entries) <= TABLE_UPTO:
        _history_table(customer_id, entries)
    else:
        _history_lines(customer_id, entries)


HISTORY_COLUMNS = (
    "created_at",
    "recorded_at",
    "type",
    "id",
    "late",
    "path",
    "op",
    "before",
    "after",
)


def _history_rows(entries: Sequence[HistoryEntry]) -> Iterator[list[str]]:
    """A line per change, the activity's columns on each (so that `grep PATH` shows who
    changed it); an activity that changed nothing, one line with no path."""
    for e in entries:
        a = e.activity
        head = [
            format_time(a.created_at),
            format_time(a.recorded_at) if a.recorded_at else "",
            a.type,
            a.id,
            "late" if e.late else "",
        ]
        if not e.changes:
            yield [*head, "", "", "", ""]
        for c in e.changes:
            before, after = _sides(c, _plain)
            yield [*head, c.path, c.op, before, after]


def _path_width(paths: Iterable[str]) -> int:
    """Paths line up to the longest, up to a point: a few long ones should not push every
    value to the far right."""
    return min(max(map(len, paths), default=0), 48)


def _history_lines(customer_id: str, entries: Sequence[HistoryEntry]) -> None:
    """A long history as lines, written as they are made: each activity's line, then one
    indented line per change."""
    width = _path_width(c.path for e in entries for c in e.changes)
    out = sys.stdout
    out.write(
        f"{customer_id}: {len(entries):,} activities (one line per change; --json for programs)\n"
    )
    for e in entries:
        a = e.activity
        rec = f"  recorded {format_time(a.recorded_at)}" if a.recorded_at else ""
        late = "  (late)" if e.late else ""
        out.write(f"{format_time(a.created_at)}  {a.type}  {a.id}{rec}{late}\n")
        if not e.changes:
            out.write("    (changed nothing)\n")
        for c in e.changes:
            before, after = _sides(c, _plain)
            out.write(f"    {c.path:<{width}}  {before} -> {after}\n")


def _history_table(customer_id: str, entries: Sequence[HistoryEntry]) -> None:
    table = Table(
        title=f"{customer_id}: {len(entries):,} activit{'y' if len(entries) == 1 else 'ies'}",
        header_style="bold",
    )
    for col in ("created_at", "recorded_at", "activity", "field"):
        table.add_column(col, no_wrap=True)  # identifiers, paths and times stay whole
    for col in ("before", "after"):
        table.add_column(col, overflow="fold")
    for e in entries:
        a = e.activity
        rec = format_time(a.recorded_at) if a.recorded_at else ""
        head = f"{escape(a.type)}\n{escape(a.id)}" + ("\n[yellow](late)[/]" if e.late else "")
        if not e.changes:
            table.add_row(
                format_time(a.created_at),
                rec,
                head,
                "[dim](changed nothing)[/]",
                "",
                "",
                end_section=True,
            )
            continue
        for i, c in enumerate(e.changes):
            before, after = _sides(c)
            first = i == 0
            table.add_row(
                format_time(a.created_at) if first else "",
                rec if first else "",
                head if first else "",
                escape(c.path),
                before,
                after,
                end_section=i == len(e.changes) - 1,
            )
    Console().print(table)


@app.command(
    epilog=examples(
        "custate diff cust_1 --as-of 2024-01-01 --as-of 2024-06-30",
        "custate diff cust_1 --as-of 2024-03-01 --known-at 2024-03-02 --known-at 2024-04-01",
    )
)
def diff(
    customer_id: Customer,
    as_of: Annotated[
        list[str] | None,
        typer.Option(
            "--as-of",
            help="Twice (T1, T2): what changed in business time. Once with --known-at twice: "
            "the business time T asked about.",
        ),
    ] = None,
    known_at: Annotated[
        list[str] | None,
        typer.Option(
            "--known-at",
            help="Twice (K1, K2): what activities recorded between them changed about T.",
        ),
    ] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """What changed for a customer: between two business times (--as-of T1 --as-of T2), or
    about one time as known at two moments (--as-of T --known-at K1 --known-at K2), with the
    activities responsible."""
    ts = [cut(v, "--as-of") for v in as_of or []]
    ks = [cut(v, "--known-at") for v in known_at or []]
    if len(ks) == 2 and len(ts) <= 1:
        mode = "known_at"
    elif len(ts) == 2 and len(ks) <= 1:
        mode = "as_of"
    else:
        fail(
            "give --as-of T1 --as-of T2 (business time), or --as-of T --known-at K1 "
            "--known-at K2 (what late activities changed about T)"
        )
        return
    with customer_store(store) as cs:
        if mode == "as_of":
            t1, t2 = ts
            assert t1 is not None
            assert t2 is not None
            result = cs.diff_as_of(customer_id, t1, t2, ks[0] if ks else None)
        else:
            k1, k2 = ks
            assert k1 is not None
            assert k2 is not None
            result = cs.diff_known_at(customer_id, ts[0] if ts else None, k1, k2)
    if as_json:
        _json_out(result.to_json())
        return
    _diff_table(result)


def _t(v: Any) -> str:
    return "now" if v is None else format_time(v)


def _diff_table(d: StateDiff) -> None:
    out = Console(soft_wrap=True)
    if d.kind == "as_of":
        title = f"{d.customer_id}: {_t(d.as_of[0])} -> {_t(d.as_of[1])} (business time)"
    else:
        title = (
            f"{d.customer_id}: about {_t(d.as_of[0])}, known at {_t(d.known_at[0])} -> "
            f"{_t(d.known_at[1])}"
        )
    if not d.changes:
        out.print(f"{title}: no changes ({len(d.activities)} activities in between)")
        return
    summary = f"{len(d.changes)} field(s) changed by {len(d.activities)} activit(ies)"
    if len(d.changes) > TABLE_UPTO or not sys.stdout.isatty():
        width = _path_width(c.path for c in d.changes)
        sys.stdout.write(f"{title}\n")
        for c in d.changes:
            before, after = _sides(c, _plain)
            sys.stdout.write(f"{c.path:<{width}}  {before} -> {after}  by {_few(c.activities)}\n")
        sys.stdout.write(summary + "\n")
        return
    table = Table(title=title, header_style="bold")
    table.add_column("field", no_wrap=True)
    for col in ("before", "after", "activities"):
        table.add_column(col, overflow="fold")
    for c in d.changes:
        before, after = _sides(c)
        table.add_row(escape(c.path), before, after, escape(_few(c.activities)))
    out.print(table)
    out.print(summary)


def _few(ids: Sequence[str]) -> str:
    """The activities responsible for a change, for people: a field a whole history moved
    (`loyalty.points`) names thousands; the first and last two, and how many (`--json` has
    them all)."""
    if len(ids) <= 5:
        return ", ".join(ids)
    return f"{ids[0]}, {ids[1]}, ..., {ids[-2]}, {ids[-1]} ({len(ids):,} in all)"


@app.command(
    epilog=examples(
        "custate explain cust_1 loyalty.points",
        "custate explain cust_1 loyalty.cards.v_1.balance --as-of 2024-03-01",
    )
)
def explain(
    customer_id: Customer,
    path: Annotated[
        str,
        typer.Argument(
            help="Field path, e.g. loyalty.cards.v_1.balance or loyalty.tiers.camp_1.tier_id."
        ),
    ],
    as_of: Annotated[str | None, typer.Option("--as-of", help="Business time T.")] = None,
    known_at: Annotated[str | None, typer.Option("--known-at", help="Record time K.")] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Which activity set a field's value (also when it arrived late), and the earlier values."""
    t, k = cut(as_of, "--as-of"), cut(known_at, "--known-at")
    with customer_store(store) as cs:
        ex = cs.explain(customer_id, path, t, k)
    if as_json:
        _json_out(ex.to_json())
        return
    out = Console(soft_wrap=True)
    if not ex.chain:
        out.print(f"{escape(path)}: no activity ever set this field")
        raise typer.Exit(EXIT_BAD_RECORDS if not ex.present else 0)
    s = ex.set_by
    assert s is not None
    value = _value(ex.value) if ex.present else ABSENT
    late = " [yellow](arrived late)[/]" if ex.chain[-1].late else ""
    out.print(f"[bold]{escape(path)}[/] = {value}")
    out.print(
        f"set by [bold]{escape(s.id)}[/] ({escape(s.type)}), created_at {format_time(s.created_at)}, "
        f"recorded {_t(s.recorded_at)}{late}"
    )
    if len(ex.chain) > TABLE_UPTO or not sys.stdout.isatty():
        out.print(f"how it got there (fold order), {len(ex.chain):,} steps:")
        for step in ex.chain:
            a = step.activity
            before, after = _sides(step, _plain)
            late = "  (late)" if step.late else ""
            sys.stdout.write(
                f"{format_time(a.created_at)}  {before} -> {after}  {a.type}  {a.id}  "
                f"recorded {_t(a.recorded_at)}{late}\n"
            )
        return
    table = Table(title="how it got there (fold order)", header_style="bold")
    for col in ("created_at", "recorded_at", "activity"):
        table.add_column(col, no_wrap=True)
    for col in ("before", "after"):
        table.add_column(col, overflow="fold")
    for step in ex.chain:
        a = step.activity
        table.add_row(
            format_time(a.created_at),
            _t(a.recorded_at) + (" (late)" if step.late else ""),
            f"{escape(a.type)}\n{escape(a.id)}",
            *_sides(step),
        )
    out.print(table)


@app.command(epilog=examples("custate gaps", "custate gaps cust_1 --format tsv"))
def gaps(
    customer_id: Annotated[
        str | None, typer.Argument(help="One customer; without it, every customer.")
    ] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
    fmt: FormatOption = None,
) -> None:
    """Balance-continuity breaks per card: an activity is missing between the two named."""
    form = output_format(fmt, as_json, "ndjson")
    with customer_store(store) as cs:
        found = cs.gaps(customer_id)
    out = sys.stdout.buffer
    if form == "ndjson":
        for g in found:
            out.write(orjson.dumps(g.to_json()) + b"\n")
        return
    if form == "json":
        out.write(orjson.dumps([g.to_json() for g in found]) + b"\n")
        return
    _gaps_table(found, form)


def _gaps_table(found: Sequence[CardGap], form: str) -> None:
    if not found and form == "table":
        Console().print("No gaps: every card's balances add up.")
        return
    people = form == "table" and sys.stdout.isatty()
    show_records(
        f"{len(found):,} gap(s)",
        [
            Column("customer_id"),
            Column("card_id"),
            Column("at"),
            Column("previous_activity_id"),
            Column("activity_id"),
            Column("expected", right=True),
            Column("balance", right=True),
            Column("missing", right=True),
        ],
        [
            [
                g.customer_id,
                g.card_id,
                format_time(g.at),
                g.previous_activity_id or "",
                g.activity_id,
                number(g.previous_balance + g.delta, people),
                number(g.balance, people),
                f"{g.missing:+,}" if people else str(g.missing),
            ]
            for g in found
        ],
        form,
    )


@app.command(
    epilog=examples(
        "custate report cust_1 -o cust_1.html",
        "custate report cust_1 -o q1.html --as-of 2024-03-31",
    )
)
def report(
    customer_id: Customer,
    output: Annotated[Path, typer.Option("-o", "--output", help="The HTML file to write.")],
    as_of: Annotated[str | None, typer.Option("--as-of", help="Business time T.")] = None,
    store: StoreOption = None,
) -> None:
    """Write a self-contained HTML report: balances and tiers over time, segments, orders,
    corrections made by late activities, and gaps."""
    from custate.adapters.api import store_url
    from custate.adapters.report import Provenance, campaign_names, render_report
    from custate.domain import fold

    t = cut(as_of, "--as-of")
    made = Provenance(store_url(store), datetime.now(UTC))
    with customer_store(store) as cs:
        entries = cs.history(customer_id, end=t)
        activities = [s.activity for s in cs.activities(customer_id)]
    # The state folded straight from the events (as `replay` does), which also name the
    # campaigns: one read of them.
    state = fold(activities, customer_id, as_of=t)
    page = render_report(
        customer_id, entries, state, t, provenance=made, campaigns=campaign_names(activities, t)
    )
    output.write_text(page, encoding="utf-8")
    Console(stderr=True).print(f"wrote {output} ({len(entries):,} activities)")
