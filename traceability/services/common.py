"""Small helpers shared by the services."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from ..errors import DuplicateKey


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
