"""Who is acting, and what their roles allow (SPEC §11).

On PostgreSQL the person is the database login: PostgreSQL authenticated it, ``session_user`` names it, and the
group roles granted to it decide what it may do, also against direct SQL (``install_roles``, run by ``init``,
creates the roles and their GRANTs). On SQLite, the single-workstation database, the person is the operating-system
user (or ``--actor``) and the roles come from the ``app_user`` table; nothing stops someone who holds the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import Connection, select, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from .db import database_login, dialect
from .errors import ActorNotLogin, InvalidInput, RoleRequired, UnknownUser, UserDisabled
from .models import AppUser


class Role(StrEnum):
    """The group roles of SPEC §11; each is a PostgreSQL role of the same name."""

    RECORDER = "plasmatrace_recorder"
    APPROVER = "plasmatrace_approver"
    INVESTIGATOR = "plasmatrace_investigator"
    AUDITOR = "plasmatrace_auditor"
    ADMIN = "plasmatrace_admin"

    @property
    def short(self) -> str:
        return self.value.removeprefix("plasmatrace_")


def parse_role(text_: str) -> Role:
    """`recorder` or `plasmatrace_recorder`. Raises InvalidInput."""
    wanted = text_.strip().lower().removeprefix("plasmatrace_")
    for role in Role:
        if role.short == wanted:
            return role
    known = ", ".join(r.short for r in Role)
    raise InvalidInput(f"Role {text_!r} is unknown; roles are {known}.")


@dataclass(frozen=True)
class Identity:
    """The person acting in one unit of work."""

    login: str
    full_name: str | None
    roles: frozenset[Role]
    enforced: bool  # False on a SQLite file with no users yet: a single workstation before any user was added
    on_postgres: bool

    def may(self, role: Role) -> bool:
        return not self.enforced or role in self.roles


def establish(session: Session, *, declared: str, explicit: bool) -> Identity:
    """Who is acting. On PostgreSQL the login (an explicit --actor naming someone else raises ActorNotLogin); on
    SQLite the declared actor. Raises UserDisabled for a disabled user."""
    login = database_login(session)
    if login is not None:
        if explicit and declared != login:
            raise ActorNotLogin(declared, login)
        user = _user(session, login)  # first: a database without the schema says so here ("run init")
        _not_disabled(user)
        held = session.execute(
            text("SELECT r FROM unnest(CAST(:roles AS text[])) AS r WHERE plasmatrace_has_role(r)"),
            {"roles": [r.value for r in Role]},
        ).scalars()
        return Identity(login, user.full_name if user else None, frozenset(Role(r) for r in held), True, True)
    user = _user(session, declared)
    _not_disabled(user)
    any_user = session.execute(select(col(AppUser.id)).limit(1)).first() is not None
    roles = frozenset(parse_role(r) for r in user.roles.split()) if user else frozenset()
    return Identity(declared, user.full_name if user else None, roles, any_user, False)


def _user(session: Session, login: str) -> AppUser | None:
    return session.execute(select(AppUser).where(col(AppUser.login) == login)).scalar_one_or_none()


def _not_disabled(user: AppUser | None) -> None:
    if user is not None and user.disabled_at is not None:
        raise UserDisabled(user.login, f"{user.disabled_at:%Y-%m-%d %H:%M} UTC")


def require(identity: Identity, role: Role, *, doing: str) -> None:
    """Raise RoleRequired (exit 7) unless the person holds ``role``; UnknownUser when they are no user at all."""
    if identity.may(role):
        return
    if not identity.on_postgres and not identity.roles and identity.full_name is None:
        raise UnknownUser(identity.login)
    raise RoleRequired(identity.login, role=role.value, doing=doing)


# --- PostgreSQL roles and GRANTs (run by `init`) -----------------------------------------------------------------

# Tables only the named roles write; every other table is the recorder's to insert into and update.
_NOT_RECORDED = {
    "audit_event",
    "app_user",
    "signature",
    "alembic_version",
    "recall",
    "recall_consignee",
    "recall_drill",
}
_WRITES: dict[Role, tuple[str, ...]] = {
    Role.APPROVER: ("pool", "lot", "step", "deferral", "lot_hold"),
    Role.INVESTIGATOR: (
        "lookback_case",
        "case_finding",
        "case_task",
        "lot_hold",
        "donation",
        "deferral",
        "recall",
        "recall_consignee",
        "recall_drill",
    ),
    Role.ADMIN: ("app_user",),
}
_SIGNERS = (Role.APPROVER, Role.INVESTIGATOR)


def grant_statements(tables: list[str]) -> list[str]:
    """Every GRANT that gives the group roles their rights on these tables (idempotent)."""
    statements = []
    for role in Role:
        statements.append(f"GRANT USAGE ON SCHEMA public TO {role.value}")
        statements.append(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role.value}")
        if role is not Role.AUDITOR:
            statements.append(f"GRANT INSERT ON audit_event TO {role.value}")
            statements.append(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role.value}")
    for table in tables:
        if table not in _NOT_RECORDED:
            statements.append(f'GRANT INSERT, UPDATE ON "{table}" TO {Role.RECORDER.value}')
    for role, own in _WRITES.items():
        statements.extend(f'GRANT INSERT, UPDATE ON "{t}" TO {role.value}' for t in own if t in tables)
    statements.extend(f"GRANT INSERT ON signature TO {role.value}" for role in _SIGNERS)
    return statements


def install_roles(engine: Engine) -> list[str]:
    """Create the group roles (NOLOGIN) where missing and grant their rights on every table; returns the roles
    created. PostgreSQL only; needs a login allowed to create roles (the owner who runs `init`)."""
    if not dialect.logins_are_database_roles(engine):
        return []
    created = []
    with engine.begin() as conn:
        existing = set(conn.execute(text("SELECT rolname FROM pg_roles WHERE rolname LIKE 'plasmatrace%'")).scalars())
        for role in Role:
            if role.value not in existing:
                conn.execute(text(f"CREATE ROLE {role.value} NOLOGIN"))
                created.append(role.value)
        _grant(conn)
    return created


def _grant(conn: Connection) -> None:
    tables = list(conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars())
    for statement in grant_statements(tables):
        conn.execute(text(statement))
