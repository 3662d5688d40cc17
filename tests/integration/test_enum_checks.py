"""Every enum column's CHECK constraint, as the migrations build it, allows exactly the enum's values.

Alembic's autogenerate does not compare CHECK constraints, so a value added to an enum without a migration passes
`test_models_and_migrations_agree` and is then refused by the database on the first write.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlmodel import SQLModel

from traceability import models  # noqa: F401  (registers every table on SQLModel.metadata)
from traceability.db import make_engine

_NAME = r'"?([A-Za-z_][A-Za-z0-9_]*)"?'
# SQLite keeps the text as written (`kind IN ('a', 'b')`); PostgreSQL rewrites it
# (`((kind)::text = ANY ((ARRAY['a'::character varying, 'b'::character varying])::text[]))`).
_ONE_OF = re.compile(rf"^[(\s]*{_NAME}\)?(?:::[a-z ]+)?\s+(?:IN\s*\(|=\s*ANY\s*\(+ARRAY\[)", re.IGNORECASE)
_LITERAL = re.compile(r"'((?:[^']|'')*)'")


def enum_columns() -> dict[tuple[str, str], tuple[str, set[str]]]:
    """(table, column) -> (the CHECK constraint's name, the enum's values) for every enum column of the models."""
    convention = SQLModel.metadata.naming_convention["ck"]
    found = {}
    for table in SQLModel.metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, sa.Enum) and column.type.create_constraint:
                name = str(convention) % {"table_name": table.name, "constraint_name": column.type.name}
                found[table.name, column.name] = (name, set(column.type.enums))
    return found


def check_constraints(conn: Connection) -> list[tuple[str, str, str]]:
    """(table, constraint name, condition) for every CHECK constraint in the database, read from its catalogue."""
    if conn.dialect.name == "postgresql":
        rows = conn.execute(
            sa.text(
                "SELECT rel.relname, con.conname, pg_get_constraintdef(con.oid) FROM pg_constraint con "
                "JOIN pg_class rel ON rel.oid = con.conrelid "
                "WHERE con.contype = 'c' AND con.connamespace = current_schema()::regnamespace"
            )
        ).all()
        return [(table, name, re.sub(r"^CHECK\s*", "", condition)) for table, name, condition in rows]
    tables = conn.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL"))
    return [(table, name, condition) for table, sql in tables for name, condition in _sqlite_checks(sql)]


def _sqlite_checks(create_table: str) -> list[tuple[str, str]]:
    """The named CHECK constraints of a CREATE TABLE statement, each with its condition (balanced parentheses)."""
    found = []
    for match in re.finditer(rf"CONSTRAINT\s+{_NAME}\s+CHECK\s*\(", create_table, re.IGNORECASE):
        depth, quoted, start = 1, False, match.end()
        for at in range(start, len(create_table)):
            char = create_table[at]
            if char == "'":
                quoted = not quoted
            elif not quoted and char in "()":
                depth += 1 if char == "(" else -1
                if depth == 0:
                    found.append((match.group(1), create_table[start:at]))
                    break
    return found


def one_of_constraints(conn: Connection) -> dict[tuple[str, str], tuple[str, set[str]]]:
    """(table, column) -> (name, allowed values) for every CHECK constraint of the form `column IN (...)`."""
    found = {}
    for table, name, condition in check_constraints(conn):
        match = _ONE_OF.match(condition)
        if match:
            values = {value.replace("''", "'") for value in _LITERAL.findall(condition[match.end() :])}
            found[table, match.group(1)] = (name, values)
    return found


def differences(
    expected: dict[tuple[str, str], tuple[str, set[str]]], actual: dict[tuple[str, str], tuple[str, set[str]]]
) -> list[str]:
    problems = []
    for table, column in sorted(expected.keys() | actual.keys()):
        where = f"{table}.{column}"
        if (table, column) not in actual:
            problems.append(f"{where}: an enum column with no CHECK constraint in the database")
            continue
        if (table, column) not in expected:
            problems.append(f"{where}: CHECK {actual[table, column][0]} lists values but the model has no enum")
            continue
        (name, values), (db_name, db_values) = expected[table, column], actual[table, column]
        if name != db_name:
            problems.append(f"{where}: the CHECK constraint is named {db_name}, the models expect {name}")
        if values - db_values:
            missing = sorted(values - db_values)
            problems.append(f"{where}: {missing} in the enum but refused by {db_name}: add a migration")
        if db_values - values:
            problems.append(f"{where}: {sorted(db_values - values)} allowed by {db_name} but not in the enum")
    return problems


def test_every_enum_column_of_every_table_is_limited_by_a_check_constraint() -> None:
    unchecked = [
        f"{table.name}.{column.name}"
        for table in SQLModel.metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, sa.Enum) and not column.type.create_constraint
    ]

    assert unchecked == []
    assert {("test_result", "marker"), ("pool_test", "marker"), ("deferral", "source")} <= enum_columns().keys()


def test_every_enum_column_allows_exactly_the_enums_values_after_the_migrations(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            actual = one_of_constraints(conn)
    finally:
        engine.dispose()

    assert differences(enum_columns(), actual) == []


def test_a_value_added_to_an_enum_alone_is_reported_naming_the_column_and_value() -> None:
    expected = {("test_result", "marker"): ("ck_test_result_marker", {"hbsag", "hev-rna"})}
    actual = {("test_result", "marker"): ("ck_test_result_marker", {"hbsag"})}

    assert differences(expected, actual) == [
        "test_result.marker: ['hev-rna'] in the enum but refused by ck_test_result_marker: add a migration"
    ]
