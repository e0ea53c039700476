"""A rebuild swaps in a new generation and drops the old one's tables; a `Custate` that
still held the old generation keeps ingesting and reading through it (SQLite: an earlier
version ended an `ingest` with `no such table: custate_rm1_checkpoints` after its
activities were committed)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import custate


def activity(i: int) -> dict[str, object]:
    return {
        "id": f"act_{i}",
        "type": "customer.updated" if i else "customer.created",
        "created_at": f"2024-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "data": {"customer": {"id": f"cust_{i % 7}", "metadata": {"n": i}}},
    }


def test_ingest_and_reads_keep_working_while_rebuilds_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    with custate.open(url) as cs:
        cs.ingest([activity(i) for i in range(300)])
    done = threading.Event()
    rebuilds: list[int] = []
    failures: list[BaseException] = []

    def rebuild_again_and_again() -> None:
        try:
            with custate.open(url) as other:
                while not done.is_set() or not rebuilds:
                    other.rebuild(batch_size=50)
                    rebuilds.append(1)
        except BaseException as e:  # reported below
            failures.append(e)

    thread = threading.Thread(target=rebuild_again_and_again)
    with custate.open(url) as cs:
        thread.start()
        try:
            for n in range(300, 600, 10):
                report = cs.ingest([activity(i) for i in range(n, n + 10)])
                assert report.accepted == 10
                cs.state(f"cust_{n % 7}")
                assert cs.count_customers() == 7
                assert len(cs.customers(limit=100)) == 7
        finally:
            done.set()
            thread.join()
        assert not failures, failures
        assert rebuilds
        cs.project()
        # every activity is reflected, whichever generation folded it
        assert sum(cs.state(f"cust_{c}").activities.count for c in range(7)) == 600


def test_customer_queries_answer_from_the_generation_a_rebuild_swapped_in(
    store_url: str,
) -> None:
    """A `Custate` keeps the generation it last used for its customers queries (no query
    of which is active per call); after another one rebuilt, a page and a count answer from
    the new generation, never the retired one: both when the rebuild dropped the old
    tables, and when they are still there (a rebuild stopped between its swap and the
    drop)."""
    from custate.adapters.readmodel import ReadModel
    from custate.adapters.readmodel.generations import Generations

    with custate.open(store_url) as reader, custate.open(store_url) as other:
        reader.ingest([activity(i) for i in range(7)])
        assert [r.customer_id for r in reader.customers(limit=100)] == [
            f"cust_{c}" for c in range(7)
        ]
        assert reader.count_customers() == 7
        # A new customer the read model has not seen, then a whole rebuild elsewhere.
        other.ingest([_new_customer("new_a")], project=False)
        other.rebuild()
        assert "new_a" in [r.customer_id for r in reader.customers(limit=100)]
        assert reader.count_customers() == 8
        # Another one, and a new generation swapped in with the old tables left in place.
        other.ingest([_new_customer("new_b")], project=False)
        gens = Generations(other.store.engine)
        active = gens.active()
        fresh = ReadModel(other.store, generation=gens.building(active))
        fresh.catch_up()
        gens.activate(fresh.t.generation)
        assert ReadModel(other.store, generation=active).count(custate.CustomerQuery()) == 8
        assert reader.count_customers() == 9
        assert [r.customer_id for r in reader.customers(limit=2, after="new_a")] == ["new_b"]
        assert reader.customers(status="no such status") == []


def test_a_state_read_answers_from_the_generation_a_rebuild_swapped_in(store_url: str) -> None:
    """A customer's current state is read in one statement with the active generation,
    from the generation the `Custate` last used: after another process swapped a new one
    in, with the old tables still there, it answers from the new one (a customer the old
    generation never had included), and so does the position its freshness reports."""
    from custate.adapters.readmodel import ReadModel
    from custate.adapters.readmodel.generations import Generations

    with custate.open(store_url) as reader, custate.open(store_url) as other:
        reader.ingest([activity(i) for i in range(3)])
        assert reader.state("cust_1").activities.count == 1
        before = reader.freshness("cust_1").position
        other.ingest([_new_customer("new_c"), {**activity(1), "id": "act_more_1"}], project=False)
        gens = Generations(other.store.engine)
        active = gens.active()
        fresh = ReadModel(other.store, generation=gens.building(active))
        fresh.catch_up()
        gens.activate(fresh.t.generation)
        # the retired generation's tables answer still, with what it had
        old = ReadModel(other.store, generation=active)
        assert old.current("new_c") is None
        assert old.current("cust_1") is not None
        assert old.current("cust_1").activities.count == 1  # type: ignore[union-attr]
        assert reader.state("new_c").customer_id == "new_c"
        assert reader.state("cust_1").activities.count == 2
        assert reader.freshness("cust_1").position > before


def _new_customer(cid: str) -> dict[str, object]:
    return {
        "id": f"act_{cid}",
        "type": "customer.created",
        "created_at": "2024-02-01T00:00:00Z",
        "data": {"customer": {"id": cid}},
    }


def test_a_read_answers_after_rebuilds_retire_its_generation_again_and_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rebuilds run back to back (another process's, or a test's) can retire the generation
    a read retried on as well: the read goes on to the generation active then, rather than
    fail with `no such table` on its second try (seen under load in CI)."""
    from custate.adapters.readmodel import ReadModel

    url = f"sqlite:///{tmp_path / 's.db'}"
    with custate.open(url) as cs, custate.open(url) as other:
        cs.ingest([activity(i) for i in range(20)])
        real = ReadModel.current_if_active
        swaps: list[int] = []

        def current_if_active(self: ReadModel, customer_id: str) -> object:
            if len(swaps) < 3:  # a rebuild swaps and drops this generation first
                swaps.append(self.t.generation)
                other.rebuild()
            return real(self, customer_id)

        monkeypatch.setattr(ReadModel, "current_if_active", current_if_active)
        assert cs.state("cust_1").activities.count == 3
        assert len(set(swaps)) == 3  # each try was on a generation retired under it
