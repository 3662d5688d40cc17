"""Engines and units of work: the only place where SQLite and PostgreSQL differ."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DatabaseError, DataError, DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, create_engine

from ..config import Settings, normalise_database_url
from ..errors import ConcurrentChange, DatabaseUnavailable, InvalidInput, NotPermitted

_engines: dict[str, Engine] = {}  # one per URL and lock timeout, for the life of the process
_SECRET_QUERY_KEYS = ("password", "passfile", "sslpassword", "sslkey")


def safe_url(url: str | URL) -> str:
    """The URL with its password hidden, also one given as ``?password=``, for messages and logs."""
    try:
        parsed = make_url(str(url))
        hidden = {k: "***" for k in parsed.query if k.lower() in _SECRET_QUERY_KEYS}
        return parsed.update_query_dict(hidden).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def check_database_url(url: str) -> URL:
    """A URL plasmatrace can use: sqlite:///FILE or postgresql://... Raises InvalidInput (exit 5) naming it."""
    hint = "use sqlite:///FILE or postgresql://USER@HOST/DB"
    try:
        parsed = make_url(url)
    except Exception:
        raise InvalidInput(f"--db {safe_url(url)!r} is not a database URL; {hint}.") from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise InvalidInput(f"--db {safe_url(url)}: {backend!r} databases are not supported; {hint}.")
    if backend == "postgresql" and parsed.get_driver_name() not in ("psycopg", "psycopg2"):
        raise InvalidInput(f"--db {safe_url(url)}: driver {parsed.get_driver_name()!r} is not installed; {hint}.")
    return parsed


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other engines and for in-memory databases)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    name = parsed.database
    if name.startswith("file:"):
        name = name[5:].split("?", 1)[0]
    return Path(name)


def require_existing_database(url: str) -> None:
    """Every command but ``init`` and ``demo`` opens an existing SQLite file only, so that a mistyped path does
    not leave an empty database (and its -wal and -shm files) behind. Raises DatabaseUnavailable."""
    path = sqlite_path(url)
    if path is None:
        return
    if not path.exists():
        raise DatabaseUnavailable(
            f"The database {path} does not exist; check --db, or run `plasmatrace init` first to create it."
        )
    if path.is_dir():
        raise DatabaseUnavailable(f"The database {path} is a folder, not a SQLite file.")


def database_files(url: str) -> list[Path]:
    """The files a SQLite database lives in (the file, its -wal and -shm), resolved; empty for PostgreSQL."""
    path = sqlite_path(url)
    if path is None:
        return []
    path = path.resolve()
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def make_engine(url: str, *, lock_timeout_s: float = 30.0, echo: bool = False) -> Engine:
    """An engine with foreign keys on and WAL for SQLite, psycopg 3 for PostgreSQL."""
    url = normalise_database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        memory = parsed.database in (None, "", ":memory:")
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": lock_timeout_s}}
        if memory:
            kwargs["poolclass"] = StaticPool
        path = sqlite_path(url)
        if path is not None and _read_only(path):
            # A file on read-only media (or without write permission) is opened immutable: it can be read, and
            # SQLite neither writes its journal nor creates -wal and -shm files beside it.
            url = f"sqlite:///file:{path.resolve()}?immutable=1&uri=true"
            kwargs["connect_args"]["uri"] = True
            engine = create_engine(url, echo=echo, **kwargs)
            _configure_sqlite(engine, wal=False)
            return engine
        engine = create_engine(url, echo=echo, **kwargs)
        _configure_sqlite(engine, wal=not memory)
        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)


def _read_only(path: Path) -> bool:
    """A SQLite file that exists but cannot be written: its folder or the file itself refuses writes."""
    if not path.is_file():
        return False
    try:
        with path.open("r+b"):
            pass
    except OSError:
        return True
    try:
        return os.statvfs(path).f_flag & os.ST_RDONLY != 0
    except (AttributeError, OSError):
        return False


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
    if "authentication failed" in lowered or "not permitted to log in" in lowered:
        return f"The database {where} refused the login: {message.strip().splitlines()[-1].strip()}"
    if "locked" in lowered or "could not obtain lock" in lowered or "lock timeout" in lowered:
        return f"The database {where} stayed locked by another user for too long; try again. ({message.strip()})"
    if "readonly" in lowered or "read-only" in lowered or "read only" in lowered:
        return f"The database {where} is read-only; nothing was changed."
    if "unable to open" in lowered or "connection" in lowered or "could not connect" in lowered:
        return f"The database {where} cannot be reached: {message.strip()}"
    if "not a database" in lowered or "file is encrypted" in lowered or "malformed" in lowered:
        return f"{where} is not a plasmatrace database (not a SQLite file, or damaged): {message.strip()}"
    if "disk is full" in lowered or "no space" in lowered or "disk i/o" in lowered:
        return f"The database {where} could not be written: {message.strip()}; nothing was changed."
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
        lowered = str(error.orig).lower()
        if "authentication failed" in lowered or "not permitted to log in" in lowered:
            raise NotPermitted(describe_operational_error(error, engine.url)) from error
        if "deadlock" in lowered or "could not serialize" in lowered:
            raise ConcurrentChange(
                "Another user changed the same records at the same moment; nothing was changed. Try again."
            ) from error
        raise DatabaseUnavailable(describe_operational_error(error, engine.url)) from error
    except DatabaseError as error:
        if isinstance(error, IntegrityError | DataError | ProgrammingError):
            raise
        raise DatabaseUnavailable(describe_operational_error(error, engine.url)) from error


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """Same as unit_of_work for a given engine (scripts, benchmarks, tests)."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


_LOGIN_KEY = "plasmatrace.login"


def database_login(session: Session) -> str | None:
    """The login PostgreSQL authenticated for this session (``session_user``), read once; None on SQLite, which
    has no logins. The audit trail records this login as the actor, whatever the caller says."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    login = session.info.get(_LOGIN_KEY)
    if login is None:
        login = session.execute(text("SELECT session_user")).scalar_one()
        session.info[_LOGIN_KEY] = login
    return str(login)


def database_now(session: Session) -> datetime:
    """The database server's clock on PostgreSQL (the time of the transaction); this machine's UTC clock on SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        value: datetime = session.execute(text("SELECT now()")).scalar_one()
        return value.astimezone(UTC)
    return datetime.now(UTC)


def lock_audit_chain(session: Session) -> None:
    """Serialise appends to the audit chain across processes (SQLite already has one writer at a time)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(7261001)"))
