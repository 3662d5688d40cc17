"""Engines and units of work: the only place where SQLite and PostgreSQL differ."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, create_engine

from .config import Settings, normalise_database_url
from .errors import DatabaseUnavailable

_engines: dict[str, Engine] = {}  # one per URL and lock timeout, for the life of the process


def safe_url(url: str | URL) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(str(url)).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def make_engine(url: str, *, lock_timeout_s: float = 30.0, echo: bool = False) -> Engine:
    """An engine with foreign keys on and WAL for SQLite, psycopg 3 for PostgreSQL."""
    url = normalise_database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        memory = parsed.database in (None, "", ":memory:")
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": lock_timeout_s}}
        if memory:
            kwargs["poolclass"] = StaticPool
        engine = create_engine(url, echo=echo, **kwargs)
        _configure_sqlite(engine, wal=not memory)
        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)


def _configure_sqlite(engine: Engine, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy issue BEGIN itself so a writing unit of work can take the write lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        if wal:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # BEGIN IMMEDIATE: a writer waits for the lock (busy timeout) instead of failing on upgrade later.
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


def engine_for(settings: Settings) -> Engine:
    """One cached engine per URL for the life of the process."""
    key = f"{settings.database_url}|{settings.lock_timeout_s}"
    if key not in _engines:
        _engines[key] = make_engine(settings.database_url, lock_timeout_s=settings.lock_timeout_s)
    return _engines[key]


def describe_operational_error(error: DBAPIError, url: str | URL) -> str:
    message = str(error.orig) if error.orig is not None else str(error)
    lowered = message.lower()
    where = safe_url(url)
    if "locked" in lowered or "could not obtain lock" in lowered or "lock timeout" in lowered:
        return f"The database {where} stayed locked by another user for too long; try again. ({message.strip()})"
    if "readonly" in lowered or "read-only" in lowered or "read only" in lowered:
        return f"The database {where} is read-only; nothing was changed."
    if "unable to open" in lowered or "connection" in lowered or "could not connect" in lowered:
        return f"The database {where} cannot be reached: {message.strip()}"
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        return f"The database {where} has no plasmatrace schema yet; run `plasmatrace init` first."
    return f"Database error on {where}: {message.strip()}"


@contextmanager
def unit_of_work(settings: Settings, *, readonly: bool = False) -> Iterator[Session]:
    """A session in one transaction: commit on success, roll back on any exception."""
    engine = engine_for(settings)
    try:
        bind: Any = engine.execution_options(sqlite_begin="DEFERRED") if readonly else engine
        with Session(bind, expire_on_commit=False) as session:
            with session.begin():
                yield session
    except OperationalError as error:
        raise DatabaseUnavailable(describe_operational_error(error, engine.url)) from error


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """Same as unit_of_work for a given engine (scripts, benchmarks, tests)."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


def lock_audit_chain(session: Session) -> None:
    """Serialise appends to the audit chain across processes (SQLite already has one writer at a time)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(7261001)"))
