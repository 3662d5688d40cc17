"""The rejects file of an import run with ``skip_invalid``: each rejected row with its original cells plus ``line``
and ``problem``, ready to be corrected and imported again.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any

from ..reports.writers import FORMULA_PREFIXES
from .readers import Record
from .spec import RowProblem


def default_rejects_path(path: Path) -> Path:
    """Where skip_invalid writes rejected rows: beside the file, ``donations.csv`` -> ``donations.rejects.csv``."""
    return path.with_suffix(".rejects.csv")


_SCANNED_DIN = re.compile(r"=[0-9A-Z]{15,16}")
_NUMBER = re.compile(r"[-+]?[0-9][0-9.,]*")


def _spreadsheet_safe(cell: str) -> str:
    """A rejects cell a spreadsheet would run as a formula (``=HYPERLINK(...)``) gets an apostrophe in front. A
    scanned DIN (``=A99992612345600``) and a plain signed number stay as they are, so that a corrected rejects file
    imports as the original would have."""
    stripped = cell.lstrip(" ")
    if stripped.startswith(FORMULA_PREFIXES) and not (_SCANNED_DIN.fullmatch(stripped) or _NUMBER.fullmatch(stripped)):
        return "'" + cell
    return cell


class RejectsWriter:
    """Rejected rows with their original cells plus ``line`` and ``problem``; written beside the target, then
    moved into place, so a failed run never leaves half a rejects file."""

    def __init__(self, target: Path, ignored: tuple[str, ...]) -> None:
        self.target, self.ignored = target, ignored
        self.header: list[str] = []
        self._temp = target.with_name(f".{target.name}.{os.getpid()}.part")
        self._file: Any = None
        self._csv: Any = None

    def write(self, record: Record, problems: list[RowProblem]) -> None:
        keep = [i for i, name in enumerate(self.header) if name not in self.ignored]
        if self._file is None:
            self._file = self._temp.open("w", encoding="utf-8", newline="")
            self._csv = csv.writer(self._file, lineterminator="\n")
            self._csv.writerow([self.header[i] for i in keep] + ["line", "problem"])
        fields = record.fields
        text = "; ".join(
            f"{p.field}: {p.message}" if p.line == record.line else f"{p.field} (line {p.line}): {p.message}"
            for p in problems
        )
        if len(fields) > len(self.header):
            text += f" Extra fields: {' | '.join(fields[len(self.header) :])}"
        cells = [_spreadsheet_safe(fields[i]) if i < len(fields) else "" for i in keep]
        self._csv.writerow([*cells, record.line, _spreadsheet_safe(text)])

    def finish(self) -> Path | None:
        if self._file is None:
            return None
        self._file.close()
        os.replace(self._temp, self.target)
        return self.target

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._temp.unlink(missing_ok=True)
