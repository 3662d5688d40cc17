"""Whatever bytes arrive in an import file, the import ends in a clean message and exit code, or loads the file
whole; never a traceback, never half a file."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlmodel import Session

from tests.factories import ACTOR
from traceability.db import make_engine
from traceability.errors import TraceabilityError
from traceability.importers.load import ImportKind, import_file
from traceability.models import AuditEvent, Donation, Donor
from traceability.services import donors

HEADER = b"unit_number,donor_code,collected_at,volume_ml\n"
GOOD = b"G123417654321A,D-1,2026-01-02T10:00:00Z,700\n"

cells = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "=cmd|' /C calc'!A0",
            "+1+1",
            "-2",
            "@SUM(A1)",
            "\t=1",
            "\r=1",
            "\x00",
            "G123417654321B",
            "2026-13-01",
            "-700",
            "1e9",
            "'",
            '"',
            '""',
            "x" * 5000,
        ]
    ),
)
rows = st.lists(st.lists(cells, min_size=1, max_size=6), max_size=5)


def _csv(table: list[list[str]]) -> bytes:
    return "\n".join(",".join(row) for row in table).encode("utf-8", "surrogatepass")


payloads = st.one_of(
    st.binary(max_size=400),
    rows.map(lambda table: HEADER + _csv(table)),
    st.binary(max_size=200).map(lambda tail: HEADER + GOOD + tail),
    rows.map(lambda table: HEADER.decode().encode("utf-16") + _csv(table)),
    st.text(max_size=200).map(lambda text: HEADER + text.encode("latin-1", "replace")),
)


def test_arbitrary_files_end_cleanly_with_nothing_half_loaded(sqlite_template: Path, tmp_path: Path) -> None:
    path = tmp_path / "fuzz.db"
    shutil.copy(sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    with Session(engine) as session, session.begin():
        donors.add_establishment(session, code="C1", name="Centre", kind="collection", actor=ACTOR)  # type: ignore[arg-type]
        donors.add_donor(session, donor_code="D-1", establishment="C1", registered_on=None, actor=ACTOR)

    def state() -> tuple[int, int, int]:
        with Session(engine) as session:
            return (
                session.execute(select(func.count(Donation.id))).scalar_one(),
                session.execute(select(func.count(Donor.id))).scalar_one(),
                session.execute(select(func.count(AuditEvent.id))).scalar_one(),
            )

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(payload=payloads)
    def check(payload: bytes) -> None:
        before = state()
        with tempfile.NamedTemporaryFile(suffix=".csv", dir=tmp_path, delete=False) as handle:
            handle.write(payload)
        file = Path(handle.name)
        try:
            with Session(engine) as session, session.begin():
                report = import_file(session, ImportKind.DONATIONS, file, actor=ACTOR)
        except TraceabilityError as error:
            assert error.exit_code in (5, 6), error
            assert str(error)
            assert state() == before  # nothing half-loaded
            return
        finally:
            file.unlink()
        loaded = state()[0] - before[0]
        assert loaded == report.loaded  # all of the file's new rows, or none
        if loaded:  # keep the next example's "before" meaningful: the same unit can load only once
            assert report.rows >= loaded

    check()
    engine.dispose()
