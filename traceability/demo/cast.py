"""Who and what the demo site is made of: its establishments, consignees and people."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from ..identity import Identity, Role
from ..models import SignatureMeaning
from ..services import signatures

CENTRES = [("C-NORTH", "Northgate Plasma Centre", "W1234"), ("C-SOUTH", "Southbank Plasma Centre", "W5678")]
"""(code, name, ISBT 128 facility number) of each collection centre."""
ZONES = {"C-NORTH": "Europe/Vienna", "C-SOUTH": "America/New_York"}
"""Each centre counts its own local days (deferrals, look-back and qualification months)."""
LAB, PLANT = "LAB-CENTRAL", "FRAC-01"
CONSIGNEES = [
    ("H-LEEDS-SM", "St Mary's Hospital", "Greenhill Road, Leeds LS12 3QE", "GB"),
    ("H-GLAS-RI", "Royal Infirmary", "84 Castle Street, Glasgow G4 0SF", "GB"),
    ("H-CARD-UH", "University Hospital of Wales", "Heath Park Way, Cardiff CF14 4XW", "GB"),
]


@dataclass(frozen=True)
class DemoUser:
    login: str
    full_name: str
    role: Role

    @property
    def password(self) -> str:
        return f"{self.login}-signs"  # a demo's signing password, printed by the demo itself

    def identity(self) -> Identity:
        return Identity(self.login, self.full_name, frozenset({self.role}), True, False)

    def sign(self, session: Session, kind: str, key: str) -> None:
        """Sign a record as approved, with the demo's password."""
        signatures.sign(
            session,
            signer=self.identity(),
            password=self.password,
            meaning=SignatureMeaning.APPROVED,
            entity_type=kind,
            entity_key=key,
        )


RECORDER = DemoUser("rita.recorder", "Rita Recorder", Role.RECORDER)
APPROVER = DemoUser("anna.approver", "Anna Approver (QA)", Role.APPROVER)
INVESTIGATOR = DemoUser("ivo.investigator", "Ivo Investigator", Role.INVESTIGATOR)
AUDITOR = DemoUser("aude.auditor", "Aude Auditor", Role.AUDITOR)
DEMO_USERS = (RECORDER, APPROVER, INVESTIGATOR, AUDITOR)
