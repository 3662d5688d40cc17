"""A value the database's CHECK constraint refuses (a schema behind the code) is a clear exit 5, not a traceback."""

from __future__ import annotations

from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select

from tests.cli.conftest import Cli
from traceability.db import make_engine
from traceability.errors import ExitCode
from traceability.models import AuditEvent, TestResult

UNIT = "A999926123456"


def allow_only_hbsag_results(db_url: str) -> None:
    """Narrow the results' marker constraint, as a database migrated by an older version that knew fewer markers."""
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn, Operations.context(MigrationContext.configure(conn)) as op:
            with op.batch_alter_table("test_result") as batch:
                batch.drop_constraint("ck_test_result_marker", type_="check")
                batch.create_check_constraint("ck_test_result_marker", "marker IN ('hbsag')")
    finally:
        engine.dispose()


def counts(db_url: str) -> tuple[int, int]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            results = conn.execute(select(func.count()).select_from(TestResult)).scalar_one()
            events = conn.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
    finally:
        engine.dispose()
    return results, events


def site_with_unit(run: Cli) -> None:
    run("establishment", "add", "C-BOS", "--name", "Boston centre", "--kind", "collection")
    run("donor", "add", "D-000123", "--establishment", "C-BOS")
    run("donation", "add", UNIT, "--donor", "D-000123", "--collected-at", "2026-05-01T09:30:00Z", "--volume-ml", "780")


def test_a_marker_the_database_refuses_exits_5_naming_the_constraint_and_writes_nothing(run: Cli) -> None:
    site_with_unit(run)
    run("result", "add", UNIT, "--marker", "hbsag", "--result", "NR")
    allow_only_hbsag_results(run.db_url)
    before = counts(run.db_url)

    refused = run("result", "add", UNIT, "--marker", "hiv-rna", "--result", "NR", code=ExitCode.INVALID_INPUT)

    assert "ck_test_result_marker" in refused.stderr
    assert "nothing was written" in refused.stderr
    assert "plasmatrace init" in refused.stderr
    assert counts(run.db_url) == before


def test_an_imported_marker_the_database_refuses_exits_5_and_loads_nothing(run: Cli) -> None:
    site_with_unit(run)
    allow_only_hbsag_results(run.db_url)
    before = counts(run.db_url)
    path = run.workdir / "results.csv"
    path.write_text(
        f"unit_number,marker,result,tested_at\n{UNIT},hbsag,NR,2026-05-02T08:00:00Z\n"
        f"{UNIT},hiv-rna,NR,2026-05-02T08:00:00Z\n",
        encoding="utf-8",
    )

    refused = run("import", "results", str(path), code=ExitCode.INVALID_INPUT)

    assert "ck_test_result_marker" in refused.stderr
    assert counts(run.db_url) == before
