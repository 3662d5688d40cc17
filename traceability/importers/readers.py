"""CSV import files to numbered records, streamed.

:func:`file_digest` hashes the raw bytes (fast: no parsing), so that a file imported before is recognised before
anything is read. :func:`read_records` then reads the file once: it yields the rows one by one with the problems
of each (encoding, NUL bytes, field count, oversized cells), counts them, and collects the problems that make the
file as a whole unreadable (no header, unknown or missing columns, broken quoting) in ``problems``; a caller
loads nothing when there are any. :func:`scan` is that same pass without the rows. None holds more than one
record in memory. Line numbers are physical lines of the file; the header is line 1. A stream can also start at
a record found earlier (its byte offset and line), to read part of a file again.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .rows import ROW, Columns, RowProblem

MAX_CELL_CHARS = 1_000
"""The longest cell accepted; no column of any import file needs more."""
MAX_RECORD_BYTES = 64 * 1024
"""A record (one row, possibly over several lines when quoted) longer than this is not a row of an import file:
usually a quote that is never closed has swallowed the rest of the file. Reading stops there."""

_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


@dataclass(slots=True)
class Record:
    """One data row as read: where it starts, its fields, its usable cells and the problems found reading it.

    ``cells`` maps every known column to its stripped text (None when blank or when the column is absent from
    the header); a cell that cannot be used (too long) is left out, and its problem is in ``problems``.
    """

    line: int
    fields: list[str]
    cells: dict[str, str | None]
    problems: list[RowProblem] = field(default_factory=list)
    offset: int = 0
    """Byte offset of the record's first line in the file: where to start reading it again."""


@dataclass
class Scan:
    """The first pass over a file: its SHA-256, its data rows, its header and any file-level problems."""

    sha256: str
    rows: int
    header: list[str]
    problems: list[RowProblem]


class _RecordTooLong(Exception):
    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _Lines:
    """The physical lines of a binary file, decoded as UTF-8 one by one, for csv.reader.

    Decoding per line (not per file) is what lets a bad byte be reported with its line number, and lets the
    rest of the file still be checked. Every byte read is fed to the SHA-256.
    """

    def __init__(self, raw: BinaryIO, digest: hashlib._Hash, *, number: int = 0, position: int = 0) -> None:
        self.raw, self.digest = raw, digest
        self.number = number
        self.position = position  # byte offset of the next line
        self.since_mark = 0
        self.problems: list[RowProblem] = []

    def __iter__(self) -> _Lines:
        return self

    def mark(self) -> None:
        """A record starts here: restart the size count and drop problems of earlier records."""
        self.position += self.since_mark
        self.since_mark = 0
        if self.problems:
            self.problems = []

    def __next__(self) -> str:
        data = self.raw.readline(MAX_RECORD_BYTES + 1)
        if not data:
            raise StopIteration
        self.digest.update(data)
        self.number += 1
        self.since_mark += len(data)
        if self.since_mark > MAX_RECORD_BYTES:
            raise _RecordTooLong(self.number)
        if self.number == 1 and self.position == 0 and data.startswith(_BOM):
            data = data[len(_BOM) :]
        if b"\x00" in data:
            position = data.index(b"\x00") + 1
            self.problems.append(
                RowProblem(
                    self.number,
                    ROW,
                    f"contains a NUL byte (byte {position} of the line); a CSV file has none, "
                    "so this line is probably damaged or the file is not plain text.",
                )
            )
            data = data.replace(b"\x00", b"")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as error:
            self.problems.append(
                RowProblem(
                    self.number,
                    ROW,
                    f"is not valid UTF-8 (byte 0x{data[error.start]:02X} at byte {error.start + 1} "
                    "of the line); save the file as UTF-8 (in a spreadsheet: CSV UTF-8).",
                )
            )
            return data.decode("utf-8", errors="replace")


