"""The consignees migration 0005 carried over get the audit event that records them

Migration 0005 made one consignee (LEGACY-0001, ...) from each free-text consignee name already on a shipment,
without an audit event. ``audit verify`` names every record without the event that recorded it (an empty or
rebuilt trail is not intact), so this migration appends a ``consignee.added`` event for each of those consignees,
saying that the migration carried it over. Only rows created by migration 0005 and still without an event get
one: a consignee inserted by hand stays without, and stays named.

Revision ID: 0009
Revises: 0005
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from traceability.audit import GENESIS_HASH, event_hash, to_json
from traceability.models import AuditEvent

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels = None
depends_on = None

CARRIED_BY = "migration-0005"
REASON = "carried over by migration 0005 from the free-text consignee of shipments recorded before it"


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT c.code, c.name, c.address, c.country FROM consignee c "
            "WHERE c.created_by = :carried AND c.import_event_id IS NULL AND NOT EXISTS ("
            "SELECT 1 FROM audit_event e WHERE e.entity_type = 'consignee' AND e.entity_key = c.code "
            "AND e.action = 'consignee.added') ORDER BY c.code"
        ),
        {"carried": CARRIED_BY},
    ).all()
    if not rows:
        return
    postgres = conn.dialect.name == "postgresql"
    if postgres:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(7261001)"))  # as traceability.db.lock_audit_chain
    actor = str(conn.execute(sa.text("SELECT session_user")).scalar_one()) if postgres else "migration-0009"
    head = conn.execute(sa.text("SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1")).first()
    seq, prev_hash = (int(head[0]), str(head[1])) if head else (0, GENESIS_HASH)
    for code, name, address, country in rows:
        seq += 1
        fields = {
            "seq": seq,
            "occurred_at": datetime.now(UTC),
            "actor": actor,
            "action": "consignee.added",
            "entity_type": "consignee",
            "entity_key": code,
            "old_values": None,
            "new_values": to_json({"name": name, "address": address, "country": country}),
            "reason": REASON,
            "prev_hash": prev_hash,
        }
        prev_hash = event_hash(fields)
        conn.execute(AuditEvent.__table__.insert().values(**fields, hash=prev_hash))  # its column types


def downgrade() -> None:
    """The events stay: the audit trail is append-only."""
