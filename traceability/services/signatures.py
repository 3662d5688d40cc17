"""Electronic signatures (21 CFR 11.50, 11.70, 11.200, 11.300; SPEC §11).

A signature re-proves the person at the moment of signing: on PostgreSQL by a fresh login with the password,
checked by the server; on SQLite by the user's Argon2id signing password. It records the login, the printed name,
the meaning, the database's time, the record's business key and the SHA-256 of its content, as an audit event in
the chain and a ``signature`` row beside it.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool
from sqlmodel import Session, col, create_engine

from .. import audit
from ..db import database_now, describe_operational_error, dialect
from ..errors import DatabaseUnavailable, NotPermitted, SignatureFailed, SigningLocked
from ..identity import Identity
from ..models import AppUser, Signature, SignatureMeaning, utcnow
from ..queries.signatures import LOCK_AFTER_FAILURES, content_sha256, signing_state
from .users import signing_password_matches

_NAMES = {"pool": "pool", "lot": "lot", "lookback_case": "look-back case", "deferral": "deferral"}


def password_is_right(session: Session, *, login: str, password: str) -> bool:
    """Check the password now: PostgreSQL by a fresh connection as that login (the server decides, as its
    pg_hba.conf says); SQLite against the user's Argon2id signing password."""
    if not dialect.logins_are_database_roles(session):
        stored = session.execute(select(col(AppUser.password_hash)).where(col(AppUser.login) == login)).scalar()
        return signing_password_matches(stored, password)
    url = session.get_bind().engine.url
    engine = create_engine(url.set(username=login, password=password), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return True
    except OperationalError as error:
        message = str(error.orig).lower()
        if "password authentication failed" in message or "authentication failed" in message:
            return False
        if "not permitted to log in" in message:
            return False
        raise DatabaseUnavailable(describe_operational_error(error, url)) from error
    finally:
        engine.dispose()


def sign(
    session: Session,
    *,
    signer: Identity,
    password: str,
    meaning: SignatureMeaning,
    entity_type: str,
    entity_key: str,
) -> Signature:
    """Sign a record in the caller's transaction, after its change. Raises NotPermitted (no printed name),
    SigningLocked, SignatureFailed (the attempt is for the caller to record in a transaction of its own)."""
    if signer.full_name is None:
        raise NotPermitted(
            f"{signer.login} has no printed name on record, so cannot sign (21 CFR 11.50); "
            "an admin adds it with `plasmatrace user add`."
        )
    state = signing_state(session, signer.login, now=utcnow())
    if state.locked_until is not None:
        raise SigningLocked(signer.login, f"{state.locked_until:%Y-%m-%d %H:%M:%S} UTC")
    if not password_is_right(session, login=signer.login, password=password):
        failures = state.failures_in_row + 1
        raise SignatureFailed(
            signer.login,
            kind=_NAMES.get(entity_type, entity_type),
            key=entity_key,
            meaning=meaning.value,
            failures=failures,
            locked=failures >= LOCK_AFTER_FAILURES,
        )
    digest = content_sha256(session, entity_type, entity_key)
    signed_at = database_now(session)
    event = audit.record(
        session,
        action="signature.applied",
        entity_type=entity_type,
        entity_key=entity_key,
        actor=signer.login,
        new={
            "login": signer.login,
            "full_name": signer.full_name,
            "meaning": meaning,
            "signed_at": signed_at,
            "content_sha256": digest,
        },
    )
    assert event.id is not None
    row = Signature(
        audit_event_id=event.id,
        entity_type=entity_type,
        entity_key=entity_key,
        login=signer.login,
        full_name=signer.full_name,
        meaning=meaning,
        signed_at=signed_at,
        content_sha256=digest,
        created_by=signer.login,
    )
    session.add(row)
    session.flush()
    return row


def record_failure(session: Session, *, failure: SignatureFailed) -> None:
    """Keep a failed signature attempt in the audit trail (call in a transaction of its own: the command that
    tried to sign rolls back)."""
    audit.record(
        session,
        action="signature.failed",
        entity_type="user",
        entity_key=failure.login,
        actor=failure.login,
        new={
            "record": f"{failure.kind} {failure.key}",
            "meaning": failure.meaning,
            "failures_in_row": failure.failures,
        },
        reason="wrong password" + ("; signing locked for 15 minutes" if failure.locked else ""),
    )
