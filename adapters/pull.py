"""Pulling customers' activities from the Voucherify API into the store, resumably.

The cursor of a customer is the id of the last activity pulled and stored (`cs.pull_cursors()`,
a table beside the events). It advances only after a page's records were ingested
(committed), so a pull killed at any point refetches at most one page on the next run, and
those records are duplicates, stored once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from custate.adapters.api import Custate, IngestReport, PullCursors
from custate.adapters.readers import records_from_value
from custate.adapters.voucherify import VoucherifyClient, VoucherifyError

__all__ = ["CustomerPull", "PullCursors", "pull_customer"]


@dataclass(slots=True)
class CustomerPull:
    """What a pull of one customer did: pages fetched, what became of their records, the
    cursor it left, and the error that stopped it (None: it got everything)."""

    customer_id: str
    pages: int = 0
    report: IngestReport = field(default_factory=IngestReport)
    cursor: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _add(total: IngestReport, part: IngestReport) -> None:
    total.read += part.read
    total.accepted += part.accepted
    total.duplicates += part.duplicates
    total.conflicts += part.conflicts
    total.rejected += part.rejected
    total.unrecognized += part.unrecognized
    total.resolved += part.resolved
    total._note(part.problems)


def pull_customer(
    cs: Custate,
    client: VoucherifyClient,
    cursors: PullCursors,
    customer_id: str,
    since: str | None = None,
    on_page: Callable[[CustomerPull], None] | None = None,
) -> CustomerPull:
    """Fetch and store every activity of one customer after its cursor. Errors are kept in
    the result (the caller goes on with the next customer)."""
    out = CustomerPull(customer_id, cursor=cursors.get(customer_id))
    source = f"voucherify:/v1/customers/{customer_id}/activity"
    try:
        for page in client.activity_pages(customer_id, out.cursor, since):
            location = f"after {out.cursor or 'start'}"
            items = records_from_value(page.body, source, location, customer_id)
            _add(out.report, cs.ingest_items(items, project=False))
            out.pages += 1
            if page.next_after is not None and page.next_after != out.cursor:
                cursors.set(customer_id, page.next_after)
                out.cursor = page.next_after
            if on_page is not None:
                on_page(out)
    except VoucherifyError as e:
        out.error = str(e)
    return out
