"""The one shape behind tables, CSV exports and reports: a titled document of sections of rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Section:
    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)


@dataclass
class Document:
    """A titled summary (label, value pairs) followed by sections; ``primary`` names the section CSV exports."""

    title: str
    summary: list[tuple[str, Any]]
    sections: list[Section]
    primary: str

    def section(self, title: str) -> Section:
        return next(s for s in self.sections if s.title == title)


def marked_as_of(document: Document, as_of: str | None) -> Document:
    """A document of records as they were at a past time says so in its title and first summary line."""
    if as_of is not None:
        document.title = f"{document.title}, as recorded at {as_of}"
        document.summary.insert(0, ("as of", f"{as_of} (records as they were then; --as-of)"))
    return document


def cell_text(value: Any) -> str:
    """A cell as written in HTML and PDF reports: empty for None, whole numbers with thousands separators."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
