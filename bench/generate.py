"""Realistic, reproducible Voucherify customer-activity histories for benchmarks and tests.

Each record is a `CustomerActivity` as the API lists it: `{id, type, created_at, group_id,
data}`, where `data` is one of the documented example payloads (`bench/templates/*.json`,
copied unchanged from the Voucherify OpenAPI webhook examples) with its ids, customer,
amounts, balances and times substituted. Types without a published example (messaging,
an unknown future type) use the small synthetic templates in `SYNTHETIC` below; types that
share a shape with one that has an example reuse it (`segment.left` <- `segment.entered`,
`order.fulfilled`/`.canceled` <- `order.paid`, `tier.downgraded` <- `tier.upgraded`).

What holds for every generated history:

- Per customer, `created_at` strictly increases (millisecond precision, like Voucherify), so
  arrival order before shuffling is also the fold order `(created_at, rank, id)`.
- Per customer, one loyalty card with a running balance: every `balance` /
  `transaction.details.balance` snapshot satisfies previous balance + `points` = `balance`,
  and every voucher block (`voucher.loyalty_card`) carries the same running values, so a
  fold reports no gaps. Pending points are added, sometimes updated, and activated on
  their `activates_at` day. Gift cards have their own running balance.
- Activity ids (`evcus_` + 18 hex) and all other generated ids are unique.
- Same arguments -> the same records, byte for byte (one seeded `random.Random`; the
  late/duplicate shuffles use their own generator, so turning them on does not change the
  set of activities).
- Streaming: memory is O(customers), not O(activities).

Command line: `python bench/generate.py --activities N --customers M --seed S -o FILE`.
Python: `generate(n_activities, n_customers, seed)` yields dicts; `write_ndjson(...)`.
"""

from __future__ import annotations

import argparse
import heapq
import random
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import orjson

__all__ = [
    "LOYALTY_CAMPAIGN",
    "TEMPLATE_DIR",
    "TIERS",
    "UNKNOWN_TYPE",
    "format_ms",
    "generate",
    "generate_ndjson_bytes",
    "load_templates",
    "main",
    "placeholders",
    "write_json",
    "write_ndjson",
]

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
LOYALTY_CAMPAIGN = "camp_AQZ1GLRlbGaC2dETd31VbJQ9"
# The examples come from several demo accounts; fold all loyalty ones into one programme.
_SAME_PROGRAMME = ("camp_wce3U0BUekz2YGVl1F43Tvd4", "camp_mvZmZkLz3Dq2llncChsCr00g")
# (tier id, name, total points earned to reach it). Ids are the ones of the examples.
TIERS: tuple[tuple[str, str, int], ...] = (
    ("ltr_0e30613ad01f044515", "Loyal silver", 250),
    ("ltr_0e30613ad01f044516", "Loyal gold", 1_000),
    ("ltr_0e30613ad01f044517", "Loyal platinum", 3_000),
)
SEGMENTS: tuple[tuple[str, str], ...] = (
    ("seg_n3vVcU5t0m3rs4rEPr3C1oU5", "New Customers"),
    ("seg_R3p34tBuy3rs0000000000001", "Repeat buyers"),
    ("seg_H1ghSp3nd3rs000000000002", "High spenders"),
    ("seg_Dorm4ntCust0m3rs0000003", "Dormant customers"),
    ("seg_EM3AReg10n0000000000004", "EMEA"),
    ("seg_N3wsl3tt3rSubscr1b3rs05", "Newsletter subscribers"),
)
CHANNELS = ("email", "sms", "braze", "klaviyo", "mailchimp", "intercom")
CUSTOM_EVENTS = ("sign_up", "newsletter_subscribed", "app_opened", "review_written", "wishlist_add")
UNKNOWN_TYPE = "customer.wallet.topped_up"  # not one of the 74: stored and counted only
REWARD_COST = 500

_START = datetime(2024, 1, 1, tzinfo=UTC)
_DAY_MS = 86_400_000
_MASK72 = (1 << 72) - 1

# --------------------------------------------------------------------------- templates

# Placeholders whose example value is an id: every occurrence of that id in the example
# (customer_id, holder_id, order_id inside nested blocks, ...) gets the generated one.
_GLOBAL_IDS = frozenset(
    {
        "customer_id",
        "card_id",
        "gift_id",
        "voucher_id",
        "reward_voucher_id",
        "order_id",
        "txn_id",
        "pending_id",
        "rr_id",
        "redemption_id",
        "rollback_id",
    }
)

