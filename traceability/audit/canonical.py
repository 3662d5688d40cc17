"""The canonical form of a row of a regulated table, its hash, and the digest of many rows.

Rows are compared in a canonical form: text, whole numbers and floats as the driver returns them; times as
``YYYY-MM-DD HH:MM:SS.ffffff`` UTC; dates as ``YYYY-MM-DD``; JSON as sorted compact text. A row's hash is 64 bits
of BLAKE2b over its canonical fields (marshal format 0); a digest is a count and a 64-bit sum of row hashes.
"""

from __future__ import annotations

import hashlib
import json
import marshal
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

Value = str | int | float | None
CanonicalRow = tuple[Value, ...]

RECORDS_KEY = "records"
"""Where an event keeps the rows it wrote: ``new["records"][table] = {"columns", "rows", "was", "deleted"}``."""

MASK = (1 << 64) - 1
CHUNK = 5_000
"""Keys or ids per statement when rows are read by a list of them."""


def canonical(value: Any) -> Value:
    """One value as the proof compares it, whatever the engine returned."""
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            if value.utcoffset():
                value = value.astimezone(UTC)
            value = value.replace(tzinfo=None)
        return str(value.isoformat(" ", "microseconds"))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return str(value)


_PLAIN_TYPES = frozenset((str, int, float, type(None)))


def row_state(row: Any) -> CanonicalRow:
    """The canonical business state of a row read by a declaration's SELECT (after its id and import columns).
    SQLite returns text and numbers already: the common case costs one pass in C."""
    values = tuple(row)[2:]
    if _PLAIN_TYPES.issuperset(map(type, values)):
        return values
    return tuple(canonical(v) for v in values)


def row_hash(values: Sequence[Value]) -> int:
    """A 64-bit hash of one canonical row (order of fields fixed by its table's declaration)."""
    return _from_bytes(_blake2b(marshal.dumps(tuple(values), 0), digest_size=8).digest(), "big")


_blake2b = hashlib.blake2b
_from_bytes = int.from_bytes


@dataclass
class Digest:
    rows: int = 0
    total: int = 0

    def add(self, value: int) -> None:
        self.rows += 1
        self.total = (self.total + value) & MASK

    def as_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "sum": f"{self.total:016x}"}
