"""The enums of the tables, stored as their values."""

from __future__ import annotations

from enum import StrEnum as _StdStrEnum


class StrEnum(_StdStrEnum):
    """Enums stored and printed as their value."""


class EstablishmentKind(StrEnum):
    COLLECTION = "collection"
    TESTING = "testing"
    FRACTIONATION = "fractionation"


class PlasmaKind(StrEnum):
    SOURCE = "source"
    RECOVERED = "recovered"


class UnitStatus(StrEnum):
    IN_INVENTORY = "in-inventory"
    POOLED = "pooled"
    INTERDICTED = "interdicted"
    DISCARDED = "discarded"
    REJECTED = "rejected"


class Marker(StrEnum):
    HBSAG = "hbsag"
    ANTI_HIV = "anti-hiv"
    ANTI_HCV = "anti-hcv"
    HIV_RNA = "hiv-rna"
    HCV_RNA = "hcv-rna"
    HBV_DNA = "hbv-dna"
    HAV_RNA = "hav-rna"
    B19_DNA = "b19-dna"
    SYPHILIS = "syphilis"


class ResultValue(StrEnum):
    NONREACTIVE = "nonreactive"
    REACTIVE = "reactive"
    INVALID = "invalid"


class TestMethod(StrEnum):
    __test__ = False  # not a pytest test class
    SEROLOGY = "serology"
    NAT = "nat"


class DeferralSource(StrEnum):
    MANUAL = "manual"
    REACTIVE_RESULT = "reactive-result"
    LOOKBACK = "lookback"
    UNTIL_NONREACTIVE = "until-nonreactive"  # a reactive result on a marker such as syphilis, until a later NR test


class PoolStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    RELEASED = "released"
    REJECTED = "rejected"
    QUARANTINED = "quarantined"


class StepMethod(StrEnum):
    SOLVENT_DETERGENT = "solvent-detergent"
    PASTEURIZATION = "pasteurization"
    LOW_PH = "low-ph"
    CAPRYLATE = "caprylate"
    NANOFILTRATION = "nanofiltration"
    DRY_HEAT = "dry-heat"


class StepOutcome(StrEnum):
    COMPLETED = "completed"
    DEVIATION = "deviation"
    FAILED = "failed"


class LotKind(StrEnum):
    INTERMEDIATE = "intermediate"
    FINAL = "final"


class LotStatus(StrEnum):
    PENDING = "pending"
    RELEASED = "released"
    REJECTED = "rejected"
    QUARANTINED = "quarantined"


class LotUnit(StrEnum):
    """What a lot's quantity counts: containers, mass or volume."""

    VIALS = "vials"
    BOTTLES = "bottles"
    G = "g"
    KG = "kg"
    L = "L"


class CaseStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class SignatureMeaning(StrEnum):
    """What a signature means (21 CFR 11.50(a)(3))."""

    APPROVED = "approved"
    REVIEWED = "reviewed"
    VERIFIED = "verified"
    RESPONSIBLE = "responsible"