# path -> placeholder, applied wherever the path exists with a value of the right kind.
_STR_PATHS: dict[str, str] = {
    "customer.id": "customer_id",
    "customer.name": "customer_name",
    "customer.email": "email",
    "customer.source_id": "source_id",
    "customer.created_at": "customer_created_at",
    "customer.updated_at": "at",
    "holder.name": "customer_name",
    "holder.email": "email",
    "holder.source_id": "source_id",
    "order.id": "order_id",
    "order.source_id": "order_source_id",
    "order.status": "order_status",
    "order.created_at": "order_created_at",
    "order.updated_at": "at",
    "transaction.id": "txn_id",
    "transaction.created_at": "at",
    "pending_points.id": "pending_id",
    "pending_points.activates_at": "activates_at",
    "pending_points.created_at": "at",
    "reward_redemption.id": "rr_id",
    "redemption.id": "redemption_id",
    "redemption_rollback.id": "rollback_id",
    "segment.id": "segment_id",
    "segment.name": "segment_name",
    "loyalty_tier.id": "tier_id",
    "loyalty_tier.name": "tier_name",
    "loyalty_tier_to.id": "tier_id",
    "loyalty_tier_to.name": "tier_name",
    "loyalty_tier_from.id": "tier_from_id",
    "loyalty_tier_from.name": "tier_from_name",
    "created_at": "at",
    "voucher.updated_at": "at",
    "distribution.id": "message_id",
    "distribution.created_at": "at",
}
_VOUCHER_KIND = {"LOYALTY_CARD": "card", "GIFT_VOUCHER": "gift"}
_LOYALTY_NUM_PATHS = {
    "balance": "bal",
    "total": "tot",
    "points": "delta",
}
_NUM_PATHS: dict[str, str] = {
    "order.amount": "amount",
    "order.total_amount": "total_amount",
    "voucher.loyalty_card.balance": "v_bal",
    "voucher.loyalty_card.points": "v_tot",
    "voucher.loyalty_card.pending_points": "pend_total",
    "voucher_pending_points_balance.total": "pend_total",
    "voucher_pending_points_balance.points": "pend_delta",
    "pending_points.points": "pend_points",
    "points": "expired_points",
    "voucher.gift.amount": "g_tot",
    "voucher.gift.balance": "g_bal",
}
_GIFT_NUM_PATHS = {"balance": "g_bal", "total": "g_tot", "amount": "g_delta"}

_CUSTOMER_OBJECT: dict[str, Any] = {
    "id": "cust_SYNTHETICcustomer000000",
    "name": "x",
    "email": "x",
    "source_id": "x",
    "metadata": {"region": "EMEA"},
    "object": "customer",
}
# Shapes for the types that have no published example (kept small and plausible).
SYNTHETIC: dict[str, dict[str, Any]] = {
    "messaging": {
        "customer": _CUSTOMER_OBJECT,
        "distribution": {
            "id": "distr_SYNTHETIC000000000000",
            "name": "Order confirmation",
            "channel": "x",
            "status": "x",
            "object": "distribution",
            "created_at": "2024-01-01T00:00:00.000Z",
        },
        "campaign": None,
        "voucher": None,
    },
    UNKNOWN_TYPE: {
        "customer": _CUSTOMER_OBJECT,
        "wallet": {"id": "wal_SYNTHETIC000000000000", "amount": 1000, "currency": "EUR"},
        "created_at": "2024-01-01T00:00:00.000Z",
    },
}


def _lookup(d: Any, path: str) -> tuple[dict[str, Any], str] | None:
    parts = path.split(".")
    for p in parts[:-1]:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    if not isinstance(d, dict) or parts[-1] not in d:
        return None
    return d, parts[-1]


_PROFILE_KEYS = frozenset({"name", "email", "source_id"})
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def _compile(raw: dict[str, Any]) -> str:
    """A `str.format_map` template: the example as compact JSON with placeholders."""
    sentinels: dict[str, str] = {}
    globals_: dict[str, str] = {}

    def put(path: str, name: str, kind: str = "str") -> None:
        hit = _lookup(raw, path)
        if hit is None:
            return
        parent, key = hit
        value = parent[key]
        if kind == "num":
            if isinstance(value, bool) or not isinstance(value, int):
                return
        elif kind == "raw":
            if not isinstance(value, dict):
                return
        elif not isinstance(value, str) and not (value is None and key in _PROFILE_KEYS):
            return
        if name in _GLOBAL_IDS and isinstance(value, str):
            globals_[value] = name
            return
        token = f"@@{name}@@"
        parent[key] = token
        sentinels[f'"{token}"'] = f'"{{{name}}}"' if kind == "str" else f"{{{name}}}"

    voucher = raw.get("voucher")
    vkind = "voucher"
    if isinstance(voucher, dict):
        vkind = _VOUCHER_KIND.get(str(voucher.get("type")), "voucher")
        put("voucher.id", f"{vkind}_id")
        put("voucher.code", f"{vkind}_code")
    pub = raw.get("publication")
    if isinstance(pub, dict) and isinstance(pub.get("voucher"), dict):
        same = isinstance(voucher, dict) and pub["voucher"].get("id") == voucher.get("id")
        kind = vkind if same else "reward_voucher"
        put("publication.voucher.id", f"{kind}_id")
        put("publication.voucher.code", f"{kind}_code")
    holder = raw.get("holder")
    holder_is_customer = isinstance(holder, dict) and holder.get("object") == "customer"
    for path, name in _STR_PATHS.items():
        if path.startswith("holder.") and not holder_is_customer:
            continue
        put(path, name)
    put("customer.metadata", "metadata_json", "raw")
    if holder_is_customer:
        put("holder.metadata", "metadata_json", "raw")
    for path, name in _NUM_PATHS.items():
        put(path, name, "num")
    for prefix in ("balance", "transaction.details.balance"):
        hit = _lookup(raw, prefix)
        if hit is None or not isinstance(hit[0][hit[1]], dict):
            continue
        btype = hit[0][hit[1]].get("type")
        table = _LOYALTY_NUM_PATHS if btype == "loyalty_card" else _GIFT_NUM_PATHS
        for field, name in table.items():
            put(f"{prefix}.{field}", name, "num")
    if raw.get("event_schema") is not None:  # customer.custom_event
        put("event.type", "event_name")
        put("event_schema.name", "event_name")
        put("event.created_at", "at")
    if "distribution" in raw:
        put("distribution.channel", "channel")
        put("distribution.status", "message_status")

    text = orjson.dumps(raw).decode()
    text = text.replace("{", "{{").replace("}", "}}")
    for token, repl in sentinels.items():
        text = text.replace(token, repl)
    for original, name in globals_.items():
        text = text.replace(original, f"{{{name}}}")
    for camp in _SAME_PROGRAMME:
        text = text.replace(camp, LOYALTY_CAMPAIGN)
    return text


