"""One customer as a self-contained HTML page: inline CSS and inline SVG drawn here, no
script, no network. A timeline of points balance per loyalty card, tier per campaign and
segment membership as spans; orders by status; the corrections late activities made; the
gaps (activities missing upstream)."""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from custate.domain import CustomerState, format_time
from custate.projections.audit import ADDED, REMOVED, HistoryEntry, corrections

W = 1000  # chart width (viewBox units)
LEFT = 170  # room for lane labels
# Characters that fit: a lane label in LEFT (12px ids such as a campaign's, up to ~8 units a
# character), and per unit of a span's width (11px, ~6.5).
LANE_CHARS = 19
SPAN_CHAR_W = 6.5
RIGHT = 20
PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777")

_CARD_BALANCE = re.compile(r"^loyalty\.cards\.(.+)\.balance$")
_TIER = re.compile(r"^loyalty\.tiers\.(.+)\.(tier_id|tier_name)$")
_SEGMENT = re.compile(r"^segments\.(.+)\.(entered_at|name)$")


@dataclass
class _Span:
    label: str
    start: datetime
    end: datetime | None = None


@dataclass
class _Series:
    points: dict[str, list[tuple[datetime, int]]] = field(default_factory=dict)
    tiers: dict[str, list[_Span]] = field(default_factory=dict)
    segments: dict[str, list[_Span]] = field(default_factory=dict)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _v(value: Any) -> str:
    return _e(orjson.dumps(value).decode())


def _series(entries: Sequence[HistoryEntry]) -> _Series:
    s = _Series()
    seg_names: dict[str, str] = {}
    tier_names: dict[str, str] = {}  # tier id -> name
    for e in entries:
        at = e.activity.created_at
        for c in e.changes:
            m = _CARD_BALANCE.match(c.path)
            if m:
                pts = s.points.setdefault(m.group(1), [])
                if c.op == REMOVED:
                    pts.append((at, 0))
                elif isinstance(c.after, int):
                    pts.append((at, c.after))
                continue
            m = _TIER.match(c.path)
            if m:
                camp, leaf = m.group(1), m.group(2)
                spans = s.tiers.setdefault(camp, [])
                if leaf == "tier_name":
                    if c.op != REMOVED and c.after and spans:
                        tier_names[spans[-1].label] = str(c.after)
                    continue
                if spans and spans[-1].end is None:
                    spans[-1].end = at
                if c.op != REMOVED:
                    spans.append(_Span(str(c.after), at))
                continue
            m = _SEGMENT.match(c.path)
            if m:
                sid, leaf = m.group(1), m.group(2)
                spans = s.segments.setdefault(sid, [])
                if leaf == "name" and c.after:
                    seg_names[sid] = str(c.after)
                elif leaf == "entered_at":
                    if c.op == ADDED:
                        spans.append(_Span(sid, at))
                    elif c.op == REMOVED and spans and spans[-1].end is None:
                        spans[-1].end = at
    for spans in s.tiers.values():
        for sp in spans:
            sp.label = tier_names.get(sp.label, sp.label)
    s.segments = {seg_names.get(sid, sid): spans for sid, spans in s.segments.items()}
    for lane, spans in s.segments.items():
        for sp in spans:
            sp.label = lane
    return s


def _short(label: str, n: int = 24) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


class _Axis:
    def __init__(self, t0: datetime, t1: datetime) -> None:
        self.t0 = t0
        self.span = max((t1 - t0).total_seconds(), 1.0)

    def x(self, t: datetime) -> float:
        return LEFT + (W - LEFT - RIGHT) * (t - self.t0).total_seconds() / self.span

    def ticks(self, y0: float, y1: float, n: int = 6) -> str:
        out = []
        for i in range(n + 1):
            x = LEFT + (W - LEFT - RIGHT) * i / n
            t = self.t0.timestamp() + self.span * i / n
            label = datetime.fromtimestamp(t, self.t0.tzinfo).strftime("%Y-%m-%d")
            out.append(
                f'<line x1="{x:.1f}" y1="{y0:.1f}" x2="{x:.1f}" y2="{y1:.1f}" class="grid"/>'
                f'<text x="{x:.1f}" y="{y1 + 14:.1f}" class="tick" '
                f'text-anchor="{"start" if i == 0 else "end" if i == n else "middle"}">'
                f"{label}</text>"
            )
        return "".join(out)


