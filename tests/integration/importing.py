"""Helpers of the import tests (tests/integration/test_import_*.py): files to import, table counts."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlmodel import Session

from tests.factories import ACTOR, NOW
from traceability.importers import load
from traceability.importers.load import ImportKind, import_file
from traceability.models import AuditEvent, Deferral, Donation, Donor, PoolMember, TestResult

DONATIONS_HEADER = "unit_number,donor_code,collected_at,volume_ml\n"
RESULTS_HEADER = "unit_number,marker,result,tested_at\n"
T0 = (NOW - timedelta(days=20)).isoformat()


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def counts(session: Session) -> dict[str, int]:
    models = {
        "donors": Donor,
        "donations": Donation,
        "results": TestResult,
        "members": PoolMember,
        "events": AuditEvent,
        "deferrals": Deferral,
    }
    return {name: session.execute(select(func.count()).select_from(m)).scalar_one() for name, m in models.items()}


def import_(session: Session, kind: ImportKind | str, path: Path, **options: object) -> load.ImportReport:
    return import_file(session, kind, path, actor=ACTOR, **options)  # type: ignore[arg-type]
