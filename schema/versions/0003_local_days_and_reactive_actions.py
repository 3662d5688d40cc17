"""Establishments get an IANA time zone (the rules count local days); deferrals can last until a nonreactive retest.

- ``establishment.timezone``: existing establishments get UTC, which is what the rules assumed until now.
- ``deferral.source`` gains ``until-nonreactive`` (a reactive syphilis test defers the donor until a later donation
  tests nonreactive, 21 CFR 640.65(b)(2)(ii)); ``deferral.marker`` names the marker whose nonreactive retest ends it.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels = None
depends_on = None

MARKERS = ("hbsag", "anti-hiv", "anti-hcv", "hiv-rna", "hcv-rna", "hbv-dna", "hav-rna", "b19-dna", "syphilis")
OLD_SOURCES = ("manual", "reactive-result", "lookback")
NEW_SOURCES = (*OLD_SOURCES, "until-nonreactive")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade() -> None:
    with op.batch_alter_table("establishment") as batch_op:
        batch_op.add_column(sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False))
    with op.batch_alter_table("deferral") as batch_op:
        batch_op.drop_constraint(op.f("ck_deferral_deferralsource"), type_="check")
        batch_op.alter_column("source", existing_type=sa.String(19), type_=sa.String(21), existing_nullable=False)
        batch_op.create_check_constraint(op.f("ck_deferral_deferralsource"), _one_of("source", NEW_SOURCES))
        batch_op.add_column(sa.Column("marker", sa.String(length=12), nullable=True))
        batch_op.create_check_constraint(op.f("ck_deferral_marker"), _one_of("marker", MARKERS))


def downgrade() -> None:
    with op.batch_alter_table("deferral") as batch_op:
        batch_op.drop_constraint(op.f("ck_deferral_marker"), type_="check")
        batch_op.drop_column("marker")
        batch_op.drop_constraint(op.f("ck_deferral_deferralsource"), type_="check")
        batch_op.alter_column("source", existing_type=sa.String(21), type_=sa.String(19), existing_nullable=False)
        batch_op.create_check_constraint(op.f("ck_deferral_deferralsource"), _one_of("source", OLD_SOURCES))
    with op.batch_alter_table("establishment") as batch_op:
        batch_op.drop_column("timezone")
