"""Users: add, list, disable (SPEC §11). On PostgreSQL each user is a database login in the plasmatrace group
roles; on SQLite a row with an Argon2id signing password."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import unicodedata
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, text
from sqlmodel import Session, col

from .. import audit
from ..db import database_login
from ..errors import DuplicateKey, InvalidInput, NotFound, WrongState
from ..identity import Role
from ..models import AppUser, utcnow

if TYPE_CHECKING:
    from psycopg import sql  # PostgreSQL only: imported where it is used, not at start-up

_LOGIN = re.compile(r"^[a-z][a-z0-9_.]{0,62}$")
_HASHER = PasswordHasher()  # argon2-cffi's defaults are Argon2id (RFC 9106 low-memory profile)
SCRAM_ITERATIONS = 4096  # PostgreSQL's default scram_iterations


def check_login(login: str) -> str:
    """A login as PostgreSQL and the audit trail will spell it. Raises InvalidInput."""
    if not _LOGIN.match(login):
        raise InvalidInput(
            f"Login {login!r} is not valid: use 1-63 lower-case letters, digits, '_' or '.', starting with a letter."
        )
    if login.startswith("plasmatrace") or login in ("postgres", "public"):
        raise InvalidInput(f"Login {login!r} is reserved.")
    return login


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for a password (as `psql \\password` computes it), so that the
    password itself never reaches the server or its statement log."""
    if not password.isascii():
        password = unicodedata.normalize("NFKC", password)  # the bulk of SASLprep for real passwords
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def hash_signing_password(password: str) -> str:
    return _HASHER.hash(password)


def signing_password_matches(stored: str | None, password: str) -> bool:
    if not stored:
        return False
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def _execute(session: Session, statement: sql.Composable) -> None:
    """A utility statement (CREATE/ALTER ROLE, GRANT) whose names and literals psycopg quotes; PostgreSQL only."""
    raw = session.connection().connection.dbapi_connection
    assert raw is not None
    with closing(raw.cursor()) as cursor:
        cursor.execute(statement)


def add_user(session: Session, *, login: str, full_name: str, roles: list[Role], password: str, actor: str) -> AppUser:
    """Add a person: on PostgreSQL a login with ``password`` in the given group roles; on SQLite a user whose
    signing password is kept as an Argon2id hash. Raises InvalidInput, DuplicateKey."""
    from psycopg import sql

    login = check_login(login)
    full_name = full_name.strip()
    if not full_name:
        raise InvalidInput(f"User {login} needs a printed name (--full-name).")
    if not roles:
        raise InvalidInput(f"User {login} needs at least one --role.")
    if len(password) < 8:
        raise InvalidInput(f"The password of user {login} is shorter than 8 characters.")
    if session.execute(select(col(AppUser.id)).where(col(AppUser.login) == login)).first() is not None:
        raise DuplicateKey("User", login)
    roles = sorted(set(roles), key=list(Role).index)
    on_postgres = database_login(session) is not None
    if on_postgres:
        exists = session.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :login"), {"login": login}).first()
        if exists:
            raise DuplicateKey("Database login", login)
        _execute(
            session,
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(login), sql.Literal(scram_verifier(password))
            ),
        )
        for role in roles:
            _execute(session, sql.SQL("GRANT {} TO {}").format(sql.Identifier(role.value), sql.Identifier(login)))
        if Role.ADMIN in roles:
            _execute(session, sql.SQL("ALTER ROLE {} CREATEROLE").format(sql.Identifier(login)))
    user = AppUser(
        login=login,
        full_name=full_name,
        roles=" ".join(r.value for r in roles),
        password_hash=None if on_postgres else hash_signing_password(password),
        created_by=actor,
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        action="user.added",
        entity_type="user",
        entity_key=login,
        actor=actor,
        new={"full_name": full_name, "roles": [r.value for r in roles]},
    )
    return user


def disable_user(session: Session, *, login: str, reason: str | None, actor: str) -> AppUser:
    """Disable a user: on PostgreSQL the login can no longer connect (NOLOGIN); it can no longer sign; its
    records keep its name. Raises NotFound, WrongState."""
    from psycopg import sql

    user: AppUser | None = session.execute(
        select(AppUser).where(col(AppUser.login) == login).with_for_update()
    ).scalar_one_or_none()
    if user is None:
        raise NotFound("User", login)
    if user.disabled_at is not None:
        raise WrongState(f"User {login} was already disabled on {user.disabled_at:%Y-%m-%d %H:%M} UTC.")
    if database_login(session) is not None:
        _execute(session, sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(login)))
    user.disabled_at, user.disabled_by = utcnow(), actor
    session.flush()
    audit.record(
        session,
        action="user.disabled",
        entity_type="user",
        entity_key=login,
        actor=actor,
        old={"disabled_at": None},
        new={"disabled_at": user.disabled_at},
        reason=reason,
    )
    return user


@dataclass(frozen=True)
class UserLine:
    login: str
    full_name: str
    roles: list[str]
    disabled_at: datetime | None
    created_at: datetime
    created_by: str


def list_users(session: Session) -> list[UserLine]:
    """Every user, with the roles it holds now (on PostgreSQL read from the database's role memberships)."""
    users = session.execute(select(AppUser).order_by(col(AppUser.login))).scalars().all()
    held: dict[str, list[str]] = {}
    if database_login(session) is not None:
        rows = session.execute(
            text(
                "SELECT m.rolname, g.rolname FROM pg_auth_members a JOIN pg_roles m ON m.oid = a.member "
                "JOIN pg_roles g ON g.oid = a.roleid WHERE g.rolname LIKE 'plasmatrace\\_%' ORDER BY g.rolname"
            )
        )
        for member, role in rows:
            held.setdefault(member, []).append(role)
    return [
        UserLine(
            login=u.login,
            full_name=u.full_name,
            roles=held.get(u.login, []) if held or database_login(session) else u.roles.split(),
            disabled_at=u.disabled_at,
            created_at=u.created_at,
            created_by=u.created_by,
        )
        for u in users
    ]
