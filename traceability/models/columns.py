"""How plasmatrace declares its columns: constraint names, UTC timestamps, enums as checked strings, who
recorded a row."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from ..db.dialect import stored_utc

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back time-zone aware (SQLite keeps no zone of its own)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"timestamp {value.isoformat()} has no time zone")
        value = value.astimezone(UTC)
        return stored_utc(value, dialect)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def saved_id(row_id: int | None) -> int:
    """The id of a row read from the database or flushed to it, which always has one (None here is a bug)."""
    if row_id is None:
        raise ValueError("the row has no id: it was neither read from the database nor flushed to it")
    return row_id


def enum_column(enum: type[Enum], *, nullable: bool = False, default: Any = None, index: bool = False) -> Any:
    """A string column limited to the enum's values by a named CHECK constraint."""
    sa_type = sa.Enum(
        enum,
        native_enum=False,
        create_constraint=True,
        length=max(len(member.value) for member in enum) + 4,
        values_callable=lambda members: [member.value for member in members],
        name=enum.__name__.lower(),
        validate_strings=True,
    )
    return Field(default=default, sa_type=sa_type, nullable=nullable, index=index)


def utc_column(*, nullable: bool = False, index: bool = False, default_factory: Any = None) -> Any:
    if default_factory is not None:
        return Field(default_factory=default_factory, sa_type=UTCDateTime, nullable=nullable, index=index)
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


class Recorded(SQLModel):
    """Who created a row, and when."""

    created_at: datetime = utc_column(default_factory=utcnow)
    created_by: str = Field(max_length=100)
