"""`custate status`: the store, its partitions, the read model's position and lag, leases."""

from __future__ import annotations

import sys
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from custate.adapters.cli.app import app, examples
from custate.adapters.cli.common import open_store
from custate.adapters.cli.store_options import JsonOption, StoreOption


@app.command(epilog=examples("custate status", "custate status --json"))
def status(store: StoreOption = None, as_json: JsonOption = False) -> None:
    """Show the store, its partitions, the read model's position and lag, and which projector
    worker holds which partition (PostgreSQL)."""
    cs = open_store(store, existing=True)
    try:
        s = cs.status()
    finally:
        cs.close()
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(s) + b"\n")
        return
    out = Console(soft_wrap=True)
    rm = s["read_model"]
    lag = rm["lag"]
    rebuild = s["rebuild_in_progress"]
    for name, value in [
        ("store", s["store"]),
        ("backend", s["backend"]),
        ("activities", f"{s['activities']:,}"),
        ("partitions", str(s["partitions"])),
        ("schema", _schema(s["schema"])),
        ("generation", str(s["generation"])),
        ("fold", _fold(s["fold_version"])),
        ("rebuild", "none" if rebuild is None else f"building generation {rebuild}"),
        ("position", f"{rm['position']:,} of {rm['head']:,}"),
        (
            "lag",
            f"{'about ' if lag['estimated'] else ''}{lag['activities']:,} activities, "
            f"{lag['seconds']:.1f} s",
        ),
        *([("projector", s["projector"] or "none running")] if "projector" in s else []),
    ]:
        out.print(f"{name:<11} {value}", markup=False, highlight=False)
    leases = s.get("leases")
    if leases:
        t = Table(title="leases")
        t.add_column("partition", justify="right", no_wrap=True)
        t.add_column("worker", no_wrap=True)
        t.add_column("epoch", justify="right", no_wrap=True)
        t.add_column("held", no_wrap=True)
        t.add_column("position", justify="right", no_wrap=True)
        for row in leases:
            t.add_row(
                str(row["partition"]),
                row["worker"] or "-",
                str(row["epoch"]),
                "yes" if row["held"] else "no",
                f"{s['positions'][str(row['partition'])]:,}",
            )
        out.print(t)


def _schema(schema: dict[str, Any]) -> str:
    if schema["current"]:
        return f"revision {schema['revision']} (current)"
    return f"revision {schema['revision'] or 'none'}; this custate's is {schema['head']}"


def _fold(fold: dict[str, Any]) -> str:
    built = "unrecorded" if fold["built_with"] is None else f"v{fold['built_with']}"
    said = f"built with {built}, current v{fold['current']}"
    return said + (
        " (stale: custate rebuild, or serve/project --follow do it)" if fold["stale"] else ""
    )
