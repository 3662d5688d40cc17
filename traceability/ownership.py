"""PostgreSQL: the tables, their triggers and functions belong to an owner role no application login is a member of.

Only a table's owner (or a superuser) may disable its triggers, drop or rebuild it, or change its functions. When the
tables belong to the login that ran ``init``, that login, and any login that can become it, could switch off the
append-only triggers of ``audit_event`` or drop and recreate the trail. ``init`` therefore hands every table,
sequence and function of the schema to ``plasmatrace_owner``, a role that cannot log in and that the group roles
and the logins ``user add`` creates are never granted.

On PostgreSQL 15 and older a login with CREATEROLE (which the admin role needs to add logins) may grant itself any
role that is not a superuser, and so could become an ordinary owner role. There the owner role is created NOLOGIN
SUPERUSER: nobody logs in as it, and only a superuser can grant it. From PostgreSQL 16 CREATEROLE reaches only roles
held WITH ADMIN OPTION, and the owner role is a plain NOLOGIN role.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, text
from sqlalchemy.engine import Engine

from .db import dialect
from .errors import NotPermitted

OWNER_ROLE = "plasmatrace_owner"
_PLAIN_OWNER_FROM = 160000  # server_version_num from which CREATEROLE cannot grant roles it does not administer


@dataclass(frozen=True)
class Ownership:
    created: bool  # the owner role was created by this run
    handed_over: int  # tables, sequences and functions whose owner changed


def install_owner(engine: Engine) -> Ownership | None:
    """Create the owner role where missing and make it the owner of every table, sequence and function in the
    public schema (idempotent; ``init`` runs it after the migrations). PostgreSQL only; needs a superuser, or on
    PostgreSQL 16+ a login with CREATEROLE that may own the schema's objects. Raises NotPermitted."""
    if not dialect.is_postgresql(engine):
        return None
    with engine.begin() as conn:
        version = int(conn.execute(text("SHOW server_version_num")).scalar_one())
        superuser = bool(conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar())
        exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": OWNER_ROLE}).first()
        created = False
        if exists is None:
            if version < _PLAIN_OWNER_FROM and not superuser:
                raise NotPermitted(
                    f"init must run as a superuser once on PostgreSQL {version // 10000}, to create the owner role "
                    f"{OWNER_ROLE} (NOLOGIN SUPERUSER: on this version a login with CREATEROLE could take any other "
                    "role); later runs may be made by a login that is a member of it."
                )
            conn.execute(
                text(f"CREATE ROLE {OWNER_ROLE} NOLOGIN" + (" SUPERUSER" if version < _PLAIN_OWNER_FROM else ""))
            )
            created = True
            if not superuser:  # PostgreSQL 16+: the creator administers the role; it must also be able to SET it
                conn.execute(text(f"GRANT {OWNER_ROLE} TO CURRENT_USER WITH INHERIT TRUE, SET TRUE"))
        conn.execute(text(f"GRANT USAGE, CREATE ON SCHEMA public TO {OWNER_ROLE}"))
        conn.execute(text("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
        handed = _hand_over(conn)
    return Ownership(created, handed)


def _hand_over(conn: Connection) -> int:
    """ALTER ... OWNER TO the owner role for every table, free-standing sequence and function of the schema that
    another role owns (a sequence owned by a column follows its table)."""
    statements: list[str] = []
    tables = conn.execute(
        text(
            "SELECT quote_ident(c.relname), c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S') "
            "AND pg_get_userbyid(c.relowner) <> :owner "
            "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid "
            "AND d.deptype IN ('a', 'i') AND c.relkind = 'S') ORDER BY c.relname"
        ),
        {"owner": OWNER_ROLE},
    ).all()
    kinds = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}
    statements += [f"ALTER {kinds[kind]} public.{name} OWNER TO {OWNER_ROLE}" for name, kind in tables]
    functions = conn.execute(
        text(
            "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> :owner ORDER BY 1"
        ),
        {"owner": OWNER_ROLE},
    ).scalars()
    statements += [f"ALTER FUNCTION {signature} OWNER TO {OWNER_ROLE}" for signature in functions]
    for statement in statements:
        conn.execute(text(statement))
    return len(statements)
