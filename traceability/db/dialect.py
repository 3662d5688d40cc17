"""What differs between SQLite and PostgreSQL outside the engine set-up: every such decision is made here, so that
the rest of the code asks for a capability (a key-set lookup, a difference of times in days, logins that are the
database's own) and never reads the engine's name. A test fails when ``dialect.name`` is read elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    ColumnElement,
    Connection,
    Engine,
    FromClause,
    Select,
    String,
    bindparam,
    extract,
    func,
    select,
    text,
    true,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

Bind = Session | Connection | Engine | Dialect
"""Anything that knows its database: a session, a connection, an engine or the dialect itself."""


def _dialect(bind: Bind) -> Dialect:
    if isinstance(bind, Dialect):
        return bind
    if isinstance(bind, Session):
        return bind.get_bind().dialect
    return bind.dialect


def is_postgresql(bind: Bind) -> bool:
    """True on PostgreSQL, False on SQLite (the only two engines plasmatrace runs on)."""
    return _dialect(bind).name == "postgresql"


def is_sqlite(bind: Bind) -> bool:
    """True on SQLite."""
    return _dialect(bind).name == "sqlite"


def stored_utc(value: datetime, dialect: Dialect) -> datetime:
    """A UTC time as the database stores it: naive on SQLite, which keeps no zone; as it is elsewhere."""
    return value.replace(tzinfo=None) if is_sqlite(dialect) else value


def dialect_key(dialect: Dialect) -> tuple[str, str, str]:
    """What a statement compiled for this dialect depends on: a key for caches of compiled statements."""
    return (dialect.name, str(dialect.driver), str(dialect.paramstyle))


def logins_are_database_roles(bind: Bind) -> bool:
    """True where users are the database's own logins (PostgreSQL: the server checks passwords and grants);
    False where plasmatrace keeps its users itself (SQLite)."""
    return is_postgresql(bind)


def pipelines_writes(bind: Bind) -> bool:
    """Whether an import reads ahead and writes one chunk late, in threads of their own: on PostgreSQL, whose
    driver lets go of the interpreter while the server works. Not on SQLite, where everything runs in the
    importing thread: sqlite3 lets go of the interpreter around every row it writes or fetches and must then win
    it back from the other threads, row after row (an import took 6% longer with a reading thread, a chunk's
    lookups 4x longer; writing one chunk late, 5% longer)."""
    return is_postgresql(bind)


# --- key-set lookups --------------------------------------------------------------------------------------------


def among(bind: Bind, column: Any, values: Iterable[Any]) -> ColumnElement[bool]:
    """``column IN values``. On PostgreSQL as one array parameter, so that the statement is the same for every
    chunk instead of thousands of parameters to render, send and plan each time; and as ``IN (SELECT
    unnest(array))``, not ``= ANY(array)``: for the latter, until the table has statistics (a table filled by
    this very import, or by the import just before it), the planner takes the array's 5,000 values for a large
    share of the table and scans all of it (100 ms a chunk at 1,000,000 donations instead of 10 ms) until the
    statement has run often enough to get a generic plan; the semi-join probes the unique index from the start.
    On SQLite as one JSON array read by ``json_each``, for the same reason (the index is probed all the same)."""
    found: ColumnElement[bool]
    if is_postgresql(bind):
        found = column.in_(select(func.unnest(bindparam(None, list(values), type_=ARRAY(column.type)))))
        return found
    wanted = func.json_each(bindparam(None, json.dumps(list(values)), type_=String)).table_valued("value")
    found = column.in_(select(wanted.c.value))
    return found


def rows_for_keys(
    bind: Bind, key: Any, keys: list[str], columns: Mapping[str, Any], *, keep_missing: bool = False
) -> Select[Any]:
    """One row per wanted key: the key (labelled with the key column's name) and the given expressions over the
    row of ``key``'s table holding it (NULL when there is none, with ``keep_missing``).

    The keys go as one parameter, not an IN list of 20,000: a JSON array read by ``json_each`` on SQLite, a text
    array read by ``unnest`` on PostgreSQL. Each is looked up in the key's index: SQLite does so by itself;
    PostgreSQL, left to choose, hashes the whole table instead (0.3 s more at 1,000,000 donations), so there the
    lookup is a LATERAL subquery that OFFSET 0 keeps from being merged into a join.
    """
    table: FromClause = key.table
    if is_postgresql(bind):
        wanted = (
            func.unnest(bindparam(None, keys, type_=ARRAY(String)))
            .table_valued("value", name="wanted")
            .render_derived()
        )
        found = (
            select(*(expression.label(name) for name, expression in columns.items()))
            .where(key == wanted.c.value)
            .offset(0)
            .lateral("unit")
        )
        return (
            select(wanted.c.value.label(key.key), *found.c)
            .select_from(wanted)
            .join(found, true(), isouter=keep_missing)
        )
    wanted = func.json_each(bindparam(None, json.dumps(keys), type_=String)).table_valued("value", name="wanted")
    return (
        select(wanted.c.value.label(key.key), *(expression.label(name) for name, expression in columns.items()))
        .select_from(wanted)
        .join(table, key == wanted.c.value, isouter=keep_missing)
    )


# --- date arithmetic --------------------------------------------------------------------------------------------


def days_between(bind: Bind, later: Any, earlier: Any) -> ColumnElement[Any]:
    """``later - earlier`` in days (with fractions), as SQL."""
    if is_postgresql(bind):
        return (extract("epoch", later) - extract("epoch", earlier)) / 86_400.0
    return func.julianday(later) - func.julianday(earlier)


# --- planner ----------------------------------------------------------------------------------------------------


def refresh_statistics(session: Session, tables: Iterable[str]) -> None:
    """Give the planner statistics on tables just bulk-loaded in this transaction (PostgreSQL; SQLite plans
    without them)."""
    if is_postgresql(session):
        session.execute(text(f"ANALYZE {', '.join(tables)}"))


@contextmanager
def without_jit(connection: Connection) -> Iterator[None]:
    """Run the block with PostgreSQL's JIT compilation off (the transaction's setting is put back after); nothing
    on SQLite, which has none."""
    if not is_postgresql(connection):
        yield
        return
    previous = connection.execute(select(func.current_setting("jit"))).scalar_one()
    connection.execute(select(func.set_config("jit", "off", True)))
    yield
    connection.execute(select(func.set_config("jit", previous, True)))


# --- schema changes ---------------------------------------------------------------------------------------------


@contextmanager
def foreign_keys_off(conn: Connection) -> Iterator[Callable[[], None]]:
    """On SQLite, foreign keys off for the block (outside a transaction, where SQLite takes it): a migration may
    rebuild a table (copy, drop, rename), and dropping the old table would be refused or take the rows that refer
    to it along. Yields a check to run before committing, which raises RuntimeError naming rows whose references
    are broken. On PostgreSQL, nothing changes and the check does nothing."""
    if not is_sqlite(conn):
        yield lambda: None
        return
    raw: Any = conn.connection.dbapi_connection

    def check() -> None:
        broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
        if broken:
            raise RuntimeError(f"the migration left rows whose references are broken: {broken[:5]}")

    raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield check
    finally:
        raw.execute("PRAGMA foreign_keys=ON")


class utc_time_text(FunctionElement[str]):  # noqa: N801 - a SQL construct, named as SQL functions are
    """A UTC timestamp column as the text ``YYYY-MM-DD HH:MM:SS.ffffff``: what SQLite stores already, and what
    PostgreSQL renders on the server instead of handing the driver a datetime object to convert row by row."""

    inherit_cache = True
    name = "utc_time_text"


class date_text(FunctionElement[str]):  # noqa: N801 - a SQL construct
    """A date column as the text ``YYYY-MM-DD`` (SQLite stores it so)."""

    inherit_cache = True
    name = "date_text"


@compiles(utc_time_text)
@compiles(date_text)
def _stored_text(element: FunctionElement[str], compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(utc_time_text, "postgresql")
def _utc_time_text_postgresql(element: FunctionElement[str], compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    return f"to_char(({column}) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"


@compiles(date_text, "postgresql")
def _date_text_postgresql(element: FunctionElement[str], compiler: Any, **kw: Any) -> str:
    return f"to_char({compiler.process(element.clauses, **kw)}, 'YYYY-MM-DD')"
