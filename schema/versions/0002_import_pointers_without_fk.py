"""Imported rows point at their import event without a foreign-key constraint.

The constraint was checked row by row on every import (a locking lookup per row on PostgreSQL); the events are
append-only and ``audit verify`` checks the pointers instead (see traceability.models.IMPORT_EVENT_POINTERS).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels = None
depends_on = None

TABLES = ("donor", "donation", "pool_member", "test_result")


def _name(table: str) -> str:
    return f"fk_{table}_import_event_id_audit_event"


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_constraint(_name(table), type_="foreignkey")


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.create_foreign_key(_name(table), "audit_event", ["import_event_id"], ["id"])
