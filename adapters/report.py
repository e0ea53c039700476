"""One customer as a self-contained HTML page an auditor can read on screen and print: inline
CSS and inline SVG drawn here, no script, no network.

The page opens with where it came from (customer, cuts, store with its password masked,
when and by which custate version it was made) and the state at the cut, with names beside
ids (program, tier, card code). Then timelines on one time axis: activities (late ones
marked), points balance and pending points per loyalty card, gift-card balances, tier per
program, segment membership; late activities and gaps are marked on each. Then orders by
status, the corrections late activities made, and the gaps. Printed (`@media print`), it
lays out on A4 with a page per section, charts kept whole and table headers repeated."""

from __future__ import annotations

import html
import importlib.metadata
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from custate.domain import Activity, CustomerState, format_time
from custate.domain.state import Gap
from custate.projections.audit import ADDED, REMOVED, ActivityRef, HistoryEntry, corrections

__all__ = ["Provenance", "campaign_names", "custate_version", "mask_password", "render_report"]

W = 1000  # chart width (viewBox units)
LEFT = 210  # room for lane labels: a name, and an id below it
RIGHT = 24
# Characters that fit in LEFT: a 12-unit name (~7 units a character), a 10-unit monospace
# id (~6); and per unit of a span's width (11-unit text, ~6.5).
NAME_CHARS = 25
ID_CHARS = 29
SPAN_CHAR_W = 6.5
VALUE_CHARS = 120  # a before/after value longer than this is cut, whole in its title
BINS = 120  # bars of the activity chart
PALETTE = ("#2563eb", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777", "#4b5563")

_PASSWORD = re.compile(r"^([A-Za-z][\w+.-]*://[^:/?#@]*:)[^/?#]*@")
_PASSWORD_PARAM = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def custate_version() -> str:
    """The installed custate's version, or "unknown" when it is not installed."""
    try:
        return importlib.metadata.version("custate")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where and when a report was made; its header shows this so that a printed copy says
    what it is. `store`: the store's URL (the page masks its password). `known_at`: the
    record-time cut; None means everything the store held when the report was made."""

    store: str
    made_at: datetime
    version: str = field(default_factory=custate_version)
    known_at: datetime | None = None


def mask_password(url: str) -> str:
    """The URL with any password replaced by `***`: `postgresql://u:***@host/db`."""
    return _PASSWORD_PARAM.sub(r"\1***", _PASSWORD.sub(r"\1***@", url))


def campaign_names(activities: Iterable[Activity], as_of: datetime | None = None) -> dict[str, str]:
    """Campaign (program) id -> name, as the activities' payloads name them (`campaign`);
    only activities up to `as_of`, the later naming winning. The state keeps campaign ids
    only. It reads the decoded views, not the raw payload: that is decoded on first use."""
    names: dict[str, str] = {}
    for a in activities:
        c = a.payload.campaign
        if c is not None and c.id and c.name and (as_of is None or a.created_at <= as_of):
            names[c.id] = c.name
    return names


# -- what the history says over time ----------------------------------------------------------

_Point = tuple[datetime, int, ActivityRef | None]  # time, value, the activity when it was late


@dataclass(slots=True)
class _Span:
    key: str  # tier id, segment id
    start: datetime
    late: ActivityRef | None = None  # the late activity that started it
    end: datetime | None = None
    end_late: ActivityRef | None = None


@dataclass(slots=True)
class _Series:
    points: dict[str, list[_Point]] = field(default_factory=dict)
    pending: dict[str, list[_Point]] = field(default_factory=dict)
    gift: dict[str, list[_Point]] = field(default_factory=dict)
    tiers: dict[str, list[_Span]] = field(default_factory=dict)
    segments: dict[str, list[_Span]] = field(default_factory=dict)
    tier_names: dict[str, str] = field(default_factory=dict)
    segment_names: dict[str, str] = field(default_factory=dict)
    codes: dict[str, str] = field(default_factory=dict)  # card id -> code
    programs: dict[str, str] = field(default_factory=dict)  # card id -> campaign id


def _series(entries: Sequence[HistoryEntry]) -> _Series:
    """One pass over every change of the history, by prefix (a full history has tens of
    thousands of changes)."""
    s = _Series()
    for e in entries:
        at = e.activity.created_at
        late = e.activity if e.late else None
        for c in e.changes:
            path = c.path
            if path[0] not in "lgs":  # none of loyalty., gift_cards., segments.
                continue
            if path.startswith("loyalty.cards."):
                card, _, leaf = path[14:].partition(".")
                if leaf == "balance" or leaf == "pending_points":
                    pts = (s.points if leaf == "balance" else s.pending).setdefault(card, [])
                    pts.append((at, 0 if c.op == REMOVED else int(c.after or 0), late))
                elif leaf == "code" and c.after:
                    s.codes[card] = str(c.after)
                elif leaf == "campaign_id" and c.after:
                    s.programs[card] = str(c.after)
            elif path.startswith("gift_cards."):
                card, _, leaf = path[11:].partition(".")
                if leaf == "balance":
                    value = 0 if c.op == REMOVED else int(c.after or 0)
                    s.gift.setdefault(card, []).append((at, value, late))
                elif leaf == "code" and c.after:
                    s.codes[card] = str(c.after)
                elif leaf == "campaign_id" and c.after:
                    s.programs[card] = str(c.after)
            elif path.startswith("loyalty.tiers."):
                camp, _, leaf = path[14:].partition(".")
                if leaf == "tier_name":
                    spans = s.tiers.get(camp)
                    if c.op != REMOVED and c.after and spans:
                        s.tier_names[spans[-1].key] = str(c.after)
                elif leaf == "tier_id":
                    spans = s.tiers.setdefault(camp, [])
                    if spans and spans[-1].end is None:
                        spans[-1].end, spans[-1].end_late = at, late
                    if c.op != REMOVED:
                        spans.append(_Span(str(c.after), at, late))
            elif path.startswith("segments."):
                sid, _, leaf = path[9:].partition(".")
                if leaf == "name" and c.after:
                    s.segment_names[sid] = str(c.after)
                elif leaf == "entered_at":
                    spans = s.segments.setdefault(sid, [])
                    if c.op == ADDED:
                        spans.append(_Span(sid, at, late))
                    elif c.op == REMOVED and spans and spans[-1].end is None:
                        spans[-1].end, spans[-1].end_late = at, late
    return s


# -- names beside ids -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Names:
    campaigns: Mapping[str, str]
    codes: Mapping[str, str]
    programs: Mapping[str, str]  # card id -> campaign id

    def program(self, campaign_id: str | None) -> tuple[str, str]:
        """(name, id); the name is empty when no activity named the campaign."""
        if not campaign_id:
            return ("no program", "")
        return (self.campaigns.get(campaign_id, ""), campaign_id)

    def card(self, card_id: str) -> tuple[str, str]:
        """(code, id); the code is empty when no activity gave it."""
        return (self.codes.get(card_id, ""), card_id)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _w(text: str) -> str:
    """Escaped, with line-break opportunities after the dots of paths and types, so that a
    narrow cell breaks them there rather than anywhere."""
    return _e(text).replace(".", ".<wbr>")


def _named(name: str, ident: str, block: bool = False) -> str:
    """A name with its id beside it (HTML), or below it (`block`, for table cells); either
    alone when there is only one."""
    if name and ident and name != ident:
        sep = "<br>" if block else " "
        return f'<span class="name">{_e(name)}</span>{sep}<code class="id">{_w(ident)}</code>'
    if ident:
        return f'<code class="id">{_w(ident)}</code>'
    return f'<span class="name">{_e(name)}</span>'


def _when(t: datetime | None) -> str:
    """A time for people (date, time to the millisecond unless it has microseconds), the
    exact ISO form in its title and `datetime`."""
    if t is None:
        return ""
    iso = format_time(t)
    clock = t.strftime("%H:%M:%S.%f")
    clock = clock[:-3] if clock.endswith("000") else f"{clock[:-3]}<wbr>{clock[-3:]}"
    return f'<time datetime="{iso}" title="{iso}">{t:%Y-%m-%d} {clock}</time>'


def _value(value: Any) -> str:
    text = orjson.dumps(value).decode()
    if len(text) <= VALUE_CHARS:
        return f'<span class="v">{_e(text)}</span>'
    return f'<span class="v" title="{_e(text)}">{_e(_clip(text, VALUE_CHARS))}</span>'


# -- charts -----------------------------------------------------------------------------------


class _Axis:
    def __init__(self, t0: datetime, t1: datetime) -> None:
        self.t0 = t0
        self.start = t0.timestamp()
        self.span = max((t1 - t0).total_seconds(), 1.0)
        self.scale = (W - LEFT - RIGHT) / self.span
        days = self.span / 86_400
        self.fmt = "%Y-%m-%d" if days > 3 else "%m-%d %H:%M" if days > 0.1 else "%H:%M:%S"

    def x(self, t: datetime) -> float:
        return LEFT + (t.timestamp() - self.start) * self.scale

    def ticks(self, y0: float, y1: float, n: int = 6) -> str:
        out = []
        for i in range(n + 1):
            x = LEFT + (W - LEFT - RIGHT) * i / n
            t = self.start + self.span * i / n
            label = datetime.fromtimestamp(t, self.t0.tzinfo).strftime(self.fmt)
            anchor = "start" if i == 0 else "end" if i == n else "middle"
            out.append(
                f'<line x1="{x:.1f}" y1="{y0:.1f}" x2="{x:.1f}" y2="{y1:.1f}" class="grid"/>'
                f'<text x="{x:.1f}" y="{y1 + 14:.1f}" class="tick" text-anchor="{anchor}">'
                f"{label}</text>"
            )
        return "".join(out)


def _nice(lo: int, hi: int, n: int = 4) -> list[int]:
    """Round tick values from at most `lo` to at least `hi`."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / n
    mag = 10 ** max(math.floor(math.log10(raw)), 0)
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    return list(range(first, hi + step, step))[: n + 2]


def _late_title(a: ActivityRef) -> str:
    rec = format_time(a.recorded_at) if a.recorded_at else "?"
    return f"late: {a.type} {a.id}, created {format_time(a.created_at)}, recorded {rec}"


def _gap_title(g: Gap) -> str:
    return (
        f"gap on {g.card_id} at {format_time(g.at)}: {g.previous_activity_id or '(start)'} left "
        f"{g.previous_balance:,}, {g.activity_id} added {g.delta:+,} and reports {g.balance:,} "
        f"({g.missing:+,} missing)"
    )


def _lane_label(y: float, name: str, ident: str) -> str:
    """A lane's name, and its id in small type below; whole in the title."""
    full = f"{name} ({ident})" if name and ident and name != ident else name or ident
    if name and ident and name != ident:
        return (
            f'<text x="{LEFT - 8}" y="{y - 3:.1f}" class="lane" text-anchor="end">'
            f"<title>{_e(full)}</title>{_e(_clip(name, NAME_CHARS))}</text>"
            f'<text x="{LEFT - 8}" y="{y + 10:.1f}" class="laneid" text-anchor="end">'
            f"<title>{_e(full)}</title>{_e(_clip(ident, ID_CHARS))}</text>"
        )
    return (
        f'<text x="{LEFT - 8}" y="{y + 4:.1f}" class="lane" text-anchor="end">'
        f"<title>{_e(full)}</title>{_e(_clip(full, NAME_CHARS))}</text>"
    )


def _activity_chart(entries: Sequence[HistoryEntry], gaps: Sequence[Gap], axis: _Axis) -> str:
    """Activities per stretch of business time, the late ones in amber; gaps as red lines."""
    all_bins = [0] * BINS
    late_bins = [0] * BINS
    width = (W - LEFT - RIGHT) / BINS
    per_second = BINS / axis.span
    start = axis.start
    for e in entries:
        i = min(int((e.activity.created_at.timestamp() - start) * per_second), BINS - 1)
        all_bins[i] += 1
        if e.late:
            late_bins[i] += 1
    top, bottom = 14, 110
    peak = max(all_bins) or 1
    parts = [f'<svg id="activity-chart" viewBox="0 0 {W} {bottom + 22}" role="img">']
    parts.append(axis.ticks(top, bottom))
    parts.append(
        f'<text x="{LEFT - 8}" y="{top + 8}" class="tick" text-anchor="end">{peak:,}</text>'
        f'<text x="{LEFT - 8}" y="{bottom}" class="tick" text-anchor="end">0</text>'
        f'<text x="{LEFT - 8}" y="{(top + bottom) / 2 + 4:.1f}" class="lane" '
        f'text-anchor="end">activities</text>'
    )
    for i, (n, n_late) in enumerate(zip(all_bins, late_bins, strict=True)):
        if not n:
            continue
        x = LEFT + i * width
        h = (bottom - top) * n / peak
        parts.append(
            f'<rect class="bin" x="{x:.1f}" y="{bottom - h:.1f}" width="{width - 0.6:.1f}" '
            f'height="{h:.1f}"><title>{n:,} activities, {n_late:,} late</title></rect>'
        )
        if n_late:
            hl = max((bottom - top) * n_late / peak, 1.5)
            parts.append(
                f'<rect class="late-marker late-bin" x="{x:.1f}" y="{bottom - hl:.1f}" '
                f'width="{width - 0.6:.1f}" height="{hl:.1f}">'
                f"<title>{n_late:,} late of {n:,}</title></rect>"
            )
    for g in gaps:
        x = axis.x(g.at)
        parts.append(
            f'<line class="gap-marker" x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{bottom}">'
            f"<title>{_e(_gap_title(g))}</title></line>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _step_chart(
    svg_id: str,
    line_class: str,
    series: Mapping[str, list[_Point]],
    gaps: Sequence[Gap],
    axis: _Axis,
    end: datetime,
    names: _Names,
    unit: str,
) -> str:
    """A step line per card (the value holds until it changes); a late activity's step
    marked with an amber dot, a gap with a red line from the expected to the reported value."""
    series = {k: v for k, v in series.items() if v}
    if not series:
        return ""
    lo = min(0, *(min(p[1] for p in v) for v in series.values()))
    hi = max(max(p[1] for p in v) for v in series.values())
    for g in gaps:
        if g.card_id in series:
            lo = min(lo, g.balance, g.previous_balance + g.delta)
            hi = max(hi, g.balance, g.previous_balance + g.delta)
    ticks = _nice(lo, hi)
    vlo, vhi = ticks[0], ticks[-1]
    top, bottom = 12, 212

    def y(v: int) -> float:
        return bottom - (bottom - top) * (v - vlo) / max(vhi - vlo, 1)

    parts = [f'<svg id="{svg_id}" viewBox="0 0 {W} {bottom + 22}" role="img">']
    parts.append(axis.ticks(top, bottom))
    for v in ticks:
        parts.append(
            f'<line x1="{LEFT}" y1="{y(v):.1f}" x2="{W - RIGHT}" y2="{y(v):.1f}" class="grid"/>'
            f'<text x="{LEFT - 8}" y="{y(v) + 4:.1f}" class="tick" text-anchor="end">{v:,}</text>'
        )
    markers: list[str] = []
    legend: list[str] = []
    for i, (card, pts) in enumerate(sorted(series.items())):
        color = PALETTE[i % len(PALETTE)]
        coords: list[str] = []
        prev = ""
        for t, v, late in pts:
            x, yv = f"{axis.x(t):.1f}", f"{y(v):.1f}"
            if prev:
                coords.append(f"{x},{prev}")
            coords.append(f"{x},{yv}")
            prev = yv
            if late is not None:
                markers.append(
                    f'<circle class="late-marker" cx="{x}" cy="{yv}" r="3.5">'
                    f"<title>{_e(_late_title(late))}: {v:,} {unit}</title></circle>"
                )
        coords.append(f"{axis.x(end):.1f},{prev}")
        code, _ = names.card(card)
        parts.append(
            f'<polyline class="{line_class}" data-card="{_e(card)}" fill="none" '
            f'stroke="{color}" stroke-width="2" points="{" ".join(coords)}">'
            f"<title>{_e(code or card)}</title></polyline>"
        )
        program = names.program(names.programs.get(card))
        legend.append(
            f'<li><span class="key" style="background:{color}"></span>{_named(code, card)} '
            f"<span class='dim'>in</span> {_named(*program)}: <b>{pts[-1][1]:,}</b> {unit}</li>"
        )
    for g in gaps:
        if g.card_id not in series:
            continue
        gx = axis.x(g.at)
        expected = g.previous_balance + g.delta
        markers.append(
            f'<g class="gap-marker"><title>{_e(_gap_title(g))}</title>'
            f'<line x1="{gx:.1f}" y1="{top}" x2="{gx:.1f}" y2="{bottom}" class="gap-line"/>'
            f'<line x1="{gx:.1f}" y1="{y(expected):.1f}" x2="{gx:.1f}" y2="{y(g.balance):.1f}" '
            f'class="gap-jump"/><path d="M{gx - 4:.1f},{y(g.balance) - 4:.1f}l8,8m0,-8l-8,8" '
            f'class="gap-jump"/></g>'
        )
    parts.extend(markers)
    parts.append("</svg>")
    return "".join(parts) + f'<ul class="legend">{"".join(legend)}</ul>'


def _lanes(
    svg_id: str,
    lanes: Mapping[str, list[_Span]],
    label: Mapping[str, tuple[str, str]],
    span_name: Mapping[str, str],
    axis: _Axis,
    end: datetime,
) -> str:
    """A lane per key (program, segment), its spans as bars; a span that a late activity
    started or ended has an amber triangle at that end."""
    lanes = {k: v for k, v in lanes.items() if v}
    if not lanes:
        return ""
    lane_h, top = 34, 6
    h = top + lane_h * len(lanes) + 24
    parts = [f'<svg id="{svg_id}" viewBox="0 0 {W} {h}" role="img">']
    parts.append(axis.ticks(top, h - 22))
    colors: dict[str, str] = {}
    markers: list[str] = []
    for i, (lane, spans) in enumerate(sorted(lanes.items(), key=lambda kv: label[kv[0]])):
        y = top + i * lane_h
        parts.append(_lane_label(y + lane_h / 2, *label[lane]))
        for sp in spans:
            color = colors.setdefault(sp.key, PALETTE[len(colors) % len(PALETTE)])
            x0, x1 = axis.x(sp.start), axis.x(sp.end or end)
            name = span_name.get(sp.key, sp.key)
            until = format_time(sp.end) if sp.end else "the cut"
            parts.append(
                f'<rect class="span" x="{x0:.1f}" y="{y + 4}" width="{max(x1 - x0, 2):.1f}" '
                f'height="{lane_h - 8}" fill="{color}" rx="3"><title>{_e(name)} ({_e(sp.key)}): '
                f"{format_time(sp.start)} to {until}</title></rect>"
            )
            fits = int((x1 - x0 - 8) / SPAN_CHAR_W)
            if fits >= 4:
                parts.append(
                    f'<text x="{x0 + 4:.1f}" y="{y + lane_h / 2 + 4:.1f}" class="spanlabel">'
                    f"{_e(_clip(name, fits))}</text>"
                )
            for t, late in ((sp.start, sp.late), (sp.end, sp.end_late)):
                if late is not None and t is not None:
                    x = axis.x(t)
                    markers.append(
                        f'<path class="late-marker" d="M{x - 5:.1f},{y:.1f}h10l-5,7z">'
                        f"<title>{_e(_late_title(late))}</title></path>"
                    )
    parts.extend(markers)
    parts.append("</svg>")
    return "".join(parts)


def _orders(state: CustomerState) -> str:
    counts = Counter(o.status or "unknown" for o in state.orders.values())
    if not counts:
        return '<p class="empty">No orders.</p>'
    peak = max(counts.values())
    rows = []
    for i, (status, n) in enumerate(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))):
        width = 600 * n / peak
        rows.append(
            f'<g transform="translate(0,{i * 26})"><text x="{LEFT - 8}" y="17" class="lane" '
            f'text-anchor="end">{_e(status)}</text><rect class="bar" x="{LEFT}" y="3" '
            f'width="{width:.1f}" height="20" fill="{PALETTE[i % len(PALETTE)]}"/>'
            f'<text x="{LEFT + width + 6:.1f}" y="17" class="tick">{n:,}</text></g>'
        )
    h = 26 * len(counts) + 6
    return f'<svg id="orders-chart" viewBox="0 0 {W} {h}" role="img">{"".join(rows)}</svg>'


