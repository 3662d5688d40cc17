"""EPCIS 2.0 export: every document validates against GS1's JSON Schema, and says what happened to what."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import Session

from tests.epcis_schema import epcis_errors
from tests.factories import ACTOR, NOW
from tests.lineage_data import build_lineage, built_fixture  # noqa: F401 (a fixture)
from traceability.errors import LotNotFound, PoolNotFound
from traceability.exchange import epcis
from traceability.services import units


def events(document: dict[str, Any], kind: str | None = None) -> list[dict[str, Any]]:
    found = document["epcisBody"]["eventList"]
    return [e for e in found if kind is None or e["type"] == kind]


def export(session: Session, **scope: Any) -> dict[str, Any]:
    document = epcis.export_epcis(session, epcis.scope_of(session, **scope))
    return json.loads(epcis.dumps(document))  # as a reader of the file sees it


def test_a_lots_lineage_exports_as_epcis_that_gs1s_schema_accepts(built: tuple[Session, dict[str, Any]]) -> None:
    session, made = built
    document = export(session, lot_number="IVG-1")

    assert epcis_errors(document) == []
    assert document["type"] == "EPCISDocument" and document["schemaVersion"] == "2.0"
    pooling = {
        e["outputEPCList"][0]: e for e in events(document, "TransformationEvent") if e["bizStep"] == "assembling"
    }
    assert set(pooling) == {"urn:plasmatrace:pool:P-A", "urn:plasmatrace:pool:P-B"}
    assert pooling["urn:plasmatrace:pool:P-A"]["inputEPCList"] == sorted(f"urn:plasmatrace:din:{u}" for u in made["a"])
    assert pooling["urn:plasmatrace:pool:P-A"]["pt:donorCount"] == 1000
    created = {
        e["outputEPCList"][0]: e for e in events(document, "TransformationEvent") if e["bizStep"] != "assembling"
    }
    assert created["urn:plasmatrace:lot:FII-1"]["inputQuantityList"] == [
        {"epcClass": "urn:plasmatrace:pool:P-A", "quantity": 700, "uom": "LTR"},
        {"epcClass": "urn:plasmatrace:pool:P-B", "quantity": 650, "uom": "LTR"},
    ]
    assert created["urn:plasmatrace:lot:IVG-1"]["inputQuantityList"] == [
        {"epcClass": "urn:plasmatrace:lot:FII-1", "quantity": 40, "uom": "KGM"}
    ]


def test_steps_carry_their_parameters_and_shipments_are_shipping_events_to_the_consignee(
    built: tuple[Session, dict[str, Any]],
) -> None:
    session, made = built
    document = export(session, lot_number="IVG-1")

    steps = {e["pt:step"]: e for e in events(document, "ObjectEvent") if "pt:step" in e}
    assert set(steps) == {"P-A-S1", "P-B-S1", "FII-1-S1", "IVG-1-S1"}
    assert steps["FII-1-S1"]["pt:parameters"] == {"hours": "21", "pH": "4.0"}
    assert steps["FII-1-S1"]["pt:method"] == "low-ph" and steps["FII-1-S1"]["epcList"] == ["urn:plasmatrace:lot:FII-1"]
    assert steps["IVG-1-S1"]["pt:logReduction"] == {"enveloped": 5.0, "non-enveloped": 4.2}
    shipping = [e for e in events(document, "ObjectEvent") if e.get("bizStep") == "shipping"]
    assert sorted((e["destinationList"][0]["destination"], e["quantityList"][0]["quantity"]) for e in shipping) == [
        ("urn:plasmatrace:party:%E6%9D%B1%E4%BA%AC%E7%97%85%E9%99%A2", 25),
        ("urn:plasmatrace:party:Szpital%20%C5%81%C3%B3d%C5%BA", 40),
    ]
    tests = [e for e in events(document, "ObjectEvent") if "pt:marker" in e]
    assert len(tests) == 6 and {e["pt:result"] for e in tests} == {"nonreactive"}


def test_a_corrected_donation_is_declared_in_error_and_points_at_its_correction(session: Session) -> None:
    made = build_lineage(session)
    unit = made["a"][0]
    units.correct_donation(
        session, unit_number=unit, changes={"volume_ml": "655"}, reason="scale misread", actor=ACTOR, deviation="DEV-1"
    )
    document = export(session, pool_number="P-A")

    assert epcis_errors(document) == []
    versions = [e for e in events(document, "ObjectEvent") if e["epcList"] == [f"urn:plasmatrace:din:{unit}"]]
    assert [e["pt:recordVersion"] for e in versions] == [1, 2]
    first, second = versions
    assert first["errorDeclaration"]["reason"] == "incorrect_data"
    assert first["errorDeclaration"]["correctiveEventIDs"] == [second["eventID"]]
    assert first["errorDeclaration"]["pt:reason"] == "scale misread"
    assert second["pt:collection"]["volume_ml"] == 655 and "errorDeclaration" not in second
    assert first["pt:collection"]["volume_ml"] != 655


def test_a_pool_export_reaches_every_lot_made_from_it_and_since_keeps_only_later_records(
    built: tuple[Session, dict[str, Any]],
) -> None:
    session, made = built
    document = export(session, pool_number="P-B")
    outputs = {e["outputEPCList"][0] for e in events(document, "TransformationEvent")}
    assert outputs == {"urn:plasmatrace:pool:P-B", "urn:plasmatrace:lot:FII-1", "urn:plasmatrace:lot:IVG-1"}
    assert epcis_errors(document) == []

    everything = export(session, since=NOW - timedelta(days=3650))
    assert len(events(everything)) > len(events(document))
    assert epcis_errors(everything) == []
    assert events(export(session, since=NOW + timedelta(days=36500))) == []


def test_two_exports_of_the_same_database_are_the_same_bytes(built: tuple[Session, dict[str, Any]]) -> None:
    session, made = built
    scope = epcis.scope_of(session, lot_number="IVG-1")
    assert epcis.dumps(epcis.export_epcis(session, scope)) == epcis.dumps(epcis.export_epcis(session, scope))


def test_the_schema_check_is_live_a_broken_event_is_refused(built: tuple[Session, dict[str, Any]]) -> None:
    session, made = built
    document = export(session, lot_number="IVG-1")
    events(document)[0]["bizStep"] = "pooling"  # not a CBV step and not a URI
    events(document)[1]["eventTime"] = "yesterday"
    assert len(epcis_errors(document)) >= 2


def test_an_unknown_lot_or_pool_is_not_found(session: Session) -> None:
    with pytest.raises(LotNotFound):
        epcis.scope_of(session, lot_number="NOPE")
    with pytest.raises(PoolNotFound):
        epcis.scope_of(session, pool_number="NOPE")
