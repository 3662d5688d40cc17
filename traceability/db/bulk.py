"""Writing many rows of one table through the driver, as each engine does it fastest: one executemany of an INSERT
compiled from the table on SQLite, COPY ... FROM STDIN through psycopg 3 on PostgreSQL (formatted ahead, written in
a thread of its own). Values go as the driver takes them (:func:`driver_converter`), so rows written here read back
and compare exactly as rows written through the ORM.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, Protocol

from sqlalchemy import Connection, Table, func, insert, select
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .dialect import is_sqlite, pipelines_writes

_CONVERTED = 1 << 12


def driver_converter(column: Any, dialect: Dialect) -> Callable[[Any], Any]:
    """A value of ``column`` as the driver takes it for the same stored value as the column type gives: by the
    type's own bind processing, except for UTCDateTime, done here in one step (a test checks both against the
    type). On SQLite that is the naive-UTC text the type stores; on PostgreSQL, ISO 8601 text in UTC with its
    offset, the instant the type's aware datetime would be (psycopg formats text for COPY four times faster than
    datetime objects). Times repeat in a file: each distinct value is converted once (bounded)."""
    from ..models import UTCDateTime  # the models use this package for their own dialect decisions

    process: Callable[[Any], Any] | None
    if isinstance(column.type, UTCDateTime):
        process = _utc_text if is_sqlite(dialect) else _utc_iso
    else:
        process = column.type.dialect_impl(dialect).bind_processor(dialect)
    if process is None:
        return lambda value: value
    convert_value = process
    done: dict[Any, Any] = {}

    def convert(value: Any) -> Any:
        try:
            return done[value]
        except KeyError:
            pass
        if len(done) >= _CONVERTED:
            done.clear()
        done[value] = converted = convert_value(value) if value is not None else None
        return converted

    return convert


def _utc_aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"timestamp {value.isoformat()} has no time zone")
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def _utc_iso(value: datetime) -> str:
    """UTCDateTime on PostgreSQL: the UTC time as ISO 8601 text with its offset (``+00:00``)."""
    return _utc_aware(value).isoformat()


def _utc_text(value: datetime) -> str:
    """UTCDateTime on SQLite: the UTC time as the text SQLAlchemy's SQLite DATETIME stores."""
    return _utc_aware(value).replace(tzinfo=None).isoformat(" ", "microseconds")


class BulkWriter(Protocol):
    """Writes rows of a table; made by :func:`bulk_writer` for the session's database.

    ``pipelined``: :meth:`start` returns at once and the rows are written in a thread of its own while the caller
    goes on (who must leave the session alone until the wait returns); else they are written before it returns.
    """

    pipelined: bool

    def ready(self) -> None:
        """Get ready to :meth:`prepare` rows; called while no write is under way."""

    def prepare(self, rows: list[tuple[Any, ...]]) -> bytes | None:
        """The rows in the form :meth:`start` sends (COPY data), or None when they go as they are."""

    def start(
        self, table: Table, names: tuple[str, ...], rows: list[tuple[Any, ...]], data: bytes | None
    ) -> Callable[[], int]:
        """Start writing ``rows`` (each value in the order of ``names``); returns a function that waits for the
        end and gives the table's highest id after it."""

    def close(self) -> None:
        """Stop the writing thread, once any write it is doing has ended."""


def bulk_writer(session: Session) -> BulkWriter:
    """The bulk writer for the session's database: COPY in a thread on PostgreSQL, executemany on SQLite."""
    if pipelines_writes(session):
        return _CopyWriter(session)
    return _ExecuteManyWriter(session)


_STATEMENTS: dict[tuple[str, str, tuple[str, ...]], tuple[str, Callable[[tuple[Any, ...]], Any] | None]] = {}


def _insert_sql(
    table: Table, names: tuple[str, ...], connection: Connection
) -> tuple[str, Callable[[tuple[Any, ...]], Any] | None]:
    """The INSERT of these columns of ``table`` compiled for the connection's dialect (SQL from the table
    definition only, compiled once), and how to reorder a row into its parameter order (None: as it is)."""
    key = (connection.dialect.name, table.name, names)
    if key not in _STATEMENTS:
        compiled = insert(table).compile(dialect=connection.dialect, column_keys=list(names))
        order = list(compiled.positiontup or ())
        if sorted(order) != sorted(names):
            raise RuntimeError(f"INSERT into {table.name} takes {order}, not {list(names)}")
        positions = [names.index(name) for name in order]
        reorder = None if positions == list(range(len(names))) else itemgetter(*positions)
        _STATEMENTS[key] = (str(compiled), reorder)
    return _STATEMENTS[key]


