"""Apply the Alembic migrations in schema/ (what `plasmatrace init` runs)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.engine import Engine

import schema

from .db import dialect


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(schema.__file__).parent))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head() or ""


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


RECORD_PROOF_REVISION = "0006"
"""From this revision on every event keeps the full state of the rows it wrote (see schema/versions/0006)."""


def upgrade(engine: Engine, *, actor: str = "plasmatrace init") -> tuple[str | None, str]:
    """Bring the database to the newest schema; returns (revision before, revision after).

    On SQLite a migration may rebuild a table (copy, drop, rename: SQLite's own procedure for changes ALTER
    TABLE cannot make), which must run with foreign keys off, or dropping the old table would be refused or
    take the rows that refer to it along. The keys are checked before the migration commits instead."""
    before = current_revision(engine)
    with engine.connect() as conn, dialect.foreign_keys_off(conn) as check_foreign_keys:
        with conn.begin():
            command.upgrade(alembic_config(conn), "head")
            check_foreign_keys()
    if before is not None and before < RECORD_PROOF_REVISION:
        record_baseline(engine, actor=actor)
    return before, head_revision()


def record_baseline(engine: Engine, *, actor: str) -> None:
    """One ``audit.baseline`` event with a digest of every regulated table: the rows of a database upgraded from
    before the record proof are proven by it from now on (their events do not carry full rows)."""
    from sqlmodel import Session

    from traceability import audit

    with Session(engine) as session, session.begin():
        audit.record(
            session,
            action=audit.recording.BASELINE_ACTION,
            entity_type="audit",
            entity_key=f"schema {RECORD_PROOF_REVISION}",
            actor=actor,
            new={"tables": audit.recording.baseline(session)},
            reason="record proof begins: rows present now are proven by this digest",
        )
