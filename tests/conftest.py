"""Fixtures: a migrated database per test on SQLite, and on PostgreSQL when PLASMATRACE_TEST_POSTGRES_URL is set."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session

from traceability.db import make_engine
from traceability.migrate import upgrade

POSTGRES_URL = os.environ.get("PLASMATRACE_TEST_POSTGRES_URL")
NO_POSTGRES = "PLASMATRACE_TEST_POSTGRES_URL is not set: PostgreSQL tests need a server (bash .ci/run sets it)"


def pytest_report_header(config: pytest.Config) -> str:
    if POSTGRES_URL:
        return f"PostgreSQL tests: on ({make_url(POSTGRES_URL).render_as_string(hide_password=True)})"
    return f"PostgreSQL tests: SKIPPED, {NO_POSTGRES}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()  # the last connection to close checkpoints the WAL into the file
    return path


def create_postgres_database() -> str:
    """A fresh, uniquely named database on the test server; returns its URL."""
    if not POSTGRES_URL:
        pytest.skip(NO_POSTGRES)
    admin = make_engine(POSTGRES_URL)
    name = f"plasmatrace_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    admin = make_engine(POSTGRES_URL or url)
    name = make_url(url).database
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_engine() -> Iterator[Engine]:
    """A migrated PostgreSQL database for the whole run; each test works inside a rolled-back transaction."""
    url = create_postgres_database()
    engine = make_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()
    drop_postgres_database(url)


@pytest.fixture(name="db_url", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url_fixture(request: pytest.FixtureRequest, sqlite_template: Path, tmp_path: Path) -> Iterator[str]:
    """A committed, migrated database of its own for tests that need several connections or processes."""
    if request.param == "sqlite":
        path = tmp_path / "plasmatrace.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    url = create_postgres_database()
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    drop_postgres_database(url)


@pytest.fixture(name="engine_name", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine_name_fixture(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(name="session")
def session_fixture(
    request: pytest.FixtureRequest, engine_name: str, sqlite_template: Path, tmp_path: Path
) -> Iterator[Session]:
    """A session on a migrated database: a fresh SQLite copy, or a PostgreSQL transaction rolled back after."""
    if engine_name == "sqlite":
        path = tmp_path / "session.db"
        shutil.copy(sqlite_template, path)
        engine = make_engine(f"sqlite:///{path}")
        with Session(engine, expire_on_commit=False) as session, session.begin():
            yield session
        engine.dispose()
        return
    engine = request.getfixturevalue("postgres_engine")
    with engine.connect() as conn:
        outer = conn.begin()
        with Session(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False) as session:
            session.begin()
            yield session
        outer.rollback()