class _ExecuteManyWriter:
    """One executemany of the INSERT compiled for the dialect, in the calling thread (sqlite3 would hold up a
    writing thread after every row it steps)."""

    pipelined = False

    def __init__(self, session: Session) -> None:
        self.session = session

    def ready(self) -> None:
        pass

    def prepare(self, rows: list[tuple[Any, ...]]) -> bytes | None:
        return None

    def start(
        self, table: Table, names: tuple[str, ...], rows: list[tuple[Any, ...]], data: bytes | None
    ) -> Callable[[], int]:
        connection = self.session.connection()
        statement, order = _insert_sql(table, names, connection)
        connection.exec_driver_sql(statement, rows if order is None else list(map(order, rows)))
        top: int = connection.execute(select(func.max(table.c.id))).scalar_one()
        return lambda: top

    def close(self) -> None:
        pass


class _CopyWriter:
    """COPY ... FROM STDIN through psycopg 3, in a thread of its own, in the connection's transaction."""

    pipelined = True

    def __init__(self, session: Session) -> None:
        self.session = session
        self._formatter: _CopyFormatter | None = None
        self._thread: ThreadPoolExecutor | None = None

    def _driver(self) -> Any:
        return self.session.connection().connection.driver_connection

    def ready(self) -> None:
        if self._formatter is None:
            self._formatter = _CopyFormatter(self._driver())

    def prepare(self, rows: list[tuple[Any, ...]]) -> bytes | None:
        assert self._formatter is not None, "ready() first"
        return self._formatter.data(rows)

    def start(
        self, table: Table, names: tuple[str, ...], rows: list[tuple[Any, ...]], data: bytes | None
    ) -> Callable[[], int]:
        driver = self._driver()
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plasmatrace-writer")
        return self._thread.submit(_copy, driver, table, names, data or b"").result

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        if self._formatter is not None:
            self._formatter.close()
            self._formatter = None


class _CopyFormatter:
    """Rows as COPY text data, formatted by psycopg exactly as for rows sent one by one, without the server: one
    ``Copy`` for the whole import on a cursor of the connection (for its adapters), never started, whose writer
    collects the data. Made while the connection is idle, so that formatting later never asks the connection
    anything while the writing thread uses it."""

    def __init__(self, driver: Any) -> None:
        from psycopg.copy import Copy, Writer

        class Collect(Writer):
            def __init__(self) -> None:
                self.parts: list[Any] = []

            def write(self, data: Any) -> None:
                self.parts.append(data)

        self._cursor = driver.cursor()
        self._sink = Collect()
        self._copy = Copy(self._cursor, writer=self._sink)

    def data(self, rows: list[tuple[Any, ...]]) -> bytes:
        write_row = self._copy.write_row
        for row in rows:
            write_row(row)
        parts = self._sink.parts
        parts.append(self._copy.formatter.end())  # what is left in the formatter's buffer
        data = b"".join(parts)
        parts.clear()
        return data

    def close(self) -> None:
        self._cursor.close()


def _copy(driver: Any, table: Table, names: tuple[str, ...], data: bytes) -> int:
    """COPY ... FROM STDIN of the rows' COPY data through psycopg 3, in the connection's transaction; the table's
    highest id after it. Runs in the writing thread, which holds the interpreter only to start and end: the data
    goes to the server while the importing thread checks the next chunk and leaves the connection alone."""
    import psycopg
    from psycopg import sql

    name = sql.Identifier(table.name)
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(name, sql.SQL(", ").join(sql.Identifier(n) for n in names))
    try:
        with driver.cursor() as cursor:
            with cursor.copy(statement) as copy:
                copy.write(data)
            top: int = cursor.execute(sql.SQL("SELECT max(id) FROM {}").format(name)).fetchone()[0]
            return top
    except psycopg.IntegrityError as error:  # raised as SQLAlchemy raises it for every other write
        raise IntegrityError(statement.as_string(driver), None, error) from error