def _csv_error_message(error: csv.Error) -> str:
    text = str(error)
    if "unexpected end of data" in text:
        return (
            "a quoted field that starts on this line is never closed: the file ends inside quotes "
            '(a truncated file, or a stray ").'
        )
    if "expected after" in text:
        return 'a quoted field has text after its closing quote; a quote inside a quoted field is written twice ("").'
    if "new-line character" in text:
        return "a line ends with a bare carriage return; save the file with ordinary line endings."
    return f"cannot be read as CSV: {text}."


@dataclass(frozen=True)
class Resume:
    """Where to start reading a file again: a record's byte offset and line, and the file's header."""

    offset: int
    line: int
    header: tuple[str, ...]


class _Reader:
    def __init__(self, path: Path, columns: Columns, resume: Resume | None = None) -> None:
        self.path, self.columns, self.resume = path, columns, resume
        self.digest = hashlib.sha256()
        self.problems: list[RowProblem] = []
        self.header: list[str] = []
        self.index: dict[str, int] = {}
        self.rows = 0

    def problem(self, line: int, column: str, message: str) -> None:
        self.problems.append(RowProblem(line, column, message))

    def __iter__(self) -> Iterator[Record]:
        if self.resume is not None:
            yield from self._resumed(self.resume)
            return
        with self.path.open("rb") as raw:
            head = raw.read(4096)
            if head[:2] in _UTF16_BOMS:
                self.problem(1, "file", "is UTF-16 encoded; save it as UTF-8 (in a spreadsheet: CSV UTF-8).")
                return
            if not head.removeprefix(_BOM).strip() and not raw.read(1):
                self.problem(1, "file", f"is empty; expected a header row with the columns {self.columns.describe()}.")
                return
            raw.seek(0)
            lines = _Lines(raw, self.digest)
            reader = csv.reader(lines, strict=True)
            try:
                if not self._read_header(reader, lines):
                    return
            except _RecordTooLong as error:
                self._too_long(1, error)
                return
            yield from self._records(reader, lines, 0)

    def _resumed(self, resume: Resume) -> Iterator[Record]:
        self.header = list(resume.header)
        self.index = {n: i for i, n in enumerate(self.header) if n in self.columns.known}
        with self.path.open("rb") as raw:
            raw.seek(resume.offset)
            lines = _Lines(raw, self.digest, number=resume.line - 1, position=resume.offset)
            yield from self._records(csv.reader(lines, strict=True), lines, resume.line - 1)

    def _records(self, reader: Iterator[list[str]], lines: _Lines, before: int) -> Iterator[Record]:
        """The data records, from the current line on; ``before`` is the number of lines before the reader's
        first (csv.reader counts lines from its own start)."""
        start = before + 1
        try:
            while True:
                lines.mark()
                start = before + reader.line_num + 1  # type: ignore[attr-defined]
                offset = lines.position
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except csv.Error as error:
                    self.problem(start, ROW, _csv_error_message(error))
                    continue
                if not (fields and fields[0].strip()) and not lines.problems and not "".join(fields).strip():
                    continue  # blank lines carry nothing; spreadsheets leave them at the end
                self.rows += 1
                record = self._record(start, fields, lines.problems)
                record.offset = offset
                yield record
        except _RecordTooLong as error:
            self._too_long(start, error)

    def _too_long(self, start: int, error: _RecordTooLong) -> None:
        self.problem(
            start,
            ROW if start > 1 else "header",
            f"runs past {MAX_RECORD_BYTES:,} bytes (to line {error.line:,}) without ending; a quoted field "
            "is probably never closed, or this is not a CSV file. Reading stopped here.",
        )

    def _read_header(self, reader: Iterator[list[str]], lines: _Lines) -> bool:
        expected = f"expected a header row with the columns {self.columns.describe()}."
        try:
            names = next(reader)
        except StopIteration:
            self.problem(1, "file", f"is empty; {expected}")
            return False
        except csv.Error as error:
            self.problem(1, "header", _csv_error_message(error))
            return False
        if lines.problems:
            self.problems.extend(RowProblem(p.line, "header", p.message) for p in lines.problems)
            return False
        if not any(n.strip() for n in names):
            self.problem(1, "header", f"is blank; {expected}")
            return False
        self.header = [n.strip().lower() for n in names]
        blank = [str(i) for i, n in enumerate(self.header, start=1) if not n]
        if blank:
            self.problem(1, "header", f"column {', '.join(blank)} has no name; {expected}")
        twice = sorted({n for n in self.header if n and self.header.count(n) > 1})
        if twice:
            self.problem(1, "header", f"column {', '.join(twice)} appears more than once.")
        allowed = set(self.columns.known) | set(self.columns.ignored)
        unknown = [n for n in self.header if n and n not in allowed]
        separator = next((s for s in (";", "\t", "|") if len(names) == 1 and s in names[0]), None)
        if separator is not None:
            shown = "a tab" if separator == "\t" else repr(separator)
            self.problem(
                1,
                "header",
                f"columns are separated by {shown}; import files are comma-separated (CSV). {expected.capitalize()}",
            )
            return False
        if unknown:
            self.problem(
                1, "header", f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; {expected}"
            )
        missing = [n for n in self.columns.required if n not in self.header]
        if missing:
            self.problem(
                1,
                "header",
                f"missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; {expected}",
            )
        if self.problems:
            return False
        self.index = {n: i for i, n in enumerate(self.header) if n in self.columns.known}
        return True

    def _record(self, line: int, fields: list[str], problems: list[RowProblem]) -> Record:
        problems = list(problems)
        if len(fields) != len(self.header):
            problems.append(
                RowProblem(
                    line,
                    ROW,
                    f"has {len(fields)} field{'s' if len(fields) != 1 else ''}; the header has "
                    f"{len(self.header)} ({', '.join(self.header)}). Check the commas and quotes on this line.",
                )
            )
            return Record(line, fields, {}, problems)
        cells: dict[str, str | None] = dict.fromkeys(self.columns.known)
        for name, i in self.index.items():
            text = fields[i].strip()
            if len(text) > MAX_CELL_CHARS:
                problems.append(
                    RowProblem(
                        line, name, f"is {len(text):,} characters long; at most {MAX_CELL_CHARS:,} are accepted."
                    )
                )
                del cells[name]
            else:
                cells[name] = text or None
        return Record(line, fields, cells, problems)