# -- tables -----------------------------------------------------------------------------------


def _table(table_id: str, head: Sequence[tuple[str, str]], rows: Iterable[str]) -> str:
    """A table whose columns have the widths given (so long cells wrap instead of widening
    it), its header repeated on every printed page."""
    cols = "".join(f'<col style="width:{w}">' for _, w in head)
    ths = "".join(f"<th>{_e(h)}</th>" for h, _ in head)
    return (
        f'<table id="{table_id}"><colgroup>{cols}</colgroup><thead><tr>{ths}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _num(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def _state_tables(state: CustomerState, names: _Names) -> str:
    out = []
    if state.cards:
        rows = (
            f"<tr><td>{_named(*names.program(c.campaign_id), block=True)}</td>"
            f"<td>{_named(c.code or '', cid, block=True)}</td><td class='n'>{_num(c.balance)}</td>"
            f"<td class='n'>{_num(c.pending_points)}</td><td class='n'>{_num(c.expired_points)}"
            f"</td><td class='n'>{_num(c.total)}</td><td>{_e(c.next_expiration_date or '—')}"
            f"{f' ({c.next_expiration_points:,})' if c.next_expiration_points else ''}</td></tr>"
            for cid, c in sorted(state.cards.items())
        )
        out.append("<h3>Loyalty cards</h3>")
        out.append(
            _table(
                "cards",
                [
                    ("program", "24%"),
                    ("card", "26%"),
                    ("balance", "10%"),
                    ("pending", "9%"),
                    ("expired", "9%"),
                    ("earned", "10%"),
                    ("next expiry", "12%"),
                ],
                rows,
            )
        )
    if state.tiers:
        rows = (
            f"<tr><td>{_named(*names.program(camp), block=True)}</td>"
            f"<td>{_named(t.tier_name or '', t.tier_id or '', block=True)}</td><td>{_when(t.since)}</td>"
            f"<td>{_e(t.expires_at or '—')}</td></tr>"
            for camp, t in sorted(state.tiers.items())
        )
        out.append("<h3>Tiers</h3>")
        out.append(
            _table(
                "tiers",
                [("program", "34%"), ("tier", "30%"), ("since", "20%"), ("expires", "16%")],
                rows,
            )
        )
    if state.gift_cards:
        rows = (
            f"<tr><td>{_named(*names.program(g.campaign_id), block=True)}</td>"
            f"<td>{_named(g.code or '', gid, block=True)}</td><td class='n'>{_num(g.balance)}</td>"
            f"<td class='n'>{_num(g.total)}</td></tr>"
            for gid, g in sorted(state.gift_cards.items())
        )
        out.append("<h3>Gift cards</h3>")
        out.append(
            _table(
                "gift-cards",
                [("program", "34%"), ("card", "34%"), ("balance", "16%"), ("total", "16%")],
                rows,
            )
        )
    if state.segments:
        rows = (
            f"<tr><td>{_named(sg.name or '', sid, block=True)}</td><td>{_when(sg.entered_at)}</td></tr>"
            for sid, sg in sorted(state.segments.items())
        )
        out.append("<h3>Segments</h3>")
        out.append(_table("segments", [("segment", "64%"), ("entered", "36%")], rows))
    return "".join(out) or '<p class="empty">No cards, tiers, gift cards or segments.</p>'


def _corrections(entries: Sequence[HistoryEntry]) -> str:
    late = corrections(entries)
    if not late:
        return '<p class="empty">No activity arrived late: nothing shown was ever corrected.</p>'
    rows = []
    for e in late:
        a = e.activity
        changes = "".join(
            f'<div class="chg"><code>{_w(c.path)}</code> '
            f"{'<i>absent</i>' if c.op == ADDED else _value(c.before)} &rarr; "
            f"{'<i>absent</i>' if c.op == REMOVED else _value(c.after)}</div>"
            for c in e.changes
            if not c.path.startswith("activities.")
        )
        rows.append(
            f"<tr><td>{_when(a.created_at)}</td><td>{_when(a.recorded_at)}</td>"
            f'<td>{_w(a.type)}<br><code class="id">{_w(a.id)}</code></td>'
            f"<td>{changes or '<i>changed nothing</i>'}</td></tr>"
        )
    n = len(late)
    return (
        f"<p>{n:,} activit{'y' if n == 1 else 'ies'} arrived late: recorded after an activity "
        "that sorts after it in business time. The state shown before each arrived was "
        "corrected as follows (the activity counters left out).</p>"
        + _table(
            "corrections",
            [
                ("created_at", "13%"),
                ("recorded", "13%"),
                ("activity", "22%"),
                ("what it changed", "52%"),
            ],
            rows,
        )
    )


def _gaps(state: CustomerState, names: _Names) -> str:
    if not state.gaps:
        return '<p class="empty">No gaps: every card balance adds up.</p>'
    rows = (
        f"<tr><td>{_named(*names.card(g.card_id), block=True)}<br><small>"
        f"{'gift card' if g.kind == 'gift_card' else 'loyalty card'} in "
        f"{_named(*names.program(names.programs.get(g.card_id)))}</small></td>"
        f"<td>{_when(g.at)}</td><td><code class='id'>{_w(g.previous_activity_id or '—')}</code>"
        f"</td><td><code class='id'>{_w(g.activity_id)}</code></td>"
        f"<td class='n'>{g.previous_balance + g.delta:,}</td><td class='n'>{g.balance:,}</td>"
        f"<td class='n'>{g.missing:+,}</td></tr>"
        for g in state.gaps
    )
    return (
        "<p>Where a card's previous balance plus an activity's change is not the balance it "
        "reports, an activity between the two is missing upstream.</p>"
        + _table(
            "gaps",
            [
                ("card", "24%"),
                ("at", "13%"),
                ("after", "17%"),
                ("activity", "17%"),
                ("expected", "10%"),
                ("reported", "10%"),
                ("missing", "9%"),
            ],
            rows,
        )
    )


# -- the page ---------------------------------------------------------------------------------

CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans",sans-serif;
margin:0 auto;padding:24px;max-width:1100px;color:#111827;background:#fff;
-webkit-print-color-adjust:exact;print-color-adjust:exact}
header{border-bottom:2px solid #111827;padding-bottom:10px;margin-bottom:6px}
.kicker{font-size:12px;letter-spacing:.08em;text-transform:uppercase;color:#6b7280}
h1{font-size:24px;margin:2px 0 0}h1 code{font-size:15px;font-weight:normal;color:#4b5563}
h2{font-size:18px;margin:30px 0 10px;padding-bottom:3px;border-bottom:1px solid #d1d5db}
h3{font-size:14px;margin:18px 0 6px}
figure{margin:0 0 22px}figcaption{font-weight:600;margin:0 0 2px}
figcaption small{font-weight:normal;color:#6b7280}
svg{width:100%;height:auto;display:block}
.grid{stroke:#e5e7eb;stroke-width:1}.tick{font-size:11px;fill:#6b7280}
.lane{font-size:12px;fill:#111827}.laneid{font-size:10px;fill:#6b7280;font-family:monospace}
.spanlabel{font-size:11px;fill:#fff}.bin{fill:#9ca3af}
.late-marker{fill:#d97706;stroke:#fff;stroke-width:1}.late-bin{stroke:none}
.gap-marker,.gap-line,.gap-jump{stroke:#dc2626;stroke-width:2;fill:none}
.gap-line{stroke-width:1;stroke-dasharray:4 3}
.legend{list-style:none;padding:0;margin:4px 0 0 21%;font-size:12px;color:#374151}
.legend li{margin:1px 0}.key{display:inline-block;width:10px;height:10px;margin-right:5px;
border-radius:2px;vertical-align:baseline}
.marks{font-size:12px;color:#374151;margin:0 0 14px}
.marks .l{color:#d97706;font-weight:bold}.marks .g{color:#dc2626;font-weight:bold}
.empty{color:#6b7280;font-style:italic}.dim{color:#6b7280}
table{border-collapse:collapse;width:100%;table-layout:fixed;font-size:12px}
td,th{border:1px solid #d1d5db;padding:4px 6px;text-align:left;vertical-align:top;
overflow-wrap:anywhere;word-break:break-word}
th{background:#f3f4f6;font-weight:600;overflow-wrap:normal;word-break:normal}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code{font:11.5px/1.35 "DejaVu Sans Mono",Menlo,Consolas,monospace}
code.id{color:#4b5563;font-size:11px}.name{font-weight:500}
.chg{margin:0 0 2px;padding-left:1.2em;text-indent:-1.2em}.chg code{color:#1f2937}
.v{font:11.5px/1.35 "DejaVu Sans Mono",Menlo,Consolas,monospace;color:#374151}
table.meta{table-layout:fixed;font-size:13px;margin:8px 0}
table.meta th{width:17%;background:none;color:#4b5563;font-weight:normal;border:none;
padding:2px 8px 2px 0}table.meta td{border:none;padding:2px 0}
.sign{display:grid;grid-template-columns:repeat(3,1fr);gap:24px;margin:34px 0 0}
.sign div{border-top:1px solid #111827;padding-top:3px;font-size:12px;color:#4b5563}
@page{size:A4;margin:14mm 12mm 16mm}
@media print{
body{padding:0;max-width:none;font-size:10pt}
section{break-before:page}section:first-of-type{break-before:auto}
h2{margin-top:0;break-after:avoid}h3{break-after:avoid}
figure,svg,.legend,.sign,table.meta{break-inside:avoid}
thead{display:table-header-group}tr{break-inside:avoid}
table{font-size:8.5pt}code,.v{font-size:8pt}
.tick{font-size:12.5px}.lane{font-size:13px}.laneid{font-size:11px}.spanlabel{font-size:12px}
}
"""


def _page_footer(customer_id: str, as_of: datetime | None) -> str:
    """Each printed page's foot: which report it belongs to, and its number."""
    cut = f"as of {format_time(as_of)}" if as_of is not None else "now"
    label = re.sub(r"[^\w .:+-]", "", f"custate report: {customer_id}, {cut}")
    return (
        f'@page{{@bottom-left{{content:"{label}";font:8pt sans-serif;color:#6b7280}}'
        '@bottom-right{content:"page " counter(page) " of " counter(pages);'
        "font:8pt sans-serif;color:#6b7280}}"
    )


def _header(
    customer_id: str,
    state: CustomerState,
    entries: Sequence[HistoryEntry],
    as_of: datetime | None,
    provenance: Provenance | None,
) -> str:
    """What the page is: the customer, the cuts, and (given its provenance) the store, when
    and by which version it was made; then what the history holds in numbers."""
    p = state.profile
    first = entries[0].activity.created_at if entries else None
    last = entries[-1].activity.created_at if entries else None
    n_late = sum(1 for e in entries if e.late)
    if as_of is not None:
        cut = f"{_when(as_of)} <span class='dim'>(business time: activities created by then)</span>"
    else:
        cut = (
            f"now <span class='dim'>(every activity; the latest was created "
            f"{_when(last) if last else '—'})</span>"
        )
    rows = [
        (
            "Customer",
            _named(p.name or "", customer_id)
            + (f" <span class='dim'>source id</span> {_e(p.source_id)}" if p.source_id else "")
            + (f" <span class='dim'>status</span> {_e(p.status)}" if p.status else ""),
        ),
        ("As of", cut),
    ]
    if provenance is None:
        rows.append(("Known at", "everything the store held when the history was read"))
    else:
        if provenance.known_at is not None:
            known = (
                f"{_when(provenance.known_at)} <span class='dim'>(record time: what the store "
                "held then)</span>"
            )
        else:
            known = (
                f"{_when(provenance.made_at)} <span class='dim'>(everything the store held "
                "when the report was made)</span>"
            )
        rows += [
            ("Known at", known),
            ("Store", f"<code>{_e(mask_password(provenance.store))}</code>"),
            ("Made", f"{_when(provenance.made_at)} by custate {_e(provenance.version)}"),
        ]
    rows.append(
        (
            "History",
            f"{len(entries):,} activities"
            + (f", created {_when(first)} to {_when(last)}" if first and last else "")
            + f"; {n_late:,} late; {len(state.gaps):,} gap{'s' if len(state.gaps) != 1 else ''}"
            + f"; {state.points:,} points. Times are UTC.",
        )
    )
    meta = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return (
        f'<header><div class="kicker">custate · customer state report</div>'
        f"<h1>{_e(p.name or customer_id)}"
        f"{f' <code>{_e(customer_id)}</code>' if p.name else ''}</h1></header>"
        f'<table class="meta" id="provenance">{meta}</table>'
    )


def _names(s: _Series, state: CustomerState, campaigns: Mapping[str, str]) -> _Names:
    """Codes and programs of every card the history or the state names (the state's win)."""
    codes, programs = dict(s.codes), dict(s.programs)
    cards: list[tuple[str, str | None, str | None]] = [
        (cid, c.code, c.campaign_id) for cid, c in state.cards.items()
    ]
    cards += [(gid, g.code, g.campaign_id) for gid, g in state.gift_cards.items()]
    for card, code, program in cards:
        if code:
            codes[card] = code
        if program:
            programs[card] = program
    return _Names(campaigns, codes, programs)


def _timeline(
    entries: Sequence[HistoryEntry],
    state: CustomerState,
    as_of: datetime | None,
    s: _Series,
    names: _Names,
) -> str:
    """The charts over business time, from the first activity to the cut (or the last)."""
    if not entries:
        return '<p class="empty">No activities.</p>'
    last = entries[-1].activity.created_at
    t1 = as_of if as_of is not None and as_of >= last else last
    axis = _Axis(entries[0].activity.created_at, t1)
    tier_names = dict(s.tier_names)
    for t in state.tiers.values():
        if t.tier_id and t.tier_name:
            tier_names[t.tier_id] = t.tier_name
    seg_names = {**s.segment_names, **{k: v.name for k, v in state.segments.items() if v.name}}
    loyalty_gaps = [g for g in state.gaps if g.kind != "gift_card"]
    gift_gaps = [g for g in state.gaps if g.kind == "gift_card"]
    charts = [
        (
            "Activities over time",
            "per stretch of business time; late ones in amber",
            _activity_chart(entries, state.gaps, axis),
        ),
        (
            "Points balance per loyalty card",
            "",
            _step_chart(
                "balance-chart", "balance", s.points, loyalty_gaps, axis, t1, names, "points"
            ),
        ),
        (
            "Pending points per loyalty card",
            "points earned but not yet active",
            _step_chart("pending-chart", "pending", s.pending, (), axis, t1, names, "pending"),
        ),
        (
            "Gift-card balances",
            "in the currency's smallest unit, as Voucherify reports them",
            _step_chart("gift-chart", "gift", s.gift, gift_gaps, axis, t1, names, ""),
        ),
        (
            "Tier per program",
            "",
            _lanes(
                "tier-chart", s.tiers, {k: names.program(k) for k in s.tiers}, tier_names, axis, t1
            ),
        ),
        (
            "Segment membership",
            "",
            _lanes(
                "segment-chart",
                s.segments,
                {k: (seg_names.get(k, ""), k) for k in s.segments},
                seg_names,
                axis,
                t1,
            ),
        ),
    ]
    figures = "".join(
        f"<figure><figcaption>{title}{f' <small>({note})</small>' if note else ''}</figcaption>"
        f"{svg or '<p class=empty>None.</p>'}</figure>"
        for title, note, svg in charts
    )
    return (
        '<p class="marks"><span class="l">&#9679; &#9660;</span> a late activity '
        "(recorded after one that sorts after it) changed this &nbsp; "
        '<span class="g">&#10005; ┆</span> a gap: the balance reported is not the previous '
        "one plus the change (an activity is missing upstream). On screen, hover over a mark "
        f"for the activity.</p>{figures}"
    )


def render_report(
    customer_id: str,
    entries: Sequence[HistoryEntry],
    state: CustomerState,
    as_of: datetime | None = None,
    *,
    provenance: Provenance | None = None,
    campaigns: Mapping[str, str] | None = None,
) -> str:
    """The report as one HTML document. `entries`: the customer's history (up to `as_of`);
    `state`: the state at `as_of`; `provenance`: where and when it was made, for the header;
    `campaigns`: campaign id -> name (`campaign_names`), shown beside the ids."""
    s = _series(entries)
    names = _names(s, state, campaigns or {})
    timeline = _timeline(entries, state, as_of, s, names)
    sections = [
        (
            "summary",
            "State at the cut",
            _state_tables(state, names)
            + '<div class="sign"><div>Reviewed by</div><div>Date</div><div>Signature</div></div>',
        ),
        ("timelines", "Over time", timeline + "<h3>Orders by status</h3>" + _orders(state)),
        ("corrections-section", "Corrections by late activities", _corrections(entries)),
        ("gaps-section", "Gaps (activities missing upstream)", _gaps(state, names)),
    ]
    body = "".join(
        f'<section id="{sid}"><h2>{title}</h2>{html_}</section>' for sid, title, html_ in sections
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>custate report: {_e(customer_id)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{CSS}{_page_footer(customer_id, as_of)}</style></head><body>"
        f"{_header(customer_id, state, entries, as_of, provenance)}{body}"
        "</body></html>\n"
    )
