"""An import's memory does not grow with its file: four times the rows, the same peak (within noise)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
from sqlmodel import Session

from tests.factories import make_din, make_establishment
from traceability.db import make_engine, transaction
from traceability.importers import load, readers
from traceability.importers.load import import_file
from traceability.services import donors


def write_donations(path: Path, rows: int, fin: str) -> Path:
    with path.open("w", encoding="utf-8") as out:
        out.write("unit_number,donor_code,collected_at,volume_ml\n")
        for i in range(rows):
            out.write(f"{make_din(i, fin=fin)},D-{i % 50},2026-05-01T08:{i % 60:02d}:00Z,750\n")
    return path


def peak_of_import(url: str, path: Path) -> int:
    engine = make_engine(url)
    tracemalloc.start()
    try:
        with transaction(engine) as session:
            report = import_file(session, "donations", path, actor="qa.import")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        engine.dispose()
    assert report.loaded == report.rows
    return peak


def test_the_peak_memory_of_an_import_does_not_grow_with_the_file(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scaled down to run in seconds: chunks of 1,000 rows read from blocks of 16 KiB, a full garbage collection
    # every 4 chunks, so that both files are many chunks, blocks and collections long, and longer than the
    # parsing caches (4,096 entries).
    monkeypatch.setattr(load, "CHUNK_ROWS", 1_000)
    monkeypatch.setattr(load, "FULL_COLLECTION_CHUNKS", 4)
    monkeypatch.setattr(readers, "_BLOCK_BYTES", 1 << 14)
    engine = make_engine(db_url)
    with Session(engine) as session, session.begin():
        site = make_establishment(session)
        for i in range(50):
            donors.add_donor(session, donor_code=f"D-{i}", establishment=site, registered_on=None, actor="qa")
    engine.dispose()
    # The first import warms what is not the file's (caches, compiled statements).
    peak_of_import(db_url, write_donations(tmp_path / "warm.csv", 8_000, fin="A9997"))
    small_peak = peak_of_import(db_url, write_donations(tmp_path / "small.csv", 8_000, fin="A9998"))
    large_peak = peak_of_import(db_url, write_donations(tmp_path / "large.csv", 32_000, fin="A9999"))

    assert large_peak < small_peak * 1.25, (small_peak, large_peak)