def file_digest(path: Path) -> tuple[str, int]:
    """The SHA-256 of the file's bytes and its number of line breaks, read in large blocks without parsing.

    The line count is what a progress bar can use as its total before reading (data rows are at most that many).
    """
    digest = hashlib.sha256()
    breaks = 0
    with path.open("rb") as raw:
        while block := raw.read(1 << 20):
            digest.update(block)
            breaks += block.count(b"\n")
    return digest.hexdigest(), breaks


def scan(path: Path, columns: Columns) -> Scan:
    """SHA-256 of the bytes, number of data rows, header, and the problems that stop the whole file.

    Row-level problems are not reported here; :func:`read_records` finds them (and these too, in one pass).
    """
    reader = _Reader(path, columns)
    for _ in reader:
        pass
    return Scan(reader.digest.hexdigest(), reader.rows, reader.header, reader.problems)


class RecordStream:
    """Iterate to get each data row as a :class:`Record`; ``sha256`` and ``rows`` are complete at the end.

    File-level problems found on the way are in ``problems``: a file with any must not be loaded. Comparing
    ``sha256`` with :func:`file_digest` taken before shows whether the file changed while it was read.
    """

    def __init__(self, path: Path, columns: Columns, resume: Resume | None = None) -> None:
        self._reader = _Reader(path, columns, resume)

    def __iter__(self) -> Iterator[Record]:
        return iter(self._reader)

    @property
    def header(self) -> list[str]:
        return self._reader.header

    @property
    def problems(self) -> list[RowProblem]:
        return self._reader.problems

    @property
    def rows(self) -> int:
        """Data rows read so far (blank lines are not rows)."""
        return self._reader.rows

    @property
    def sha256(self) -> str:
        return self._reader.digest.hexdigest()


def read_records(path: Path, columns: Columns, resume: Resume | None = None) -> RecordStream:
    """Stream the data rows of a file, from the start or from a record read before (``resume``)."""
    return RecordStream(path, columns, resume)
