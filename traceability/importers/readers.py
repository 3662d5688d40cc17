"""CSV import files to numbered records, streamed.

:func:`file_digest` hashes the raw bytes (fast: no parsing), so that a file imported before is recognised before
anything is read. :func:`read_records` then reads the file once: it yields the rows one by one with the problems
of each (encoding, NUL bytes, field count, oversized cells), counts them, and collects the problems that make the
file as a whole unreadable (no header, unknown or missing columns, broken quoting) in ``problems``; a caller
loads nothing when there are any. :func:`scan` is that same pass without the rows. Memory does not grow with the
file: the reader holds a block of about a megabyte of whole lines and the record being read. Line numbers are
physical lines of the file; the header is line 1. A stream can also start at a record found earlier (its byte
offset and line), to read part of a file again.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .spec import ROW, Columns, RowProblem

MAX_CELL_CHARS = 1_000
"""The longest cell accepted; no column of any import file needs more."""
MAX_RECORD_CHARS = 64 * 1024
"""A record (one row, possibly over several lines when quoted) longer than this is not a row of an import file:
usually a quote that is never closed has swallowed the rest of the file. Reading stops there."""
_BLOCK_BYTES = 1 << 18
"""How much of the file is read at a time (then cut after its last line break)."""

_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class _Layout:
    """Where each known column is in the records of one file (the header's order), shared by its records."""

    __slots__ = ("index", "known", "width")

    def __init__(self, header: list[str], known: tuple[str, ...]) -> None:
        self.index = {n: i for i, n in enumerate(header) if n in known}
        self.known = known
        self.width = len(header)


class _Block:
    """Whole lines of the file as read in one piece: where they start (byte offset and line number)."""

    __slots__ = ("data", "first_line", "offset")

    def __init__(self, data: bytes, offset: int, first_line: int) -> None:
        self.data, self.offset, self.first_line = data, offset, first_line

    def offset_of(self, line: int) -> int:
        """Byte offset of the start of ``line`` (a line of this block or the one just after it)."""
        before = line - self.first_line  # lines of the block before it
        if before <= 0:
            return self.offset
        return self.offset + len(self.data) - len(self.data.split(b"\n", before)[-1])


_NO_PROBLEMS: list[RowProblem] = []  # shared by the records that have none; never appended to
_NOTHING_OMITTED: frozenset[str] = frozenset()


@dataclass(slots=True)
class Record:
    """One data row as read: the line it starts on, its fields, and the problems found reading it.

    :attr:`cells` maps every known column to its stripped text (None when blank or when the column is absent
    from the header); a cell that cannot be used (too long) is left out, and its problem is in ``problems``. A
    record whose field count differs from the header's has no cells.
    """

    line: int
    fields: list[str]
    problems: list[RowProblem]
    layout: _Layout | None = None
    """None when the record has a different number of fields than the header."""
    block: _Block | None = None
    omitted: frozenset[str] = _NOTHING_OMITTED

    @property
    def cells(self) -> dict[str, str | None]:
        layout = self.layout
        if layout is None:
            return {}
        cells: dict[str, str | None] = dict.fromkeys(layout.known)
        fields = self.fields
        for name, i in layout.index.items():
            if name in self.omitted:
                del cells[name]
            else:
                cells[name] = fields[i].strip() or None
        return cells

    @property
    def offset(self) -> int:
        """Byte offset of the record's first line in the file: where to start reading it again."""
        if self.block is None:
            raise ValueError(f"line {self.line} was not read from a file")
        return self.block.offset_of(self.line)


class _TooLong(Exception):
    """A record runs past MAX_RECORD_CHARS: reading stops."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _Lines:
    """The physical lines of a binary file, decoded from UTF-8, for csv.reader.

    The file is read in blocks of whole lines: a block is hashed, checked for NUL bytes and decoded in one go,
    and its lines are handed on without per-line work. Only a block that has a NUL byte or is not valid UTF-8
    is gone through line by line, so that each bad byte is reported with its line number (in ``bad``, by line)
    and the rest of the file is still checked. Every byte read is fed to the SHA-256.
    """

    def __init__(self, raw: BinaryIO, digest: hashlib._Hash, *, number: int = 0, position: int = 0) -> None:
        self.raw, self.digest = raw, digest
        self.first_line, self.position = number + 1, position
        self.blocks: list[_Block] = []
        """The blocks from the one holding the start of the current record on (older ones are let go)."""
        self.bad: dict[int, list[RowProblem]] = {}
        self.overflow: int | None = None
        """Set when a physical line runs past MAX_RECORD_CHARS: its number. No more lines are given."""

    def __iter__(self) -> Iterator[str]:
        return itertools.chain.from_iterable(self._blocks())  # line by line without a Python call per line

    def _blocks(self) -> Iterator[Iterable[str]]:
        carry = b""
        while True:
            data = self.raw.read(_BLOCK_BYTES)
            if not data:
                if carry:
                    yield self._block(carry)
                return
            self.digest.update(data)
            data = carry + data if carry else data
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if cut:
                yield self._block(data[:cut])
            if len(carry) > MAX_RECORD_CHARS * 4:  # UTF-8: up to 4 bytes a character
                self.overflow = self.first_line
                return

    def _block(self, data: bytes) -> Iterable[str]:
        block = _Block(data, self.position, self.first_line)
        self.blocks.append(block)
        lines = data.count(b"\n") + (not data.endswith(b"\n"))
        self.position += len(data)
        self.first_line += lines
        if block.offset == 0 and data.startswith(_BOM):
            data = data[len(_BOM) :]
        if b"\x00" not in data:
            try:
                return io.StringIO(data.decode("utf-8"), newline="\n")
            except UnicodeDecodeError:
                pass
        parts = data.split(b"\n")
        tail = parts.pop()  # empty when the block ends with a line break
        lines_of = [part + b"\n" for part in parts] + ([tail] if tail else [])
        return list(map(self._line, itertools.count(block.first_line), lines_of))

    def _line(self, number: int, data: bytes) -> str:
        """One line of a block that has a NUL byte or bad UTF-8."""
        if b"\x00" in data:
            position = data.index(b"\x00") + 1
            self._problem(
                number,
                f"contains a NUL byte (byte {position} of the line); a CSV file has none, "
                "so this line is probably damaged or the file is not plain text.",
            )
            data = data.replace(b"\x00", b"")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as error:
            self._problem(
                number,
                f"is not valid UTF-8 (byte 0x{data[error.start]:02X} at byte {error.start + 1} "
                "of the line); save the file as UTF-8 (in a spreadsheet: CSV UTF-8).",
            )
            return data.decode("utf-8", errors="replace")

    def _problem(self, number: int, message: str) -> None:
        self.bad.setdefault(number, []).append(RowProblem(number, ROW, message))

    def take(self, start: int, end: int) -> list[RowProblem]:
        """The problems of lines start..end (one record), taken out."""
        found: list[RowProblem] = []
        for number in range(start, end + 1):
            found += self.bad.pop(number, ())
        return found

    def block_of(self, line: int) -> _Block | None:
        """The block holding the start of ``line``; blocks before it are let go."""
        blocks = self.blocks
        while len(blocks) > 1 and blocks[1].first_line <= line:
            del blocks[0]
        return blocks[0] if blocks else None


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
        self.layout = _Layout([], ())
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
            if self._read_header(reader, lines):
                yield from self._records(reader, lines, 0)

    def _resumed(self, resume: Resume) -> Iterator[Record]:
        self.header = list(resume.header)
        self.layout = _Layout(self.header, self.columns.known)
        with self.path.open("rb") as raw:
            raw.seek(resume.offset)
            lines = _Lines(raw, self.digest, number=resume.line - 1, position=resume.offset)
            yield from self._records(csv.reader(lines, strict=True), lines, resume.line - 1)

    def _records(self, reader: Any, lines: _Lines, before: int) -> Iterator[Record]:
        """The data records, from the current line on; ``before`` is the number of lines before the reader's
        first (csv.reader counts lines from its own start)."""
        start = before + 1
        layout, blocks = self.layout, lines.blocks
        # A record with the header's number of fields, none longer than a cell may be, is short enough.
        width = layout.width if layout.width * MAX_CELL_CHARS <= MAX_RECORD_CHARS else -1
        try:
            while True:
                start = before + reader.line_num + 1
                try:
                    fields = next(reader)
                except StopIteration:
                    self._check_overflow(lines)
                    return
                except csv.Error as error:
                    self._check_overflow(lines, error, start, before + reader.line_num)
                    lines.take(start, before + reader.line_num)
                    self.problem(start, ROW, _csv_error_message(error))
                    continue
                if (
                    len(fields) == width
                    and not lines.bad
                    and fields[0].strip()
                    and max(map(len, fields)) <= MAX_CELL_CHARS
                ):  # the common case, in short
                    self.rows += 1
                    block = blocks[0] if len(blocks) == 1 else lines.block_of(start)
                    yield Record(start, fields, _NO_PROBLEMS, layout, block)
                    continue
                end = before + reader.line_num
                problems = lines.take(start, end) if lines.bad else _NO_PROBLEMS
                if not (fields and fields[0].strip()) and not problems and not "".join(fields).strip():
                    continue  # blank lines carry nothing; spreadsheets leave them at the end
                if sum(map(len, fields)) > MAX_RECORD_CHARS:
                    raise _TooLong(end)
                self.rows += 1
                yield self._record(start, fields, problems, lines.block_of(start))
        except _TooLong as error:
            self._too_long(start, error.line)

    @staticmethod
    def _check_overflow(lines: _Lines, error: csv.Error | None = None, start: int = 1, end: int = 0) -> None:
        """Raise _TooLong when reading ended because the record of lines ``start``..``end`` grew too long: a line
        without end, a field past csv's own limit, or a quote left open that swallowed the rest of the file."""
        if lines.overflow is not None:
            raise _TooLong(lines.overflow)
        if error is None:
            return
        text = str(error)
        if "field larger than field limit" in text:
            raise _TooLong(end)
        if "unexpected end of data" in text:
            block = lines.block_of(start)
            if block is not None and lines.position - block.offset_of(start) > MAX_RECORD_CHARS:
                raise _TooLong(end)

    def _too_long(self, start: int, line: int) -> None:
        self.problem(
            start,
            ROW if start > 1 else "header",
            f"runs past {MAX_RECORD_CHARS:,} characters (to line {line:,}) without ending; a quoted field "
            "is probably never closed, or this is not a CSV file. Reading stopped here.",
        )

    def _read_header(self, reader: Any, lines: _Lines) -> bool:
        expected = f"expected a header row with the columns {self.columns.describe()}."
        try:
            try:
                names = next(reader)
            except StopIteration:
                self._check_overflow(lines)
                self.problem(1, "file", f"is empty; {expected}")
                return False
            except csv.Error as error:
                self._check_overflow(lines, error, 1, reader.line_num)
                self.problem(1, "header", _csv_error_message(error))
                return False
            if sum(map(len, names)) > MAX_RECORD_CHARS:
                raise _TooLong(reader.line_num)
        except _TooLong as error:
            self._too_long(1, error.line)
            return False
        bad = lines.take(1, reader.line_num)
        if bad:
            self.problems.extend(RowProblem(p.line, "header", p.message) for p in bad)
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
        self.layout = _Layout(self.header, self.columns.known)
        return True

    def _record(self, line: int, fields: list[str], problems: list[RowProblem], block: _Block | None) -> Record:
        layout = self.layout
        if len(fields) != layout.width:
            problem = RowProblem(
                line,
                ROW,
                f"has {len(fields)} field{'s' if len(fields) != 1 else ''}; the header has "
                f"{len(self.header)} ({', '.join(self.header)}). Check the commas and quotes on this line.",
            )
            return Record(line, fields, [*problems, problem], None, block)
        if max(map(len, fields)) <= MAX_CELL_CHARS:
            return Record(line, fields, problems, layout, block)
        problems = list(problems)
        omitted = set()
        for name, i in layout.index.items():
            size = len(fields[i].strip())
            if size > MAX_CELL_CHARS:
                problems.append(
                    RowProblem(line, name, f"is {size:,} characters long; at most {MAX_CELL_CHARS:,} are accepted.")
                )
                omitted.add(name)
        return Record(line, fields, problems, layout, block, frozenset(omitted))


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
