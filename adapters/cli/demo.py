"""`custate demo`: a newcomer's first run, on sample histories shipped in the package."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from custate.adapters.cli.app import app, examples
from custate.adapters.cli.common import fail, open_store
from custate.adapters.cli.store_options import StoreOption

if TYPE_CHECKING:
    from custate.adapters.api import Custate
    from custate.domain import CustomerState

DEMO_STORE = "sqlite:///custate-demo.db"
# Bookkeeping that changes with every activity; the demo shows what a reader cares about.
NOISE = (".updated_at", ".updated_by", ".at", ".last_at", ".since", ".entered_at")
DEMO_DATA = "demo.ndjson.gz"


def demo_data_path() -> Path:
    return Path(str(resources.files("custate.adapters") / "data" / DEMO_DATA))


@app.command(epilog=examples("custate demo"))
def demo(store: StoreOption = None) -> None:
    """Load sample histories into a fresh store; show a customer now, earlier, and the change."""
    from custate.adapters.readers import read_path
    from custate.domain import format_time

    url = store or DEMO_STORE
    _fresh(url, given=store is not None)
    out = Console()
    data = demo_data_path()
    cs = open_store(url)
    try:
        out.print(
            f"Loading [bold]{data.name}[/] (sample histories, delivered out of order and "
            f"with duplicates) into [bold]{url}[/] ..."
        )
        report = cs.ingest_items(read_path(str(data)))
        out.print(
            f"{report.read:,} deliveries: {report.accepted:,} activities stored, "
            f"{report.duplicates:,} duplicates ignored, {report.rejected + report.conflicts} rejected."
        )
        customer = _pick(cs)
        now = cs.state(customer)
        first, last = now.activities.first_at, now.activities.last_at
        assert first is not None
        assert last is not None
        earlier = first + (last - first) / 2
        then = cs.state(customer, as_of=earlier)
    finally:
        cs.close()
    out.print()
    _side_by_side(out, customer, then, now, earlier)
    _changes(out, then, now)
    at = format_time(earlier)
    out.print()
    out.print("[bold]Try next[/]")
    out.soft_wrap = True  # commands stay on one line, to copy
    for cmd in try_next(customer, at, format_time(datetime.now().astimezone()), url):
        out.print(f"  {cmd}", markup=False, highlight=False)


def try_next(customer: str, at: str, now: str, url: str) -> tuple[str, ...]:
    """The commands the demo suggests, on its store: the state at cuts, the audit (history,
    diff, explain, report), the queries, the rejects, the server and the store-less fold.
    A comment after two spaces and `#` says what a line is (and is not part of it)."""
    s = f"--store {url}"
    return (
        f"custate state {customer} {s}",
        f"custate state {customer} --as-of {at} {s}",
        f"custate state {customer} --known-at {now} {s}",
        f"custate history {customer} {s}  # every activity, and what it changed",
        f"custate diff {customer} --as-of {at} --as-of {now} {s}  # from then to now",
        f"custate explain {customer} loyalty.points {s}  # which activities made the points",
        f"custate report {customer} -o {customer}.html {s}  # a page an auditor reads",
        f"custate customers --status active {s}  # who matches; --format tsv|json|ndjson",
        f"custate rejects {s}",
        f"custate serve {s}  # webhooks in, reads out (pip install 'custate[server]')",
        f"custate ingest my-activities.ndjson {s}",
        "custate fold activities.ndjson  # no store: state straight from files",
    )


def _fresh(url: str, given: bool) -> None:
    """The demo always starts from an empty store; it deletes only its own default file."""
    from custate.adapters.api import Custate, store_file

    path = store_file(url)
    if path is not None:
        if not given:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        elif path.exists() and path.stat().st_size > 0:
            fail(
                f"{url}: the demo needs a fresh store; this one exists (remove it, or omit --store)"
            )
        return
    cs = Custate(url)
    try:
        if cs.count_activities():
            fail(f"{url}: the demo needs a fresh store; this one already holds activities")
    finally:
        cs.close()


def _pick(cs: Custate) -> str:
    """A customer whose story shows most: many activities, tier and segment changes."""
    best, best_score = "", -1
    for cid in cs.customer_ids():
        s = cs.state(cid)
        score = s.activities.count + 20 * len(s.tiers) + 5 * len(s.segments) + len(s.cards)
        if score > best_score:
            best, best_score = cid, score
    return best


def _summary(s: CustomerState) -> dict[str, str]:
    rows: dict[str, str] = {
        "status": s.profile.status,
        "name": s.profile.name or "",
        "loyalty points": f"{s.points:,}",
    }
    for cid, c in sorted(s.cards.items()):
        rows[f"card {c.code or cid}"] = f"{c.balance or 0:,} pts, {c.pending_points:,} pending"
    for camp, t in sorted(s.tiers.items()):
        rows[f"tier in {camp}"] = f"{t.tier_name or t.tier_id}"
    for gid, g in sorted(s.gift_cards.items()):
        rows[f"gift card {g.code or gid}"] = f"{(g.balance or 0) / 100:,.2f}"
    rows["segments"] = ", ".join(seg.name or sid for sid, seg in sorted(s.segments.items()))
    statuses = Counter(o.status or "?" for o in s.orders.values())
    rows["orders"] = ", ".join(f"{n} {st.lower()}" for st, n in sorted(statuses.items()))
    r = s.redemptions
    rows["redemptions"] = f"{r.succeeded} ok, {r.failed} failed, {r.rollback_succeeded} rolled back"
    rows["activities"] = f"{s.activities.count:,}"
    return rows


def _side_by_side(
    out: Console, customer: str, then: CustomerState, now: CustomerState, earlier: datetime
) -> None:
    from custate.domain import format_time

    a, b = _summary(then), _summary(now)
    table = Table(title=f"Customer {customer}", header_style="bold")
    table.add_column("")
    table.add_column(f"as of {format_time(earlier)[:19]}Z")
    table.add_column("now")
    for key in dict.fromkeys([*a, *b]):
        before, after = a.get(key, ""), b.get(key, "")
        style = "yellow" if before != after else None
        table.add_row(key, before, after, style=style)
    out.print(table)


def _changes(out: Console, then: CustomerState, now: CustomerState, limit: int = 20) -> None:
    from custate.projections.diff import diff_states

    changes = [
        c
        for c in diff_states(then.to_json(), now.to_json())
        if not c.path.startswith(("activities.", "gaps")) and not c.path.endswith(NOISE)
    ]
    table = Table(title=f"What changed in between ({len(changes)} fields)", header_style="bold")
    table.add_column("field", overflow="fold")
    table.add_column("before", overflow="fold")
    table.add_column("after", overflow="fold")
    for c in changes[:limit]:
        table.add_row(c.path, _show(c.before), _show(c.after))
    if len(changes) > limit:
        table.add_row(f"... and {len(changes) - limit} more", "", "")
    out.print(table)


def _show(value: Any) -> str:
    return "—" if value is None else str(value)
