"""The committed JSON Schemas match the read models, and they require the keys SPEC §5 promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from traceability.reports import json_schemas

FOLDER = Path(__file__).resolve().parents[2] / "schema" / "json"
SPEC_KEYS = {
    "trace-donor": {"donor_code", "donations", "pools", "lots", "shipments"},
    "trace-lot": {"lot_number", "pools", "lots", "donor_count", "donation_count", "steps", "shipments"},
    "trace-pool": {"pool_number", "status", "donor_count", "donation_count", "volume_ml", "lots", "shipments"},
}


@pytest.mark.parametrize("name", sorted(json_schemas.OUTPUTS))
def test_the_committed_schema_is_up_to_date(name: str) -> None:
    committed = (FOLDER / f"{name}.json").read_text(encoding="utf-8")
    assert committed == json_schemas.render(name), "run: python -m traceability.reports.json_schemas"


@pytest.mark.parametrize("name", sorted(SPEC_KEYS))
def test_the_spec_keys_are_required(name: str) -> None:
    assert SPEC_KEYS[name] <= set(json_schemas.schema_of(name)["required"])


def test_nested_spec_keys_are_required() -> None:
    defs = json_schemas.schema_of("trace-donor")["$defs"]
    assert {"unit_number", "collected_at", "status", "pool_number", "lot_numbers"} <= set(
        defs["DonationLine"]["required"]
    )
    assert {"lot_number", "consignee", "shipped_on", "quantity"} <= set(defs["ShipmentLine"]["required"])
    lot_defs = json_schemas.schema_of("trace-lot")["$defs"]
    assert {"pool_number", "donor_count", "donation_count"} <= set(lot_defs["PoolLine"]["required"])
    assert {"unit_number", "donor_code", "pool_number"} <= set(lot_defs["MemberLine"]["required"])
