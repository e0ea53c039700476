"""Fixtures shared by every suite. `store_url` runs a test once per storage backend:
SQLite always, PostgreSQL when CUSTATE_TEST_POSTGRES_URL is set (each test in a schema of
its own, dropped afterwards)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

POSTGRES_ENV = "CUSTATE_TEST_POSTGRES_URL"
DATA = Path(__file__).parent / "data"


def postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


@pytest.fixture(scope="session")
def _postgres_admin() -> Iterator[sa.Engine | None]:
    """One engine for the whole session that drops the tests' schemas (None without
    PostgreSQL), instead of a connection set up and torn down for each test."""
    base = postgres_url()
    if base is None:
        yield None
        return
    engine = sa.create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    base = postgres_url()
    admin: sa.Engine | None = request.getfixturevalue("_postgres_admin")
    if base is None or admin is None:
        pytest.skip(
            f"PostgreSQL tests need {POSTGRES_ENV} "
            "(e.g. postgresql://postgres@127.0.0.1:5432/test); .ci/run sets it"
        )
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield f"{base}?schema={schema}"
    with admin.begin() as c:
        c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"
