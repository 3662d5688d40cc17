"""JSON Schemas of the `--format json` outputs, generated from the read models (committed under schema/json/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from ..queries.lineage import CaseTrace, DonorTrace, LotTrace, PoolTrace, UnitTrace

OUTPUTS: dict[str, type] = {
    "trace-donor": DonorTrace,
    "trace-unit": UnitTrace,
    "trace-pool": PoolTrace,
    "trace-lot": LotTrace,
    "lookback-case": CaseTrace,
}


def schema_of(name: str) -> dict[str, Any]:
    schema = TypeAdapter(OUTPUTS[name]).json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"plasmatrace/{name}.json", **schema}


def render(name: str) -> str:
    return json.dumps(schema_of(name), indent=2, sort_keys=True) + "\n"


def validate(name: str, document: Any) -> None:
    """Raise pydantic.ValidationError when a JSON output does not have the documented shape."""
    TypeAdapter(OUTPUTS[name]).validate_python(document, strict=False)


def write_all(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in OUTPUTS:
        path = folder / f"{name}.json"
        path.write_text(render(name), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # python -m traceability.reports.json_schemas: regenerate schema/json/
    for path in write_all(Path(__file__).resolve().parents[2] / "schema" / "json"):
        print(path)