def _balance_chart(s: _Series, axis: _Axis, end: datetime) -> str:
    h, top, bottom = 280, 20, 250
    series = {k: v for k, v in s.points.items() if v}
    if not series:
        return '<p class="empty">No loyalty card balances.</p>'
    vmax = max(max(p for _, p in v) for v in series.values()) or 1
    vmin = min(0, *(min(p for _, p in v) for v in series.values()))

    def y(v: int) -> float:
        return bottom - (bottom - top) * (v - vmin) / max(vmax - vmin, 1)

    parts = [f'<svg id="balance-chart" viewBox="0 0 {W} {h + 10}" role="img">']
    parts.append(axis.ticks(top, bottom))
    for v in (vmin, (vmin + vmax) // 2, vmax):
        parts.append(
            f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" class="tick" text-anchor="end">{v:,}</text>'
        )
    legend = []
    for i, (card, pts) in enumerate(sorted(series.items())):
        color = PALETTE[i % len(PALETTE)]
        coords: list[str] = []
        prev: int | None = None
        for t, v in pts:
            x = axis.x(t)
            if prev is not None:
                coords.append(f"{x:.1f},{y(prev):.1f}")  # step: hold the value until it changes
            coords.append(f"{x:.1f},{y(v):.1f}")
            prev = v
        if prev is not None:
            coords.append(f"{axis.x(end):.1f},{y(prev):.1f}")
        parts.append(
            f'<polyline class="balance" data-card="{_e(card)}" fill="none" stroke="{color}" '
            f'stroke-width="2" points="{" ".join(coords)}"><title>{_e(card)}</title></polyline>'
        )
        legend.append(
            f'<span class="key" style="background:{color}"></span>{_e(card)} '
            f"({pts[-1][1]:,} points)"
        )
    parts.append("</svg>")
    return "".join(parts) + f'<p class="legend">{" &nbsp; ".join(legend)}</p>'


def _lanes(svg_id: str, lanes: dict[str, list[_Span]], axis: _Axis, end: datetime) -> str:
    lanes = {k: v for k, v in lanes.items() if v}
    if not lanes:
        return '<p class="empty">None.</p>'
    lane_h, top = 26, 6
    h = top + lane_h * len(lanes) + 24
    parts = [f'<svg id="{svg_id}" viewBox="0 0 {W} {h}" role="img">']
    parts.append(axis.ticks(top, h - 22))
    labels: dict[str, str] = {}
    for i, (lane, spans) in enumerate(sorted(lanes.items())):
        y = top + i * lane_h
        parts.append(
            f'<text x="{LEFT - 6}" y="{y + 17}" class="lane" text-anchor="end">'
            f"{_e(_short(lane, LANE_CHARS))}"
            f"<title>{_e(lane)}</title></text>"
        )
        for sp in spans:
            color = labels.setdefault(sp.label, PALETTE[len(labels) % len(PALETTE)])
            x0, x1 = axis.x(sp.start), axis.x(sp.end or end)
            parts.append(
                f'<rect class="span" x="{x0:.1f}" y="{y + 3}" width="{max(x1 - x0, 2):.1f}" '
                f'height="{lane_h - 6}" fill="{color}" rx="3"><title>{_e(sp.label)}: '
                f"{format_time(sp.start)} - {format_time(sp.end) if sp.end else 'now'}"
                f"</title></rect>"
            )
            fits = int((x1 - x0 - 8) / SPAN_CHAR_W)  # what the span has room for
            if fits >= 4:
                parts.append(
                    f'<text x="{x0 + 4:.1f}" y="{y + 17}" class="spanlabel">'
                    f"{_e(_short(sp.label, fits))}</text>"
                )
    parts.append("</svg>")
    return "".join(parts)


def _orders(state: CustomerState) -> str:
    counts = Counter(o.status or "unknown" for o in state.orders.values())
    if not counts:
        return '<p class="empty">No orders.</p>'
    top = max(counts.values())
    rows = []
    for i, (status, n) in enumerate(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))):
        width = 600 * n / top
        rows.append(
            f'<g transform="translate(0,{i * 26})"><text x="{LEFT - 6}" y="17" class="lane" '
            f'text-anchor="end">{_e(status)}</text><rect class="bar" x="{LEFT}" y="3" '
            f'width="{width:.1f}" height="20" fill="{PALETTE[i % len(PALETTE)]}"/>'
            f'<text x="{LEFT + width + 6:.1f}" y="17" class="tick">{n:,}</text></g>'
        )
    h = 26 * len(counts) + 6
    return f'<svg id="orders-chart" viewBox="0 0 {W} {h}" role="img">{"".join(rows)}</svg>'


