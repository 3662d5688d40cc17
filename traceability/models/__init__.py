"""Every table of plasmatrace and its enums.

Each table has a surrogate ``id`` and a unique business key; each row records who created it and when. Times are
UTC (``UTCDateTime``), volumes integer millilitres. Enums are stored as strings with CHECK constraints so that the
migrations look the same on SQLite and PostgreSQL. Regulated rows are never deleted: corrections add versions.

One module per part of the business; every name is importable from ``traceability.models``.
"""

from .columns import (
    Recorded,
    UTCDateTime,
    enum_column,
    saved_id,
    utc_column,
    utcnow,
)
from .donations import (
    Deferral,
    Donation,
    Donor,
    Establishment,
    TestResult,
)
from .enums import (
    CaseStatus,
    DeferralSource,
    EstablishmentKind,
    LotKind,
    LotStatus,
    LotUnit,
    Marker,
    PlasmaKind,
    PoolStatus,
    ResultValue,
    SignatureMeaning,
    StepMethod,
    StepOutcome,
    StrEnum,
    TestMethod,
    UnitStatus,
)
from .lookback import (
    CaseFinding,
    LookbackCase,
)
from .manufacturing import (
    Consignee,
    Lot,
    LotInput,
    Pool,
    PoolMember,
    PoolTest,
    Shipment,
    Step,
    quantity_text,
)
from .recalls import (
    DrillSubject,
    Recall,
    RecallClass,
    RecallConsignee,
    RecallDrill,
    RecallStatus,
)
from .trail import (
    IMPORT_EVENT_POINTERS,
    AppUser,
    AuditEvent,
    CorrectionDeviation,
    Signature,
)

__all__ = [
    "DrillSubject",
    "Recall",
    "RecallClass",
    "RecallConsignee",
    "RecallDrill",
    "RecallStatus",
    "AppUser",
    "AuditEvent",
    "CaseFinding",
    "CaseStatus",
    "Consignee",
    "CorrectionDeviation",
    "Deferral",
    "DeferralSource",
    "Donation",
    "Donor",
    "Establishment",
    "EstablishmentKind",
    "IMPORT_EVENT_POINTERS",
    "LookbackCase",
    "Lot",
    "LotInput",
    "LotKind",
    "LotStatus",
    "LotUnit",
    "Marker",
    "PlasmaKind",
    "Pool",
    "PoolMember",
    "PoolStatus",
    "PoolTest",
    "Recorded",
    "ResultValue",
    "Shipment",
    "Signature",
    "SignatureMeaning",
    "Step",
    "StepMethod",
    "StepOutcome",
    "StrEnum",
    "TestMethod",
    "TestResult",
    "UTCDateTime",
    "UnitStatus",
    "enum_column",
    "saved_id",
    "quantity_text",
    "utc_column",
    "utcnow",
]
