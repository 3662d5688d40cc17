"""Small helpers shared by the services."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from ..errors import DuplicateKey, InvalidInput


@contextmanager
def unique_or_conflict(session: Session, kind: str, key: str) -> Iterator[None]:
    """Turn a unique-key violation raised by the database (a concurrent insert) into DuplicateKey."""
    try:
        yield
        session.flush()
    except IntegrityError as error:
        if "unique" in str(error.orig).lower() or "duplicate" in str(error.orig).lower():
            raise DuplicateKey(kind, key) from error
        raise


def next_version(session: Session, version_column: Any, *where: Any) -> int:
    """The version a new row of a versioned record gets: one more than the newest, 1 for the first."""
    return (session.execute(select(func.max(version_column)).where(*where)).scalar() or 0) + 1


def result_values(row: Any) -> dict[str, Any]:
    """What the audit trail keeps of a screening result or a pool test (both versioned the same way)."""
    return {
        "marker": row.marker,
        "version": row.version,
        "result": row.result,
        "value": row.value,
        "unit": row.value_unit,
        "tested_at": row.tested_at,
    }


_CODE_MAX = 40


def check_code(value: str, what: str) -> str:
    """A business key as typed: trimmed, 1-40 printable characters, no spaces. Raises InvalidInput."""
    code = value.strip()
    if not code:
        raise InvalidInput(f"{what} is empty.")
    if len(code) > _CODE_MAX:
        raise InvalidInput(f"{what} {code!r} is longer than {_CODE_MAX} characters.")
    if any(ch.isspace() or not ch.isprintable() for ch in code):
        raise InvalidInput(f"{what} {code!r} contains spaces or control characters.")
    return code
