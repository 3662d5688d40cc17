"""How an import moves through a file: chunk by chunk, read ahead in a thread and written one chunk late when the
database's bulk writer is pipelined (:mod:`traceability.db.bulk`), so that reading, checking and writing overlap
on two cores; everything in the importing thread otherwise.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable, Container, Generator, Iterable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from itertools import islice
from operator import itemgetter
from typing import Any, Generic, TypeVar

from sqlalchemy import Table
from sqlmodel import Session

from ..db.bulk import BulkWriter, bulk_writer
from .readers import Record
from .spec import Parsed, R, RowParser

T = TypeVar("T")

SWITCH_INTERVAL = 0.0005

Chunk = tuple[list[Record], list[Parsed[Any]]]


def parsed_chunks(records: Iterable[Record], parse: RowParser[R], size: int) -> Generator[Chunk, None, None]:
    """The records in chunks of ``size``, each with its rows as parsed (row or problems, record by record)."""
    records = iter(records)
    while chunk := list(islice(records, size)):
        yield chunk, list(map(parse, chunk))


@contextmanager
def _quick_thread_switches() -> Iterator[None]:
    """Hand the interpreter from thread to thread every SWITCH_INTERVAL seconds instead of every 5 ms while a
    pipelined import runs. The importing thread, the reading thread and the writing thread each wait for the
    server or the disk many times a chunk, and each time they get the interpreter back only when the thread
    holding it lets go: at 5 ms a time the server sat idle waiting for them (a PostgreSQL import of 1,000,000
    results took about 10% longer). Restored after."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, SWITCH_INTERVAL))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


