"""A customer's history of real-shaped Voucherify payloads (the bundled samples) carrying
distinctive personal values, for the erasure tests: what must be gone afterwards."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

Json = dict[str, Any]
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"

ZELDA = "cust_zelda_erasable"
OTTO = "cust_otto_keeps"
NAME = "Zelda Quixotic-Erasable"
EMAIL = "zelda.quixotic@erasable.example"
PHONE = "+44 7700 900461"
NOTE = "ZQ-secret-note-4711"  # in the customer's metadata
STREET = "17 Forgetme Lane"  # in the customer's address
ERASED_VALUES = (NAME, EMAIL, PHONE, NOTE, STREET)
OTTO_NAME = "Otto Keepsmydata-Intact"

# The samples that make a loyalty history: points, a tier, a segment, orders, a redemption.
HISTORY = [
    "customer.created",
    "customer.updated",
    "customer.segment.entered",
    "customer.loyalty.tier.joined",
    "customer.voucher.loyalty_card.points_added",
    "customer.order.created",
    "customer.order.paid",
    "customer.redemption.succeeded",
    "customer.rewarded.loyalty_points",
    "customer.loyalty.tier.upgraded",
]


def _retarget(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        return {k: _retarget(v, old, new) for k, v in node.items()}
    if isinstance(node, list):
        return [_retarget(v, old, new) for v in node]
    return new if node == old else node


def history(customer: str, name: str, prefix: str) -> list[Json]:
    """The samples as one customer's activities, its profile fields set to the values."""
    out: list[Json] = []
    for i, sample in enumerate(HISTORY):
        data = json.loads((SAMPLES / f"{sample}.json").read_text())
        data = _retarget(data, data["customer"]["id"], customer)
        profile: Json = {"name": name}
        if customer == ZELDA:
            profile |= {
                "email": EMAIL,
                "phone": PHONE,
                "metadata": {"note": NOTE, "region": "EMEA"},
                "address": {"line_1": STREET, "city": "Nottingham"},
            }
        data["customer"] = {**data["customer"], **profile}
        if "order" in data:  # the name again, in a free-text field of the order
            data["order"] = copy.deepcopy(data["order"])
            data["order"].setdefault("metadata", {})["gift_message"] = f"For {name}, with love"
        out.append(
            {
                "id": f"{prefix}_{i}",
                "type": sample,
                "created_at": f"2024-03-{10 + i:02d}T10:00:00Z",
                "customer_id": customer,
                "data": data,
            }
        )
    return out
