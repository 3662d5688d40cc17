"""PostgreSQL: the tables and their triggers belong to plasmatrace_owner, and no application login can switch off the
append-only trail, drop it or rebuild it, whatever its role (on a server that checks passwords)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.identity.conftest import Site
from traceability.db import make_engine
from traceability.ownership import OWNER_ROLE

LOGINS = ("rec", "appr", "appr2", "inv", "aud", "adm")

ATTACKS = {
    "disable the triggers": "ALTER TABLE audit_event DISABLE TRIGGER USER",
    "disable one trigger": "ALTER TABLE audit_event DISABLE TRIGGER audit_event_no_update",
    "drop the trail": "DROP TABLE audit_event CASCADE",
    "rename the trail away": "ALTER TABLE audit_event RENAME TO audit_event_old",
    "truncate the trail": "TRUNCATE audit_event",
    "update an event": "UPDATE audit_event SET reason = 'x'",
    "delete events": "DELETE FROM audit_event",
    "drop a trigger": "DROP TRIGGER audit_event_no_update ON audit_event",
    "replace the trigger function": (
        "CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger AS $$ BEGIN RETURN NEW; END; $$ "
        "LANGUAGE plpgsql"
    ),
    "skip triggers for the session": "SET session_replication_role = replica",
    "disable a release guard": "ALTER TABLE lot DISABLE TRIGGER lot_guard_status",
    "become the owner": f"GRANT {OWNER_ROLE} TO CURRENT_USER",
    "log in as the owner": f"ALTER ROLE {OWNER_ROLE} LOGIN PASSWORD 'owner-pass-1'",
    "take a table": "ALTER TABLE audit_event OWNER TO CURRENT_USER",
}


@pytest.fixture(scope="module")
def with_admin(site: Site) -> Site:
    """The site with an admin login too (CREATEROLE: it adds logins)."""
    site.run(
        "postgres", "user", "add", site.login("adm"), "--role", "admin", "--full-name", "Ada Admin",
        "--password-stdin", stdin="adm-pass-1\n",
    )  # fmt: skip
    site.run("rec", "establishment", "add", "C-OWN", "--name", "Owner test", "--kind", "collection")
    return site


def test_every_table_and_function_belongs_to_the_owner_role_which_no_login_holds(with_admin: Site) -> None:
    site = with_admin
    engine = make_engine(site.admin_url)
    try:
        with engine.connect() as conn:
            others = conn.execute(
                text(
                    "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
                    "AND c.relkind IN ('r', 'S', 'v') AND pg_get_userbyid(c.relowner) <> :owner"
                ),
                {"owner": OWNER_ROLE},
            ).all()
            functions = conn.execute(
                text(
                    "SELECT p.proname, pg_get_userbyid(p.proowner) FROM pg_proc p "
                    "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
                )
            ).all()
            [(can_login,)] = conn.execute(
                text("SELECT rolcanlogin FROM pg_roles WHERE rolname = :r"), {"r": OWNER_ROLE}
            )
            members = conn.execute(
                text(
                    "SELECT rolname FROM pg_roles WHERE rolname LIKE :pattern "
                    "AND pg_has_role(rolname, :owner, 'MEMBER')"
                ),
                {"pattern": f"%_{site.suffix}", "owner": OWNER_ROLE},
            ).all()
            audit_owner = conn.execute(text("SELECT tableowner FROM pg_tables WHERE tablename = 'audit_event'"))
            assert audit_owner.scalar_one() == OWNER_ROLE
    finally:
        engine.dispose()
    assert others == []
    assert functions and {owner for _, owner in functions} == {OWNER_ROLE}, functions
    assert can_login is False
    assert members == []


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_no_application_login_can_switch_off_drop_or_rebuild_the_trail(with_admin: Site, attack: str) -> None:
    site = with_admin
    for who in LOGINS:
        engine = make_engine(site.url(who))
        try:
            with pytest.raises(DBAPIError) as refused, engine.begin() as conn:
                conn.execute(text(ATTACKS[attack]))
        finally:
            engine.dispose()
        sqlstate = getattr(refused.value.orig, "sqlstate", None)
        assert sqlstate == "42501", f"{who}: {attack}: {refused.value.orig}"  # insufficient_privilege


def test_after_the_attacks_the_trail_is_whole_and_init_runs_again_for_the_site_administrator(with_admin: Site) -> None:
    site = with_admin
    assert "Audit trail intact" in site.run("aud", "audit", "verify").stderr
    again = site.run("postgres", "init")
    assert "up to date" in again.stderr
    site.run("rec", "establishment", "add", "C-OWN2", "--name", "After init", "--kind", "collection")
    assert "Audit trail intact" in site.run("aud", "audit", "verify").stderr
