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


class CaseTrigger(StrEnum):
    """What opened a look-back case (SPEC §12)."""

    REACTIVE_TEST = "reactive-test"
    PDI = "pdi"  # post-donation information
    RECIPIENT_INFECTION = "recipient-infection"
    OTHER = "other"


class TaskKind(StrEnum):
    """The duties of a look-back case (21 CFR 610.46/610.47; SPEC §12)."""

    REVIEW_QUARANTINE = "review-quarantine"  # review the records, quarantine the units in the window
    QUARANTINE_REQUEST = "quarantine-request"  # ask one consignee of one implicated lot to quarantine it
    SUPPLEMENTAL_RESULTS = "supplemental-results"  # send one consignee the supplemental test results
    ASSESSMENT = "assessment"  # decide what to do with one implicated lot


class TaskState(StrEnum):
    OPEN = "open"
    DONE = "done"
    WAIVED = "waived"


class Decision(StrEnum):
    """An implicated lot's assessment."""

    NO_ACTION = "no-action"
    WITHDRAW = "withdraw"
    RECALL = "recall"


class SignatureMeaning(StrEnum):
    """What a signature means (21 CFR 11.50(a)(3))."""

    APPROVED = "approved"
    REVIEWED = "reviewed"
    VERIFIED = "verified"
    RESPONSIBLE = "responsible"
