"""Small helpers shared by the services."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel

from .. import audit
from ..errors import DuplicateKey, DutiesNotSeparated, InvalidInput
from ..models import Lot, LotStatus, Pool, PoolStatus, UnitStatus, utcnow
from ..rules import Policy, policy_digest


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


def record_release(
    session: Session, record: Pool | Lot, *, conflicts: Callable[[], list[str]], actor: str, policy: Policy
) -> None:
    """Release a pool or lot whose own rules passed: separation of duties (``conflicts``, when the policy asks for
    it; raises DutiesNotSeparated), the status and time, and the ``pool.released`` / ``lot.released`` event."""
    kind, key = ("Pool", record.pool_number) if isinstance(record, Pool) else ("Lot", record.lot_number)
    if policy.release.separate_duties:
        found = conflicts()
        if found:
            raise DutiesNotSeparated(kind, key, login=actor, conflicts=found)
    was: PoolStatus | LotStatus
    if isinstance(record, Pool):
        was, record.status = PoolStatus.CLOSED, PoolStatus.RELEASED
    else:
        was, record.status = LotStatus.PENDING, LotStatus.RELEASED
    record.released_at = utcnow()
    session.flush()
    audit.record(
        session,
        action=f"{kind.lower()}.released",
        entity_type=kind.lower(),
        entity_key=key,
        actor=actor,
        old={"status": was},
        new={"status": record.status, "policy_sha256": policy_digest(policy)},
    )


def record_interdicted(session: Session, unit_numbers: Iterable[str], *, actor: str, reason: str, **new: Any) -> None:
    """One ``donation.interdicted`` audit event per unit taken out of inventory (``new``: what else it records)."""
    for number in unit_numbers:
        audit.record(
            session,
            action="donation.interdicted",
            entity_type="donation",
            entity_key=number,
            actor=actor,
            old={"status": UnitStatus.IN_INVENTORY},
            new={"status": UnitStatus.INTERDICTED, **new},
            reason=reason,
        )


def next_version(session: Session, version_column: Any, *where: Any) -> int:
    """The version a new row of a versioned record gets: one more than the newest, 1 for the first."""
    return (session.execute(select(func.max(version_column)).where(*where)).scalar() or 0) + 1


def row_values(row: SQLModel) -> dict[str, Any]:
    """Every column of a row, keyed by column name (what an audit event's ``new`` carries)."""
    return {c.name: getattr(row, c.key) for c in row.__table__.columns}  # type: ignore[attr-defined]


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
_NAME_MAX = 200
INT_MAX = 2**31 - 1
"""The largest whole number a column holds on every engine (PostgreSQL's integer)."""


def normalise_key(value: str) -> str:
    """A business key in its one stored form: NFKC (full-width digits become ASCII digits) and trimmed."""
    return unicodedata.normalize("NFKC", value).strip()


def has_control(text: str, *, newlines: bool = False) -> bool:
    """Control, format (bidi) and escape characters, which could rewrite a terminal or hide text."""
    return any(
        unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp") and not (newlines and ch in "\n\t")
        for ch in text
    )


def check_name(value: str, what: str, *, limit: int = _NAME_MAX) -> str:
    """A name or address: trimmed, 1-``limit`` characters, no control or escape characters. Raises InvalidInput."""
    name = unicodedata.normalize("NFC", value).strip()
    if not name:
        raise InvalidInput(f"{what} is empty.")
    if len(name) > limit:
        raise InvalidInput(f"{what} is {len(name):,} characters long; at most {limit:,} are allowed.")
    if has_control(name):
        raise InvalidInput(f"{what} {name[:60]!r} contains control or escape characters.")
    return name


def check_count(value: int, what: str, *, allow_zero: bool = False) -> int:
    """A whole number the database can hold: positive (or zero) and below 2^31. Raises InvalidInput."""
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidInput(f"{what} {value:,} must be {'zero or more' if allow_zero else 'positive'}.")
    if value > INT_MAX:
        raise InvalidInput(f"{what} {value:,} is too large; at most {INT_MAX:,}.")
    return value


def check_code(value: str, what: str) -> str:
    """A business key as typed: NFKC-normalised, trimmed, 1-40 printable characters, no spaces.
    Raises InvalidInput."""
    code = normalise_key(value)
    if not code:
        raise InvalidInput(f"{what} is empty.")
    if len(code) > _CODE_MAX:
        raise InvalidInput(f"{what} {code[:60]!r}... is longer than {_CODE_MAX} characters.")
    if any(ch.isspace() or not ch.isprintable() for ch in code):
        raise InvalidInput(f"{what} {code!r} contains spaces or control characters.")
    return code