class _ReadAhead(Generic[T]):
    """Iterate over ``items`` produced in a thread, one item ahead: the next chunk of a file is read and parsed
    while this one is checked against the database and written. The driver lets go of the interpreter while it
    waits for the server, so reading and writing overlap on two cores.

    Use it as a context manager: leaving stops the thread (after the item it is working on) and closes
    ``items``. An exception raised producing an item is raised again where the item was expected."""

    def __init__(self, items: Iterator[T]) -> None:
        self._items = items
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="plasmatrace-read-ahead", daemon=True)

    def __enter__(self) -> Iterator[T]:
        self._thread.start()
        return self._take()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _take(self) -> Iterator[T]:
        while True:
            kind, value = self._queue.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return

    def _run(self) -> None:
        try:
            for item in self._items:
                if not self._put("item", item):
                    return
            self._put("end", None)
        except BaseException as error:  # handed to the consuming thread, raised there
            self._put("error", error)
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()

    def _put(self, kind: str, value: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put((kind, value), timeout=0.05)
                return True
            except queue.Full:
                continue
        return False


@dataclass
class _Pending:
    """Rows of one chunk waiting to be written (``names``: the columns, in the order of each row's values)."""

    table: Table
    names: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    chunk: int  # the chunk's index among the chunks that wrote rows
    data: bytes | None = None  # the rows as the bulk writer sends them (COPY data), when it prepares them
    then: list[Callable[[], None]] = field(default_factory=list)


def _quietly(wait: Callable[[], Any]) -> None:
    """Wait for a write whose outcome no longer matters (the import is being undone for another error)."""
    with suppress(Exception):  # the error being raised already says why the import stops
        wait()


class ChunkWriter:
    """Writes each chunk's new rows through the database's bulk writer, one chunk late when it is pipelined.

    ``on_rows(count)`` is called when a chunk hands over rows to write and gives the chunk's index;
    ``on_written(top_id)`` once they are written, with the table's highest id after them.
    """

    def __init__(self, session: Session, *, on_rows: Callable[[int], int], on_written: Callable[[int], None]) -> None:
        self.session = session
        self._bulk: BulkWriter = bulk_writer(session)
        self.pipelined = self._bulk.pipelined
        self._on_rows, self._on_written = on_rows, on_written
        self._pending: _Pending | None = None
        self._under_way: tuple[_Pending, Callable[[], int]] | None = None  # rows being written, and how to wait

    @contextmanager
    def chunks(self, parsed: Generator[T, None, None]) -> Iterator[Iterator[T]]:
        """The file's parsed chunks, read ahead in a thread with quick thread switches when pipelined; the chunks
        are closed on leaving."""
        if not self.pipelined:
            with closing(parsed):
                yield parsed
            return
        with _quick_thread_switches(), _ReadAhead(parsed) as chunks:
            yield chunks

    @property
    def pending_rows(self) -> list[tuple[Any, ...]]:
        """The rows of the previous chunk, being written while this chunk is checked."""
        return self._pending.rows if self._pending is not None else []

    def pending_values(self, *names: str) -> Iterable[Any]:
        """The values of the named columns of each of :attr:`pending_rows` (one value for one name, else a tuple
        per row in the order of ``names``)."""
        pending = self._pending
        if pending is None:
            return []
        return map(itemgetter(*(pending.names.index(name) for name in names)), pending.rows)

    def pending_where(self, column: str, wanted: Container[Any], *names: str) -> list[Any]:
        """The values of the named columns (as :meth:`pending_values`) of the pending rows whose ``column`` is
        among ``wanted``."""
        pending = self._pending
        if pending is None:
            return []
        at = pending.names.index(column)
        get = itemgetter(*(pending.names.index(name) for name in names))
        return [get(row) for row in pending.rows if row[at] in wanted]

    @property
    def pending_chunk(self) -> int:
        assert self._pending is not None
        return self._pending.chunk

    @contextmanager
    def writing(self, model: type[Any], columns: tuple[str, ...]) -> Iterator[Callable[[tuple[Any, ...]], None]]:
        """A function that takes the rows of ``model`` this chunk adds, each holding values in the order of
        ``columns`` as the driver takes them (see :func:`traceability.db.bulk.driver_converter`).

        Pipelined, the rows are written one chunk late, in a thread of their own, so that the server stores them
        while Python checks the next chunk: entering the block starts writing the previous chunk's rows; leaving
        it prepares this chunk's rows and keeps them for the next block or :meth:`finish_writing`. The write goes
        on after the block until :meth:`settle`, called before the next chunk's lookups. So a loader does its
        lookups before the block, must not use the session inside it or after it, and finds the previous chunk's
        rows, which its lookups cannot see yet, in :attr:`pending_rows`. Otherwise the rows are written on leaving
        the block."""
        self.settle()
        self.session.flush()  # anything pending in the session goes first, as before a session.execute
        self._bulk.ready()  # while no write is under way
        pending, self._pending = self._pending, None
        if pending is not None:
            self._under_way = (pending, self._start(pending))
        rows: list[tuple[Any, ...]] = []
        self._pending = pending  # visible to the loader as pending_rows while it builds this chunk's rows
        try:
            yield rows.append
        except BaseException:
            self._pending = None
            self.settle(quietly=True)  # the connection is free again before the error goes on to undo the import
            raise
        self._pending = None
        if rows:
            # Pipelined, the rows become COPY data here, while the previous chunk is still being written.
            data = self._bulk.prepare(rows)
            self._pending = _Pending(model.__table__, columns, rows, self._on_rows(len(rows)), data)
            if not self.pipelined:
                self.finish_writing()  # at once

    def settle(self, *, quietly: bool = False) -> None:
        """Wait until the write under way, if any, has ended; then the session can be used again. ``quietly``: the
        import is being undone for another error, so the outcome of the write does not matter."""
        if self._under_way is not None:
            pending, wait = self._under_way
            self._under_way = None
            if quietly:
                _quietly(wait)
            else:
                self._written(pending, wait())

    def when_written(self, then: Callable[[], None]) -> None:
        """Call ``then`` once the rows of this chunk are written (at once if it has none to write)."""
        if self._pending is None:
            self.settle()
            then()
        else:
            self._pending.then.append(then)

    def finish_writing(self) -> None:
        """Write the rows still pending (the last chunk's); an import calls this after its last chunk."""
        self.settle()
        pending, self._pending = self._pending, None
        if pending is not None:
            self.session.flush()
            self._written(pending, self._start(pending)())

    def close(self) -> None:
        """Stop the writing thread, once any write it is doing has ended."""
        self._under_way = None
        self._bulk.close()

    def _start(self, pending: _Pending) -> Callable[[], int]:
        return self._bulk.start(pending.table, pending.names, pending.rows, pending.data)

    def _written(self, pending: _Pending, top: int) -> None:
        self._on_written(top)
        for then in pending.then:
            then()
