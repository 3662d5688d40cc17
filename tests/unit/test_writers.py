"""Exports neutralise cells a spreadsheet would run as formulas, and keep a fixed, diffable shape."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime

import pytest

from traceability.reports.writers import dumps_json, neutralise, write_csv


@pytest.mark.parametrize("cell", ["=1+1", "+cmd", "-2+3", "@SUM(A1)", "\t=1", "\r=1", '=HYPERLINK("x")'])
def test_formula_like_cells_are_neutralised(cell: str) -> None:
    assert neutralise(cell) == "'" + cell
    out = io.StringIO()
    write_csv(["consignee"], [[cell]], out)
    assert list(csv.reader(io.StringIO(out.getvalue(), newline="")))[1] == ["'" + cell]


@pytest.mark.parametrize("value", ["G123417654321", "St Mary's", "", "a=b", 42, -3, 1.5, None])
def test_ordinary_values_are_left_alone(value: object) -> None:
    assert neutralise(value) == value


def test_csv_and_json_write_iso_utc_and_a_fixed_order() -> None:
    at = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    out = io.StringIO()
    write_csv(["unit", "at", "day", "lots"], [["U1", at, date(2026, 3, 2), ["L1", "L2"]]], out)
    assert out.getvalue() == "unit,at,day,lots\r\nU1,2026-03-01T09:30:00+00:00,2026-03-02,L1;L2\r\n"
    assert json.loads(dumps_json({"at": at})) == {"at": "2026-03-01T09:30:00+00:00"}