def placeholders(template: str) -> frozenset[str]:
    """The names a compiled template needs."""
    return frozenset(_PLACEHOLDER.findall(template))


# type -> template file stem (a type not listed here uses its own file).
_TEMPLATE_OF: dict[str, str] = {
    "customer.segment.left": "customer.segment.entered",
    "customer.order.fulfilled": "customer.order.paid",
    "customer.order.canceled": "customer.order.paid",
    "customer.order.processing": "customer.order.paid",
    "customer.loyalty.tier.downgraded": "customer.loyalty.tier.upgraded",
    "customer.voucher.loyalty_card.pending_points.canceled": (
        "customer.voucher.loyalty_card.pending_points.activated"
    ),
    **{f"customer.{c}.{o}": "messaging" for c in CHANNELS for o in ("sent", "failed", "recovered")},
}


def load_templates(template_dir: Path = TEMPLATE_DIR) -> dict[str, str]:
    """Every compiled template, by template name (the file stem, or a `SYNTHETIC` key)."""
    out: dict[str, str] = {}
    for path in sorted(template_dir.glob("*.json")):
        out[path.stem] = _compile(orjson.loads(path.read_bytes()))
    for name, raw in SYNTHETIC.items():
        out[name] = _compile(orjson.loads(orjson.dumps(raw)))
    return out


# --------------------------------------------------------------------------- time, ids

_day_cache: dict[int, str] = {}


