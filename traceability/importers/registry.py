"""Every kind of import file, each described once by the :class:`~traceability.importers.spec.ImportSpec` of its
module; the name a kind has on the command line is its ImportKind value."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from . import consignees, donations, donors, pool_members, results
from .spec import Cells, ImportSpec, Parsed


class ImportKind(StrEnum):
    """What an import file holds; the value is the name used on the command line."""

    DONORS = "donors"
    DONATIONS = "donations"
    RESULTS = "results"
    POOL_MEMBERS = "pool-members"
    CONSIGNEES = "consignees"


SPECS: dict[ImportKind, ImportSpec[Any]] = {
    ImportKind(spec.name): spec
    for spec in (
        donors.SPEC,
        donations.SPEC,
        results.SPEC,
        pool_members.SPEC,
        consignees.SPEC,
    )
}


def parse_row(kind: ImportKind, line: int, cells: Cells, *, now: datetime) -> Parsed[Any]:
    """Validate one row of a file of the given kind: the typed row, or None and every problem found.

    ``cells`` maps each column to its stripped text, None when blank; a column left out was already reported
    as unusable by the reader and is not checked again.
    """
    return SPECS[kind].parse(line, cells, now)