def _corrections(entries: Sequence[HistoryEntry]) -> str:
    late = corrections(entries)
    if not late:
        return '<p class="empty">No activity arrived late: nothing shown was ever corrected.</p>'
    rows = []
    for e in late:
        a = e.activity
        changes = "<br>".join(
            f"<code>{_e(c.path)}</code>: {'—' if c.op == ADDED else _v(c.before)} &rarr; "
            f"{'—' if c.op == REMOVED else _v(c.after)}"
            for c in e.changes
            if not c.path.startswith("activities.")
        )
        rows.append(
            f"<tr><td>{_e(format_time(a.created_at))}</td>"
            f"<td>{_e(format_time(a.recorded_at)) if a.recorded_at else ''}</td>"
            f"<td>{_e(a.type)}<br><small>{_e(a.id)}</small></td>"
            f"<td>{changes or '<i>changed nothing</i>'}</td></tr>"
        )
    return (
        f"<p>{len(late):,} activit{'y' if len(late) == 1 else 'ies'} arrived after one that "
        "sorts after it; the state shown before it arrived was corrected as follows.</p>"
        '<table id="corrections"><tr><th>created_at</th><th>recorded</th><th>activity</th>'
        f"<th>what it changed</th></tr>{''.join(rows)}</table>"
    )


def _gaps(state: CustomerState) -> str:
    if not state.gaps:
        return '<p class="empty">No gaps: every card balance adds up.</p>'
    rows = "".join(
        f"<tr><td>{_e(g.card_id)}</td><td>{_e(format_time(g.at))}</td>"
        f"<td>{_e(g.previous_activity_id or '')}</td><td>{_e(g.activity_id)}</td>"
        f"<td>{g.previous_balance + g.delta:,}</td><td>{g.balance:,}</td><td>{g.missing:+,}</td></tr>"
        for g in state.gaps
    )
    return (
        '<table id="gaps"><tr><th>card</th><th>at</th><th>after</th><th>activity</th>'
        f"<th>expected</th><th>reported</th><th>missing</th></tr>{rows}</table>"
    )


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1060px;color:#111827;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e5e7eb}
.meta{color:#4b5563}svg{width:100%;height:auto;display:block}
.grid{stroke:#e5e7eb;stroke-width:1}.tick{font-size:11px;fill:#6b7280}
.lane{font-size:12px;fill:#374151}.spanlabel{font-size:11px;fill:#fff}
.legend{font-size:12px;color:#374151}.key{display:inline-block;width:10px;height:10px;
margin-right:4px;border-radius:2px}.empty{color:#6b7280;font-style:italic}
table{border-collapse:collapse;width:100%;font-size:12px}td,th{border:1px solid #e5e7eb;
padding:4px 6px;text-align:left;vertical-align:top}th{background:#f9fafb}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px}dt{color:#6b7280}
"""


def render_report(
    customer_id: str,
    entries: Sequence[HistoryEntry],
    state: CustomerState,
    as_of: datetime | None = None,
) -> str:
    """The report as one HTML document. `entries`: the customer's history (up to `as_of`);
    `state`: the state at `as_of`."""
    times = [e.activity.created_at for e in entries]
    end = as_of if as_of is not None and times and as_of >= times[-1] else None
    if times:
        t0, t1 = times[0], end or times[-1]
        axis = _Axis(t0, t1)
        s = _series(entries)
        timeline = (
            "<h2>Points balance per loyalty card</h2>"
            + _balance_chart(s, axis, t1)
            + "<h2>Tier per campaign</h2>"
            + _lanes("tier-chart", s.tiers, axis, t1)
            + "<h2>Segment membership</h2>"
            + _lanes("segment-chart", s.segments, axis, t1)
        )
    else:
        timeline = '<p class="empty">No activities.</p>'
    p = state.profile
    summary = (
        f"<dl><dt>status</dt><dd>{_e(p.status)}</dd><dt>name</dt><dd>{_e(p.name or '')}</dd>"
        f"<dt>points</dt><dd>{state.points:,}</dd>"
        f"<dt>tiers</dt><dd>{_e(', '.join(f'{c}: {t.tier_name or t.tier_id}' for c, t in sorted(state.tiers.items())) or '—')}</dd>"
        f"<dt>segments</dt><dd>{_e(', '.join(sg.name or sid for sid, sg in sorted(state.segments.items())) or '—')}</dd>"
        f"<dt>activities</dt><dd>{len(entries):,}</dd></dl>"
    )
    cut = f"as of {format_time(as_of)}" if as_of is not None else "now"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>custate: {_e(customer_id)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{CSS}</style></head><body>"
        f"<h1>Customer {_e(customer_id)}</h1><p class='meta'>State {_e(cut)}, from "
        f"{len(entries):,} activities in business-time order.</p>{summary}"
        f"{timeline}<h2>Orders by status</h2>{_orders(state)}"
        f"<h2>Corrections by late activities</h2>{_corrections(entries)}"
        f"<h2>Gaps (activities missing upstream)</h2>{_gaps(state)}"
        "</body></html>\n"
    )