def format_ms(ms: int) -> str:
    """Milliseconds since 2024-01-01T00:00:00Z -> `2024-03-11T15:27:44.884Z`."""
    day, rest = divmod(ms, _DAY_MS)
    d = _day_cache.get(day)
    if d is None:
        d = _day_cache[day] = (_START + timedelta(days=day)).strftime("%Y-%m-%d")
    h, rest = divmod(rest, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, milli = divmod(rest, 1000)
    return f"{d}T{h:02d}:{m:02d}:{s:02d}.{milli:03d}Z"


def _date(day: int) -> str:
    """Day number since 2024-01-01 -> `2024-03-11`."""
    format_ms(day * _DAY_MS)
    return _day_cache[day]


class _Ids:
    """Unique ids: an odd multiplier is a bijection modulo 2**72, so distinct counters give
    distinct hex strings; the seed only moves the offset."""

    __slots__ = ("_mul", "_n", "_off", "_prefix")

    def __init__(self, prefix: str, rng: random.Random, mul: int) -> None:
        self._prefix = prefix
        self._mul = mul | 1
        self._off = rng.getrandbits(72)
        self._n = 0

    def __call__(self) -> str:
        self._n += 1
        return f"{self._prefix}{(self._n * self._mul + self._off) & _MASK72:018x}"


_ALNUM = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_FIRST = (
    "Alex", "Jack", "Lionel", "Ariana", "Jean", "John", "Maria", "Olga", "Tomasz", "Priya",
    "Chen", "Fatima", "Lucas", "Sofia", "Noah", "Emma", "Mateo", "Aisha", "Yuki", "Liam",
)  # fmt: skip
_LAST = (
    "Doe", "Webhook", "Johnson", "Patel", "Genie", "Demo", "Kowalski", "Nowak", "Garcia",
    "Smith", "Müller", "Rossi", "Dubois", "Silva", "Khan", "Tanaka", "Okafor", "Larsen",
)  # fmt: skip

# --------------------------------------------------------------------------- customers


class _Customer:
    __slots__ = (
        "bal",
        "base",
        "created_ms",
        "deleted",
        "gap_ms",
        "gift",
        "group",
        "n_orders",
        "pending",
        "queue",
        "segments",
        "tier",
        "tot",
        "vouchers",
    )

    def __init__(self, base: dict[str, Any], created_ms: int, gap_ms: float) -> None:
        self.base = base
        self.created_ms = created_ms
        self.gap_ms = gap_ms
        self.bal = 0
        self.tot = 0
        # pending id -> [points, order id, due ms, activates_at, amount, total, source id]
        self.pending: dict[str, list[Any]] = {}
        self.tier = -1
        self.segments: set[int] = set()
        self.gift: list[Any] | None = None  # [id, code, balance, total]
        self.vouchers: list[tuple[str, str]] = []  # published, not yet redeemed
        self.n_orders = 0
        self.queue: list[tuple[str, dict[str, Any]]] = []  # steps of the current scenario
        self.deleted = False
        self.group = ""  # group_id of the current scenario (one request and its effects)

    @property
    def pend_total(self) -> int:
        return sum(p[0] for p in self.pending.values())


Step = tuple[str, dict[str, Any]]


class _Generator:
    """One pass over the business timeline of all customers, merged by time with a heap."""

    def __init__(self, n_activities: int, n_customers: int, seed: int, days: int) -> None:
        if n_activities < 0 or n_customers < 1:
            raise ValueError("need n_activities >= 0 and n_customers >= 1")
        self.n = n_activities
        self.m = n_customers
        self.rng = random.Random(seed)
        self.templates = load_templates()
        rng = self.rng
        self.evcus = _Ids("evcus_", rng, 0x9E3779B97F4A7C15)
        self.group = _Ids("v-", rng, 0xC2B2AE3D27D4EB4F)
        self.order_ids = _Ids("ord_", rng, 0x165667B19E3779F9)
        self.txn_ids = _Ids("vtx_", rng, 0x27D4EB2F165667C5)
        self.lopp_ids = _Ids("lopp_", rng, 0x85EBCA77C2B2AE63)
        self.rewr_ids = _Ids("rewr_", rng, 0x94D049BB133111EB)
        self.red_ids = _Ids("r_", rng, 0xBF58476D1CE4E5B9)
        self.rb_ids = _Ids("rr_", rng, 0xD6E8FEB86659FD93)
        self.voucher_ids = _Ids("v_", rng, 0xA0761D6478BD642F)
        self.msg_ids = _Ids("distr_", rng, 0xE7037ED1A0B428DB)
        self.span_ms = days * _DAY_MS
        # Customers join during the first 40% of the window; each has its own activity
        # rate (lognormal: most are occasional, a few are very active).
        weights = [rng.lognormvariate(0.0, 1.0) for _ in range(n_customers)]
        total_w = sum(weights) or 1.0
        self.heap: list[tuple[int, int]] = []
        self.customers: list[_Customer | None] = [None] * n_customers
        self.weights = weights
        self.total_w = total_w
        starts = sorted(rng.randrange(0, int(self.span_ms * 0.4)) for _ in range(n_customers))
        for i, start in enumerate(starts):
            self.heap.append((start, i))
        heapq.heapify(self.heap)

    # ------------------------------------------------------------------ customers

    def _new_customer(self, i: int, at: int) -> _Customer:
        rng = self.rng
        first = rng.choice(_FIRST)
        last = rng.choice(_LAST)
        cid = "cust_" + "".join(rng.choices(_ALNUM, k=24))
        card = "v_" + "".join(rng.choices(_ALNUM, k=32))
        code = "".join(rng.choices(_ALNUM, k=8))
        local = f"{first}.{last}".lower().replace("ü", "ue")
        base = {
            "customer_id": cid,
            "customer_name": f"{first} {last}",
            "email": f"{local}.{i}@example.com",
            "source_id": f"{local}-{i}",
            "customer_created_at": format_ms(at),
            "card_id": card,
            "card_code": code,
            "metadata_json": orjson.dumps(
                {"region": rng.choice(("EMEA", "US", "APAC")), "sign-up": "true"}
            ).decode(),
        }
        # Expected activities of this customer over the remaining window, ~2.6 per scenario.
        expected = max(1.0, self.n * self.weights[i] / self.total_w)
        remaining = max(self.span_ms - at, _DAY_MS)
        gap = remaining * 2.6 / expected
        return _Customer(base, at, gap)

    # ------------------------------------------------------------------ scenarios

    def _plan(self, c: _Customer, now: int) -> tuple[int, list[Step]]:
        """The next scenario of `c` after `now`: its start time and its steps."""
        rng = self.rng
        if c.deleted:
            return now + int(rng.expovariate(1 / (30 * _DAY_MS))) + 1000, self._signup(c)
        start = now + 1000 + int(rng.expovariate(1 / c.gap_ms))
        due = min((p[2] for p in c.pending.values()), default=None)
        if due is not None and due <= start:
            pid = min(c.pending, key=lambda k: (c.pending[k][2], k))
            steps: list[Step] = [
                ("customer.voucher.loyalty_card.pending_points.activated", {"pid": pid})
            ]
            return max(due, now + 1), steps
        return start, self._scenario(c)

    def _signup(self, c: _Customer) -> list[Step]:
        rng = self.rng
        c.deleted = False
        steps: list[Step] = [
            ("customer.created", {}),
            ("customer.segment.entered", {"seg": 0}),
        ]
        if rng.random() < 0.5:
            steps.append(("customer.email.sent", {}))
        if rng.random() < 0.3:
            steps.append(("customer.publication.succeeded", {}))
        if rng.random() < 0.6:
            steps.append(("customer.voucher.loyalty_card.points_added", {"points": 100}))
        return steps

    def _scenario(self, c: _Customer) -> list[Step]:
        rng = self.rng
        r = rng.random() * 100.0
        if r < 42:
            return self._order(c)
        r -= 42
        if r < 9:
            return [("customer.voucher.loyalty_card.points_added", {"points": _points(rng)})]
        r -= 9
        if r < 9:
            return self._segment(c)
        r -= 9
        if r < 7 and c.bal >= REWARD_COST:
            rr = self.rewr_ids()
            steps: list[Step] = [
                ("customer.reward_redemptions.created", {"rr": rr, "cost": REWARD_COST}),
                ("customer.reward_redemptions.completed", {"rr": rr}),
            ]
            if rng.random() < 0.3:
                steps.append(("customer.rewarded", {}))
            return steps
        r -= 7
        if r < 6:
            ch = rng.choice(CHANNELS)
            outcome = rng.choices(("sent", "failed", "recovered"), (90, 7, 3))[0]
            return [(f"customer.{ch}.{outcome}", {})]
        r -= 6
        if r < 4:
            return [("customer.updated", {})]
        r -= 4
        if r < 6:
            return [("customer.publication.succeeded", {})]
        r -= 6
        if r < 3 and c.bal > 0:
            return [("customer.voucher.loyalty_card.points_expired", {})]
        r -= 3
        if r < 2.5:
            return [("customer.custom_event", {})]
        r -= 2.5
        if r < 2 and c.pending:
            return [("customer.voucher.loyalty_card.pending_points.updated", {})]
        r -= 2
        if r < 2:
            return [("customer.voucher.gift.balance_added", {})]
        r -= 2
        if r < 1.5 and c.tier >= 0:
            return [("customer.loyalty.tier.prolonged", {})]
        r -= 1.5
        if r < 1:
            return [("customer.holder.assignment.created", {})]
        r -= 1
        if r < 0.6 and c.tier >= 1:
            return [("customer.loyalty.tier.downgraded", {})]
        r -= 0.6
        if r < 0.3 and c.tier >= 0:
            return [("customer.loyalty.tier.left", {})]
        r -= 0.3
        if r < 1.2:
            return [(UNKNOWN_TYPE, {})]
        r -= 1.2
        if r < 0.15:
            c.deleted = True
            return [("customer.deleted", {})]
        return [("customer.voucher.loyalty_card.points_added", {"points": _points(rng)})]

    def _order(self, c: _Customer) -> list[Step]:
        rng = self.rng
        amount = int(rng.lognormvariate(8.3, 0.8)) // 10 * 10 + 9  # cents, median ~40
        o: dict[str, Any] = {
            "order_id": self.order_ids(),
            "order_source_id": f"web-{c.n_orders + 1:05d}",
            "amount": amount,
            "total_amount": amount,
        }
        c.n_orders += 1
        steps: list[Step] = [("customer.order.created", o)]
        if rng.random() < 0.04:
            steps.append(("customer.order.updated", o))
        redeemed = False
        if c.vouchers and rng.random() < 0.85:
            steps.append(("customer.redemption.succeeded", o))
            redeemed = True
        if rng.random() < 0.03:
            steps.append(("customer.order.canceled", o))
            if redeemed:
                steps.append(("customer.redemption.rollback.succeeded", o))
            return steps
        steps.append(("customer.order.paid", o))
        if rng.random() < 0.6:
            steps.append(("customer.rewarded.loyalty_points", o))
        else:
            steps.append(("customer.voucher.loyalty_card.pending_points.added", o))
        if rng.random() < 0.12:
            steps.append(("customer.order.fulfilled", o))
        if rng.random() < 0.06:
            steps.append((f"customer.{rng.choice(('email', 'sms'))}.sent", {}))
        if c.n_orders == 2 and 1 not in c.segments:
            steps.append(("customer.segment.entered", {"seg": 1}))
        return steps

    def _segment(self, c: _Customer) -> list[Step]:
        rng = self.rng
        seg = rng.randrange(len(SEGMENTS))
        if seg in c.segments:
            return [("customer.segment.left", {"seg": seg})]
        return [("customer.segment.entered", {"seg": seg})]

    # ------------------------------------------------------------------ emission

    def _tier_steps(self, c: _Customer) -> list[Step]:
        target = -1
        for i, (_, _, threshold) in enumerate(TIERS):
            if c.tot >= threshold:
                target = i
        if target <= c.tier:
            return []
        kind = "joined" if c.tier < 0 else "upgraded"
        return [(f"customer.loyalty.tier.{kind}", {"to": target})]

    def _values(
        self, c: _Customer, atype: str, ctx: dict[str, Any], at_ms: int, at: str
    ) -> tuple[str, dict[str, Any], list[Step]]:
        """Template name, placeholder values and follow-up steps; updates `c`."""
        rng = self.rng
        v = dict(c.base)
        v["at"] = at
        v["order_created_at"] = at
        template = _TEMPLATE_OF.get(atype, atype)
        more: list[Step] = []

        def loyalty(delta: int, *, earned: bool) -> None:
            c.bal += delta
            if earned:
                c.tot += delta
            v["bal"] = v["v_bal"] = c.bal
            v["tot"] = v["v_tot"] = c.tot
            v["delta"] = delta
            v["txn_id"] = self.txn_ids()

        v["pend_total"] = c.pend_total
        v["v_bal"], v["v_tot"] = c.bal, c.tot
        if atype == "customer.order.created":
            ctx["order_created_at"] = at
        v.update(ctx)
        if atype.startswith("customer.order.") or atype.startswith("customer.redemption."):
            v["order_status"] = {
                "customer.order.created": "CREATED",
                "customer.order.updated": "CREATED",
                "customer.order.fulfilled": "FULFILLED",
                "customer.order.canceled": "CANCELED",
                "customer.redemption.rollback.succeeded": "CANCELED",
            }.get(atype, "PAID")
        if atype == "customer.voucher.loyalty_card.points_added":
            loyalty(ctx["points"], earned=True)
            more = self._tier_steps(c)
        elif atype == "customer.rewarded.loyalty_points":
            pts = max(1, ctx["total_amount"] // 100)
            v["v_bal"], v["v_tot"] = c.bal, c.tot  # the example's voucher block is pre-event
            loyalty(pts, earned=True)
            v["v_bal"], v["v_tot"] = c.bal - pts, c.tot - pts
            v["order_status"] = "PAID"
            more = self._tier_steps(c)
        elif atype == "customer.voucher.loyalty_card.pending_points.added":
            pid = self.lopp_ids()
            pts = max(1, ctx["total_amount"] // 100)
            due_day = at_ms // _DAY_MS + rng.choice((1, 7, 14, 30))
            due = due_day * _DAY_MS + rng.randrange(60_000, 3_600_000)
            activates = _date(due_day)
            c.pending[pid] = [
                pts, ctx["order_id"], due, activates, ctx["amount"], ctx["total_amount"],
                ctx["order_source_id"],
            ]  # fmt: skip
            v.update(
                pending_id=pid, pend_points=pts, pend_delta=pts, pend_total=c.pend_total,
                activates_at=activates, order_status="PAID",
            )  # fmt: skip
        elif atype == "customer.voucher.loyalty_card.pending_points.updated":
            pid = rng.choice(sorted(c.pending))
            p = c.pending[pid]
            new = max(1, p[0] + rng.choice((-1, 1)) * rng.randint(1, max(1, p[0] // 4)))
            delta, p[0] = new - p[0], new
            v.update(
                pending_id=pid, pend_points=new, pend_delta=delta, pend_total=c.pend_total,
                activates_at=p[3], order_id=p[1], amount=p[4], total_amount=p[5],
                order_status="PAID", order_source_id=p[6],
            )  # fmt: skip
        elif atype == "customer.voucher.loyalty_card.pending_points.activated":
            pid = ctx["pid"]
            p = c.pending.pop(pid)
            loyalty(p[0], earned=True)
            v.update(
                pending_id=pid, pend_points=p[0], pend_delta=p[0], pend_total=c.pend_total,
                activates_at=p[3], order_id=p[1], amount=p[4], total_amount=p[5],
                order_status="PAID", order_source_id=p[6],
            )  # fmt: skip
            more = self._tier_steps(c)
        elif atype == "customer.voucher.loyalty_card.points_expired":
            pts = min(c.bal, rng.randint(10, 200))
            loyalty(-pts, earned=False)
            v["expired_points"] = pts
        elif atype == "customer.reward_redemptions.created":
            c.bal -= ctx["cost"]
            v["rr_id"] = ctx["rr"]
            v["v_bal"], v["v_tot"] = c.bal, c.tot
        elif atype == "customer.reward_redemptions.completed":
            v["rr_id"] = ctx["rr"]
            v["reward_voucher_id"] = self.voucher_ids()
            v["reward_voucher_code"] = "".join(rng.choices(_ALNUM, k=8))
        elif atype in ("customer.loyalty.tier.joined", "customer.loyalty.tier.upgraded"):
            to = ctx["to"]
            frm = max(c.tier, 0)
            v["tier_id"], v["tier_name"] = TIERS[to][0], TIERS[to][1]
            v["tier_from_id"], v["tier_from_name"] = TIERS[frm][0], TIERS[frm][1]
            c.tier = to
        elif atype == "customer.loyalty.tier.downgraded":
            frm = c.tier
            c.tier -= 1
            v["tier_id"], v["tier_name"] = TIERS[c.tier][0], TIERS[c.tier][1]
            v["tier_from_id"], v["tier_from_name"] = TIERS[frm][0], TIERS[frm][1]
        elif atype in ("customer.loyalty.tier.prolonged", "customer.loyalty.tier.left"):
            v["tier_id"], v["tier_name"] = TIERS[c.tier][0], TIERS[c.tier][1]
            if atype.endswith(".left"):
                c.tier = -1
        elif atype in ("customer.segment.entered", "customer.segment.left"):
            seg = ctx["seg"]
            v["segment_id"], v["segment_name"] = SEGMENTS[seg]
            if atype.endswith("entered"):
                c.segments.add(seg)
            else:
                c.segments.discard(seg)
        elif atype in ("customer.publication.succeeded", "customer.holder.assignment.created"):
            vid = self.voucher_ids()
            code = "SPRING-2024-" + "".join(rng.choices(_ALNUM, k=3))
            v["voucher_id"], v["voucher_code"] = vid, code
            if atype == "customer.publication.succeeded":
                c.vouchers.append((vid, code))
        elif atype == "customer.redemption.succeeded":
            vid, code = c.vouchers.pop(0)
            ctx["voucher"] = (vid, code)
            v["voucher_id"], v["voucher_code"] = vid, code
            v["redemption_id"] = ctx["redemption"] = self.red_ids()
        elif atype == "customer.redemption.rollback.succeeded":
            v["voucher_id"], v["voucher_code"] = ctx["voucher"]
            v["redemption_id"] = ctx["redemption"]
            v["rollback_id"] = self.rb_ids()
            c.vouchers.append(ctx["voucher"])
        elif atype == "customer.voucher.gift.balance_added":
            if c.gift is None:
                gid = self.voucher_ids()
                c.gift = [gid, "Gift-for-you-" + "".join(rng.choices(_ALNUM, k=4)), 0, 0]
            add = rng.choice((1000, 2500, 5000, 10000))
            c.gift[2] += add
            c.gift[3] += add
            v.update(
                gift_id=c.gift[0], gift_code=c.gift[1], g_bal=c.gift[2], g_tot=c.gift[3],
                g_delta=add, txn_id=self.txn_ids(),
            )  # fmt: skip
        elif atype == "customer.custom_event":
            v["event_name"] = rng.choice(CUSTOM_EVENTS)
        elif atype == "customer.created":
            v["customer_created_at"] = at
            c.base["customer_created_at"] = at
        elif atype == "customer.deleted":
            v["source_id"] = f"{c.base['source_id']}_deleted{at}"
        elif template == "messaging":
            _, ch, outcome = atype.split(".")
            v["channel"], v["message_status"] = ch, outcome.upper()
            v["message_id"] = self.msg_ids()
        return template, v, more

    def _default(self, c: _Customer, name: str) -> Any:
        """A value for a placeholder that this activity's own logic does not set (parts of
        an example that no effect reads, e.g. the redemption inside `customer.rewarded`)."""
        rng = self.rng
        tier = TIERS[max(c.tier, 0)]
        table: dict[str, Callable[[], Any]] = {
            "order_id": self.order_ids,
            "txn_id": self.txn_ids,
            "redemption_id": self.red_ids,
            "rollback_id": self.rb_ids,
            "pending_id": self.lopp_ids,
            "rr_id": self.rewr_ids,
            "voucher_id": self.voucher_ids,
            "reward_voucher_id": self.voucher_ids,
            "message_id": self.msg_ids,
            "voucher_code": lambda: "".join(rng.choices(_ALNUM, k=8)),
            "reward_voucher_code": lambda: "".join(rng.choices(_ALNUM, k=8)),
            "tier_id": lambda: tier[0],
            "tier_name": lambda: tier[1],
            "tier_from_id": lambda: tier[0],
            "tier_from_name": lambda: tier[1],
            "order_source_id": lambda: f"web-{c.n_orders:05d}",
            "order_status": lambda: "PAID",
            "amount": lambda: 2500,
            "total_amount": lambda: 2500,
        }
        make = table.get(name)
        if make is None:
            raise KeyError(f"no value for placeholder {name!r}")
        return make()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        heap = self.heap
        customers = self.customers
        templates = self.templates
        rng = self.rng
        loads = orjson.loads
        needs = {name: placeholders(t) for name, t in templates.items()}
        emitted = 0
        while emitted < self.n:
            at_ms, i = heapq.heappop(heap)
            c = customers[i]
            if c is None:
                c = customers[i] = self._new_customer(i, at_ms)
                c.queue = self._signup(c)[::-1]
                c.group = self.group()
            atype, ctx = c.queue.pop()
            at = format_ms(at_ms)
            template, values, more = self._values(c, atype, ctx, at_ms, at)
            if more:
                c.queue.extend(reversed(more))
            for name in needs[template]:
                if name not in values:
                    values[name] = self._default(c, name)
            data = loads(templates[template].format_map(values))
            yield {
                "id": self.evcus(),
                "type": atype,
                "created_at": at,
                "group_id": c.group,
                "data": data,
            }
            emitted += 1
            if c.queue:
                # Same request or its immediate consequences: milliseconds to seconds.
                heapq.heappush(heap, (at_ms + rng.randint(3, 2500), i))
            else:
                start, steps = self._plan(c, at_ms)
                c.queue = steps[::-1]
                heapq.heappush(heap, (start, i))
                c.group = self.group()  # a new request; the steps of one scenario share it


def _points(rng: random.Random) -> int:
    return rng.choice((10, 25, 40, 50, 100, 150, 200, 500))


# --------------------------------------------------------------------------- delivery


def _deliver(
    records: Iterable[dict[str, Any]],
    seed: int,
    late_fraction: float,
    duplicate_fraction: float,
) -> Iterator[dict[str, Any]]:
    """Arrival order: a `late_fraction` of activities is held back until 1-3 later
    activities of the same customer have been delivered (so each one sorts before something
    its customer already has), and a `duplicate_fraction` is delivered a second time, up to
    a few thousand records later."""
    rng = random.Random(f"deliver:{seed}")
    held: dict[str, list[list[Any]]] = {}  # customer -> [[countdown, record], ...]
    dups: list[tuple[int, int, dict[str, Any]]] = []  # (due position, seq, record)
    pos = 0
    seq = 0

    def out(rec: dict[str, Any]) -> Iterator[dict[str, Any]]:
        nonlocal pos, seq
        while dups and dups[0][0] <= pos:
            yield heapq.heappop(dups)[2]
            pos += 1
        yield rec
        pos += 1
        if duplicate_fraction and rng.random() < duplicate_fraction:
            seq += 1
            heapq.heappush(dups, (pos + rng.randint(0, 5000), seq, dict(rec)))

    for rec in records:
        cust = rec["data"]["customer"]["id"]
        if late_fraction and rng.random() < late_fraction:
            held.setdefault(cust, []).append([rng.randint(1, 3), rec])
            continue
        yield from out(rec)
        waiting = held.get(cust)
        if waiting:
            keep = []
            for item in waiting:
                item[0] -= 1
                if item[0] <= 0:
                    yield from out(item[1])
                else:
                    keep.append(item)
            if keep:
                held[cust] = keep
            else:
                del held[cust]
    for cust in sorted(held):
        for _, rec in held[cust]:
            yield from out(rec)
    while dups:
        yield heapq.heappop(dups)[2]


def generate(
    n_activities: int,
    n_customers: int,
    seed: int = 0,
    *,
    late_fraction: float = 0.0,
    duplicate_fraction: float = 0.0,
    days: int = 730,
) -> Iterator[dict[str, Any]]:
    """`n_activities` distinct activities of up to `n_customers` customers over `days` days
    from 2024-01-01, as dicts `{id, type, created_at, group_id, data}`, in arrival order.
    Without shuffling that is global business-time order. Duplicates come on top of
    `n_activities`. Every `data` carries `customer.id`."""
    if not 0.0 <= late_fraction <= 1.0 or not 0.0 <= duplicate_fraction <= 1.0:
        raise ValueError("fractions must be within [0, 1]")
    records: Iterator[dict[str, Any]] = iter(_Generator(n_activities, n_customers, seed, days))
    if late_fraction or duplicate_fraction:
        records = _deliver(records, seed, late_fraction, duplicate_fraction)
    return records


def generate_ndjson_bytes(
    n_activities: int, n_customers: int, seed: int = 0, **options: Any
) -> Iterator[bytes]:
    """The same records as NDJSON lines (each ends with a newline)."""
    dumps = orjson.dumps
    for rec in generate(n_activities, n_customers, seed, **options):
        yield dumps(rec) + b"\n"


def _chunks(lines: Iterable[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    buf: list[bytes] = []
    n = 0
    for line in lines:
        buf.append(line)
        n += len(line)
        if n >= size:
            yield b"".join(buf)
            buf.clear()
            n = 0
    if buf:
        yield b"".join(buf)


def write_ndjson(
    out: IO[bytes], n_activities: int, n_customers: int, seed: int = 0, **options: Any
) -> int:
    """Write NDJSON to a binary stream; returns the number of records written."""
    count = 0

    def lines() -> Iterator[bytes]:
        nonlocal count
        for line in generate_ndjson_bytes(n_activities, n_customers, seed, **options):
            count += 1
            yield line

    for chunk in _chunks(lines()):
        out.write(chunk)
    return count


def write_json(
    out: IO[bytes], n_activities: int, n_customers: int, seed: int = 0, **options: Any
) -> int:
    """Write one JSON array (one record per line inside it); returns the record count."""
    count = 0
    dumps = orjson.dumps

    def parts() -> Iterator[bytes]:
        nonlocal count
        yield b"["
        for rec in generate(n_activities, n_customers, seed, **options):
            yield (b"\n" if count == 0 else b",\n") + dumps(rec)
            count += 1
        yield b"\n]\n"

    for chunk in _chunks(parts()):
        out.write(chunk)
    return count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--activities", "-n", type=int, required=True, help="distinct activities")
    ap.add_argument("--customers", "-m", type=int, required=True)
    ap.add_argument("--seed", "-s", type=int, default=0)
    ap.add_argument("--format", choices=("ndjson", "json"), default="ndjson")
    ap.add_argument("--late-fraction", type=float, default=0.0, help="share delivered late")
    ap.add_argument("--duplicate-fraction", type=float, default=0.0, help="share redelivered")
    ap.add_argument("--days", type=int, default=730, help="business-time window from 2024-01-01")
    ap.add_argument("-o", "--output", default="-", help="file (default: stdout)")
    args = ap.parse_args(argv)
    write: Callable[..., int] = write_json if args.format == "json" else write_ndjson
    options = {
        "late_fraction": args.late_fraction,
        "duplicate_fraction": args.duplicate_fraction,
        "days": args.days,
    }
    if args.output == "-":
        write(sys.stdout.buffer, args.activities, args.customers, args.seed, **options)
        sys.stdout.buffer.flush()
    else:
        with open(args.output, "wb") as f:
            write(f, args.activities, args.customers, args.seed, **options)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
