"""Users, electronic signatures, and (PostgreSQL) the database fixing who acted.

``app_user`` keeps each person's printed name and roles (and, on SQLite, an Argon2id signing password);
``signature`` keeps each electronic signature beside its audit event. On PostgreSQL:

- a trigger refuses an audit event whose ``actor`` is not ``session_user``: the login that authenticated is the
  person, whatever the client says (the application reads ``session_user`` and hashes the event with it); another
  refuses a signature row naming any other login than ``session_user``;
- a trigger on pool, lot, step, deferral and lookback_case refuses the status changes reserved to a role (release,
  closing a deviation, lifting a deferral, closing a case) unless the login holds it. Table GRANTs cannot tell a
  pool closed by a recorder from a pool released by an approver: both update the same row.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels = None
depends_on = None

GUARDED_TABLES = ("pool", "lot", "step", "deferral", "lookback_case")

POSTGRES_UP = [
    """CREATE OR REPLACE FUNCTION audit_event_actor_is_login() RETURNS trigger AS $$
       BEGIN
         IF NEW.actor IS DISTINCT FROM session_user THEN
           RAISE EXCEPTION 'permission denied: an audit event of login % names the actor %', session_user, NEW.actor
             USING ERRCODE = 'insufficient_privilege';
         END IF;
         RETURN NEW;
       END; $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER audit_event_actor_is_login BEFORE INSERT ON audit_event
       FOR EACH ROW EXECUTE FUNCTION audit_event_actor_is_login()""",
    """CREATE OR REPLACE FUNCTION signature_login_is_session_user() RETURNS trigger AS $$
       BEGIN
         IF NEW.login IS DISTINCT FROM session_user THEN
           RAISE EXCEPTION 'permission denied: login % cannot sign as %', session_user, NEW.login
             USING ERRCODE = 'insufficient_privilege';
         END IF;
         RETURN NEW;
       END; $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER signature_login_is_session_user BEFORE INSERT ON signature
       FOR EACH ROW EXECUTE FUNCTION signature_login_is_session_user()""",
    """CREATE OR REPLACE FUNCTION plasmatrace_has_role(wanted text) RETURNS boolean AS $$
       BEGIN
         IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = session_user AND rolsuper) THEN
           RETURN true;
         END IF;
         IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = wanted) THEN
           RETURN false;
         END IF;
         RETURN pg_has_role(session_user, wanted, 'MEMBER');
       END; $$ LANGUAGE plpgsql STABLE""",
    """CREATE OR REPLACE FUNCTION plasmatrace_guard_status() RETURNS trigger AS $$
       DECLARE
         needed text;
         doing text;
       BEGIN
         IF TG_TABLE_NAME IN ('pool', 'lot') THEN
           IF NEW.status = 'released' AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'released') THEN
             needed := 'plasmatrace_approver'; doing := 'release a ' || TG_TABLE_NAME;
           END IF;
         ELSIF TG_TABLE_NAME = 'step' THEN
           IF NEW.deviation_closed_at IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.deviation_closed_at IS NULL) THEN
             needed := 'plasmatrace_approver'; doing := 'close a deviation';
           END IF;
         ELSIF TG_TABLE_NAME = 'deferral' THEN
           IF NEW.lifted_on IS NOT NULL AND (TG_OP = 'INSERT' OR OLD.lifted_on IS NULL) THEN
             needed := 'plasmatrace_approver'; doing := 'lift a deferral';
           END IF;
         ELSIF TG_TABLE_NAME = 'lookback_case' THEN
           IF NEW.status = 'closed' AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'closed') THEN
             needed := 'plasmatrace_investigator'; doing := 'close a look-back case';
           END IF;
         END IF;
         IF needed IS NOT NULL AND NOT plasmatrace_has_role(needed) THEN
           RAISE EXCEPTION 'permission denied: % needs the role %', doing, needed
             USING ERRCODE = 'insufficient_privilege';
         END IF;
         RETURN NEW;
       END; $$ LANGUAGE plpgsql""",
    *(
        f"""CREATE TRIGGER {table}_guard_status BEFORE INSERT OR UPDATE ON {table}
            FOR EACH ROW EXECUTE FUNCTION plasmatrace_guard_status()"""
        for table in GUARDED_TABLES
    ),
]


def upgrade() -> None:
    op.create_table(
        "app_user",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("login", sa.String(length=100), nullable=False),
        sa.Column("full_name", sa.String(length=200), nullable=False),
        sa.Column("roles", sa.String(length=200), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=True),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("disabled_by", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_app_user")),
    )
    with op.batch_alter_table("app_user", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_app_user_login"), ["login"], unique=True)

    op.create_table(
        "signature",
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("audit_event_id", sa.Integer(), nullable=False),
        sa.Column("entity_type", sa.String(length=40), nullable=False),
        sa.Column("entity_key", sa.String(length=200), nullable=False),
        sa.Column("login", sa.String(length=100), nullable=False),
        sa.Column("full_name", sa.String(length=200), nullable=False),
        sa.Column(
            "meaning",
            sa.Enum(
                "approved",
                "reviewed",
                "verified",
                "responsible",
                name="signaturemeaning",
                native_enum=False,
                create_constraint=True,
                length=15,
            ),
            nullable=False,
        ),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["audit_event_id"], ["audit_event.id"], name=op.f("fk_signature_audit_event_id_audit_event")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signature")),
        sa.UniqueConstraint("audit_event_id", name=op.f("uq_signature_audit_event_id")),
    )
    with op.batch_alter_table("signature", schema=None) as batch_op:
        batch_op.create_index("ix_signature_entity", ["entity_type", "entity_key"], unique=False)
        batch_op.create_index(batch_op.f("ix_signature_login"), ["login"], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        for statement in POSTGRES_UP:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in GUARDED_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_guard_status ON {table}")
        op.execute("DROP FUNCTION IF EXISTS plasmatrace_guard_status()")
        op.execute("DROP FUNCTION IF EXISTS plasmatrace_has_role(text)")
        op.execute("DROP TRIGGER IF EXISTS signature_login_is_session_user ON signature")
        op.execute("DROP FUNCTION IF EXISTS signature_login_is_session_user()")
        op.execute("DROP TRIGGER IF EXISTS audit_event_actor_is_login ON audit_event")
        op.execute("DROP FUNCTION IF EXISTS audit_event_actor_is_login()")
    with op.batch_alter_table("signature", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_signature_login"))
        batch_op.drop_index("ix_signature_entity")
    op.drop_table("signature")
    with op.batch_alter_table("app_user", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_app_user_login"))
    op.drop_table("app_user")
