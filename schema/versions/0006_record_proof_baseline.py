"""The record proof begins: events from here on keep the complete state of the rows they write.

No table changes. Events recorded before this revision keep only the fields their action named, so their rows
cannot be replayed from the trail; ``traceability.migrate.upgrade`` therefore records one ``audit.baseline``
event right after upgrading a database across this revision, with a digest (count and sum of per-row hashes) and
the highest id of every regulated table: the rows present then are proven by that digest from then on.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
