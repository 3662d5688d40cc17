"""Every table of plasmatrace and its enums.

Each table has a surrogate ``id`` and a unique business key; each row records who created it and when. Times are
UTC (``UTCDateTime``), volumes integer millilitres. Enums are stored as strings with CHECK constraints so that the
migrations look the same on SQLite and PostgreSQL. Regulated rows are never deleted: corrections add versions.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import Enum
from enum import StrEnum as _StdStrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from .identifiers import UnitScheme

SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back time-zone aware (SQLite keeps no zone of its own)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"timestamp {value.isoformat()} has no time zone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


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


def enum_column(enum: type[Enum], *, nullable: bool = False, default: Any = None, index: bool = False) -> Any:
    """A string column limited to the enum's values by a named CHECK constraint."""
    sa_type = sa.Enum(
        enum,
        native_enum=False,
        create_constraint=True,
        length=max(len(member.value) for member in enum) + 4,
        values_callable=lambda members: [member.value for member in members],
        name=enum.__name__.lower(),
        validate_strings=True,
    )
    return Field(default=default, sa_type=sa_type, nullable=nullable, index=index)


def utc_column(*, nullable: bool = False, index: bool = False, default_factory: Any = None) -> Any:
    if default_factory is not None:
        return Field(default_factory=default_factory, sa_type=UTCDateTime, nullable=nullable, index=index)
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


class Recorded(SQLModel):
    """Who created a row, and when."""

    created_at: datetime = utc_column(default_factory=utcnow)
    created_by: str = Field(max_length=100)


class AuditEvent(SQLModel, table=True):
    """One entry of the append-only, hash-chained audit trail."""

    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    seq: int = Field(unique=True)
    occurred_at: datetime = utc_column(default_factory=utcnow)
    actor: str = Field(max_length=100)
    action: str = Field(max_length=60, index=True)
    entity_type: str = Field(max_length=40)
    entity_key: str = Field(max_length=200)
    old_values: str | None = Field(default=None, sa_type=sa.Text)
    new_values: str | None = Field(default=None, sa_type=sa.Text)
    reason: str | None = Field(default=None, sa_type=sa.Text)
    prev_hash: str = Field(max_length=64, unique=True)
    hash: str = Field(max_length=64, unique=True)

    __table_args__ = (sa.Index("ix_audit_event_entity", "entity_type", "entity_key"),)


class Establishment(Recorded, table=True):
    """A collection centre, testing laboratory or fractionation site."""

    __tablename__ = "establishment"

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=40, unique=True, index=True)
    name: str = Field(max_length=200)
    kind: EstablishmentKind = enum_column(EstablishmentKind)
    timezone: str = Field(default="UTC", max_length=64, sa_column_kwargs={"server_default": "UTC"})
    """IANA time zone: the rules count this establishment's local days (deferrals, look-back and qualification)."""


class Donor(Recorded, table=True):
    """A donor, known only by a pseudonymous code."""

    __tablename__ = "donor"

    id: int | None = Field(default=None, primary_key=True)
    donor_code: str = Field(max_length=40, unique=True, index=True)
    establishment_id: int = Field(foreign_key="establishment.id", index=True)
    registered_on: date | None = None
    import_event_id: int | None = Field(default=None)  # the import.* audit event; see IMPORT_EVENT_POINTERS


class Deferral(Recorded, table=True):
    """A period in which a donor may not donate; no end date means permanent."""

    __tablename__ = "deferral"

    id: int | None = Field(default=None, primary_key=True)
    donor_id: int = Field(foreign_key="donor.id", index=True)
    sequence: int
    reason: str = Field(sa_type=sa.Text)
    source: DeferralSource = enum_column(DeferralSource, default=DeferralSource.MANUAL)
    starts_on: date
    ends_on: date | None = None  # first day the donor may donate again; None = permanent
    lifted_on: date | None = None
    lift_reason: str | None = Field(default=None, sa_type=sa.Text)
    marker: Marker | None = enum_column(Marker, nullable=True)  # the marker whose nonreactive retest ends it

    __table_args__ = (
        sa.UniqueConstraint("donor_id", "sequence"),
        sa.CheckConstraint("ends_on IS NULL OR ends_on > starts_on", name="ends_after_start"),
    )


class Donation(Recorded, table=True):
    """One plasma collection in one container, by unit number (the canonical DIN for ISBT 128)."""

    __tablename__ = "donation"

    id: int | None = Field(default=None, primary_key=True)
    unit_number: str = Field(max_length=40, unique=True, index=True)
    scheme: UnitScheme = enum_column(UnitScheme, default=UnitScheme.ISBT128)
    flag: str | None = Field(default=None, max_length=2)
    donor_id: int = Field(foreign_key="donor.id", index=True)
    establishment_id: int | None = Field(default=None, foreign_key="establishment.id")
    collected_at: datetime = utc_column(index=True)
    frozen_at: datetime | None = utc_column(nullable=True)
    volume_ml: int
    plasma_kind: PlasmaKind = enum_column(PlasmaKind, default=PlasmaKind.SOURCE)
    status: UnitStatus = enum_column(UnitStatus, default=UnitStatus.IN_INVENTORY, index=True)
    status_reason: str | None = Field(default=None, sa_type=sa.Text)
    version: int = 1
    import_event_id: int | None = Field(default=None)  # the import.* audit event; see IMPORT_EVENT_POINTERS

    __table_args__ = (
        sa.CheckConstraint("volume_ml >= 0", name="volume_not_negative"),
        sa.CheckConstraint("frozen_at IS NULL OR frozen_at >= collected_at", name="frozen_after_collection"),
    )


class TestResult(Recorded, table=True):
    """A screening result for one marker on one unit; a repeat or correction is a new version."""

    __tablename__ = "test_result"
    __test__ = False  # not a pytest test class

    id: int | None = Field(default=None, primary_key=True)
    donation_id: int = Field(foreign_key="donation.id")
    marker: Marker = enum_column(Marker)
    version: int = 1
    result: ResultValue = enum_column(ResultValue)
    value: float | None = None
    value_unit: str | None = Field(default=None, max_length=20)
    method: TestMethod | None = enum_column(TestMethod, nullable=True)
    lab_id: int | None = Field(default=None, foreign_key="establishment.id")
    tested_at: datetime = utc_column()
    reason: str | None = Field(default=None, sa_type=sa.Text)
    import_event_id: int | None = Field(default=None)  # the import.* audit event; see IMPORT_EVENT_POINTERS

    __table_args__ = (sa.UniqueConstraint("donation_id", "marker", "version"),)


class Pool(Recorded, table=True):
    """A fractionation pool for one product."""

    __tablename__ = "pool"

    id: int | None = Field(default=None, primary_key=True)
    pool_number: str = Field(max_length=40, unique=True, index=True)
    product: str = Field(max_length=40)
    status: PoolStatus = enum_column(PoolStatus, default=PoolStatus.OPEN)
    closed_at: datetime | None = utc_column(nullable=True)
    released_at: datetime | None = utc_column(nullable=True)
    status_reason: str | None = Field(default=None, sa_type=sa.Text)
    drawn_ml: int = 0  # taken by lots

    __table_args__ = (sa.CheckConstraint("drawn_ml >= 0", name="drawn_not_negative"),)


class PoolMember(Recorded, table=True):
    """A unit in a pool; the unique donation_id is what keeps a unit in one pool only."""

    __tablename__ = "pool_member"

    id: int | None = Field(default=None, primary_key=True)
    pool_id: int = Field(foreign_key="pool.id", index=True)
    donation_id: int = Field(foreign_key="donation.id", unique=True)
    import_event_id: int | None = Field(default=None)  # the import.* audit event; see IMPORT_EVENT_POINTERS


class PoolTest(Recorded, table=True):
    """A test on a manufacturing pool sample; a repeat is a new version."""

    __tablename__ = "pool_test"

    id: int | None = Field(default=None, primary_key=True)
    pool_id: int = Field(foreign_key="pool.id")
    marker: Marker = enum_column(Marker)
    version: int = 1
    result: ResultValue = enum_column(ResultValue)
    value: float | None = None
    value_unit: str | None = Field(default=None, max_length=20)
    tested_at: datetime = utc_column()
    reason: str | None = Field(default=None, sa_type=sa.Text)

    __table_args__ = (sa.UniqueConstraint("pool_id", "marker", "version"),)


class Lot(Recorded, table=True):
    """An intermediate (paste, fraction) or final product lot."""

    __tablename__ = "lot"

    id: int | None = Field(default=None, primary_key=True)
    lot_number: str = Field(max_length=40, unique=True, index=True)
    product: str = Field(max_length=40)
    kind: LotKind = enum_column(LotKind, default=LotKind.FINAL)
    status: LotStatus = enum_column(LotStatus, default=LotStatus.PENDING)
    released_at: datetime | None = utc_column(nullable=True)
    status_reason: str | None = Field(default=None, sa_type=sa.Text)
    quantity: int | None = None
    unit: LotUnit | None = enum_column(LotUnit, nullable=True)
    expires_on: date | None = None
    drawn: int = 0  # taken by later lots, in this lot's unit
    shipped: int = 0

    __table_args__ = (
        sa.CheckConstraint("quantity IS NULL OR quantity > 0", name="quantity_positive"),
        sa.CheckConstraint("(quantity IS NULL) = (unit IS NULL)", name="quantity_has_unit"),
        sa.CheckConstraint("drawn >= 0 AND shipped >= 0", name="balance_not_negative"),
        sa.CheckConstraint("quantity IS NULL OR drawn + shipped <= quantity", name="balance_within_quantity"),
    )


def quantity_text(quantity: int | None, unit: str | None) -> str:
    """A drawn quantity as people read it: a pool's millilitres in litres ("700 L"), a lot's in its unit ("40 kg")."""
    if quantity is None:
        return ""
    if unit == "mL":
        return f"{quantity / 1000:,.3f}".rstrip("0").rstrip(".") + " L"
    return f"{quantity:,}" + (f" {unit}" if unit else "")


class LotInput(Recorded, table=True):
    """An edge of the lineage graph: a pool or an earlier lot that went into a lot, with its quantity."""

    __tablename__ = "lot_input"

    id: int | None = Field(default=None, primary_key=True)
    lot_id: int = Field(foreign_key="lot.id", index=True)
    input_pool_id: int | None = Field(default=None, foreign_key="pool.id", index=True)
    input_lot_id: int | None = Field(default=None, foreign_key="lot.id", index=True)
    quantity: int | None = None
    quantity_unit: str | None = Field(default=None, max_length=10)  # mL for a pool; the input lot's unit

    __table_args__ = (
        sa.CheckConstraint("(input_pool_id IS NULL) <> (input_lot_id IS NULL)", name="one_input"),
        sa.CheckConstraint("input_lot_id IS NULL OR input_lot_id <> lot_id", name="not_itself"),
        sa.CheckConstraint("quantity IS NULL OR quantity > 0", name="quantity_positive"),
        sa.UniqueConstraint("lot_id", "input_pool_id"),
        sa.UniqueConstraint("lot_id", "input_lot_id"),
    )


class Step(Recorded, table=True):
    """A viral inactivation or removal step applied to a pool or a lot, with its validated log reductions."""

    __tablename__ = "step"

    id: int | None = Field(default=None, primary_key=True)
    step_key: str = Field(max_length=60, unique=True, index=True)
    pool_id: int | None = Field(default=None, foreign_key="pool.id", index=True)
    lot_id: int | None = Field(default=None, foreign_key="lot.id", index=True)
    method: StepMethod = enum_column(StepMethod)
    started_at: datetime = utc_column()
    ended_at: datetime = utc_column()
    parameters: dict[str, str] = Field(default_factory=dict, sa_type=sa.JSON)
    lrv_enveloped: float | None = None
    lrv_non_enveloped: float | None = None
    outcome: StepOutcome = enum_column(StepOutcome, default=StepOutcome.COMPLETED)
    operator: str = Field(max_length=100)
    deviation_closed_at: datetime | None = utc_column(nullable=True)
    deviation_closure: str | None = Field(default=None, sa_type=sa.Text)

    __table_args__ = (
        sa.CheckConstraint("(pool_id IS NULL) <> (lot_id IS NULL)", name="one_target"),
        sa.CheckConstraint("ended_at >= started_at", name="ends_after_start"),
        sa.CheckConstraint("lrv_enveloped IS NULL OR lrv_enveloped >= 0", name="lrv_env_not_negative"),
        sa.CheckConstraint("lrv_non_enveloped IS NULL OR lrv_non_enveloped >= 0", name="lrv_nonenv_not_negative"),
    )


class Consignee(Recorded, table=True):
    """A hospital, distributor or manufacturer a lot is shipped to, with its address (21 CFR 606.165)."""

    __tablename__ = "consignee"

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(max_length=40, unique=True, index=True)
    name: str = Field(max_length=200)
    address: str = Field(max_length=500)
    country: str | None = Field(default=None, max_length=2)
    import_event_id: int | None = Field(default=None)  # the import.* audit event; see IMPORT_EVENT_POINTERS


class Shipment(Recorded, table=True):
    """A quantity of a lot sent to a consignee on a date."""

    __tablename__ = "shipment"

    id: int | None = Field(default=None, primary_key=True)
    shipment_number: str = Field(max_length=60, unique=True, index=True)
    lot_id: int = Field(foreign_key="lot.id", index=True)
    consignee_id: int = Field(foreign_key="consignee.id", index=True)
    consignee: str = Field(max_length=200)  # the consignee's name as shipped
    quantity: int
    shipped_on: date

    __table_args__ = (sa.CheckConstraint("quantity > 0", name="quantity_positive"),)


class LookbackCase(Recorded, table=True):
    """An investigation opened from post-donation information about a donor."""

    __tablename__ = "lookback_case"

    id: int | None = Field(default=None, primary_key=True)
    case_number: str = Field(max_length=40, unique=True, index=True)
    donor_id: int = Field(foreign_key="donor.id", index=True)
    reason: str = Field(sa_type=sa.Text)
    status: CaseStatus = enum_column(CaseStatus, default=CaseStatus.OPEN)
    window_start: datetime | None = utc_column(nullable=True)
    closed_at: datetime | None = utc_column(nullable=True)
    closure: str | None = Field(default=None, sa_type=sa.Text)
    trigger: CaseTrigger = enum_column(CaseTrigger, default=CaseTrigger.OTHER)
    received_on: date | None = None
    """The local day the reactive test was done or the information came in: the tasks' due dates count from it."""
    timezone: str = Field(default="UTC", max_length=64, sa_column_kwargs={"server_default": "UTC"})
    closed_by: str | None = Field(default=None, max_length=100)

    __table_args__ = (
        # One open case per donor, kept by the database: two concurrent `lookback open` cannot both succeed.
        sa.Index(
            "uq_lookback_case_open_donor",
            "donor_id",
            unique=True,
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        ),
    )


class CaseFinding(Recorded, table=True):
    """A unit implicated by a look-back case, with what was done about it."""

    __tablename__ = "case_finding"

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="lookback_case.id", index=True)
    donation_id: int = Field(foreign_key="donation.id", index=True)
    pool_id: int | None = Field(default=None, foreign_key="pool.id")
    action: str = Field(max_length=40)

    __table_args__ = (sa.UniqueConstraint("case_id", "donation_id"),)


class CaseTask(Recorded, table=True):
    """One duty of a look-back case, with its due date (calendar days, the case's local day) and how it ended."""

    __tablename__ = "case_task"

    id: int | None = Field(default=None, primary_key=True)
    case_id: int = Field(foreign_key="lookback_case.id", index=True)
    seq: int  # the task's number within its case
    kind: TaskKind = enum_column(TaskKind)
    lot_id: int | None = Field(default=None, foreign_key="lot.id", index=True)
    consignee_id: int | None = Field(default=None, foreign_key="consignee.id")
    due_on: date | None = None
    state: TaskState = enum_column(TaskState, default=TaskState.OPEN)
    decision: Decision | None = enum_column(Decision, nullable=True)
    note: str | None = Field(default=None, sa_type=sa.Text)
    done_at: datetime | None = utc_column(nullable=True)
    done_by: str | None = Field(default=None, max_length=100)

    __table_args__ = (sa.UniqueConstraint("case_id", "seq"),)


class LotHold(Recorded, table=True):
    """A hold on a lot: no release, no shipment while it stands. Placed by a look-back case on every lot downstream
    of its pooled units (``case_id``) or by an approver by hand; lifted by a no-action assessment or an approver."""

    __tablename__ = "lot_hold"

    id: int | None = Field(default=None, primary_key=True)
    lot_id: int = Field(foreign_key="lot.id", index=True)
    case_id: int | None = Field(default=None, foreign_key="lookback_case.id", index=True)
    reason: str = Field(sa_type=sa.Text)
    lifted_at: datetime | None = utc_column(nullable=True)
    lifted_by: str | None = Field(default=None, max_length=100)
    lift_reason: str | None = Field(default=None, sa_type=sa.Text)


class SignatureMeaning(StrEnum):
    """What a signature means (21 CFR 11.50(a)(3))."""

    APPROVED = "approved"
    REVIEWED = "reviewed"
    VERIFIED = "verified"
    RESPONSIBLE = "responsible"


class AppUser(Recorded, table=True):
    """A person who may use plasmatrace: login, printed name and roles (on PostgreSQL the login is a database role)."""

    __tablename__ = "app_user"

    id: int | None = Field(default=None, primary_key=True)
    login: str = Field(max_length=100, unique=True, index=True)
    full_name: str = Field(max_length=200)
    roles: str = Field(max_length=200)  # space-separated role names, as granted
    password_hash: str | None = Field(default=None, max_length=200)  # SQLite only: Argon2id signing password
    disabled_at: datetime | None = utc_column(nullable=True)
    disabled_by: str | None = Field(default=None, max_length=100)


class Signature(Recorded, table=True):
    """An electronic signature: who signed which record, meaning what, when, over which content."""

    __tablename__ = "signature"

    id: int | None = Field(default=None, primary_key=True)
    audit_event_id: int = Field(foreign_key="audit_event.id", unique=True)
    entity_type: str = Field(max_length=40)
    entity_key: str = Field(max_length=200)
    login: str = Field(max_length=100, index=True)
    full_name: str = Field(max_length=200)
    meaning: SignatureMeaning = enum_column(SignatureMeaning)
    signed_at: datetime = utc_column()
    content_sha256: str = Field(max_length=64)

    __table_args__ = (sa.Index("ix_signature_entity", "entity_type", "entity_key"),)


class CorrectionDeviation(Recorded, table=True):
    """A correction to a unit in a closed or released pool, under a named deviation (shown on the pool and lots)."""

    __tablename__ = "correction_deviation"

    id: int | None = Field(default=None, primary_key=True)
    reference: str = Field(max_length=40, index=True)
    pool_id: int = Field(foreign_key="pool.id", index=True)
    donation_id: int = Field(foreign_key="donation.id", index=True)
    donation_version: int
    changes: str = Field(sa_type=sa.Text)
    reason: str = Field(sa_type=sa.Text)

    __table_args__ = (sa.UniqueConstraint("donation_id", "donation_version"),)


IMPORT_EVENT_POINTERS: dict[str, str] = {
    "donor": "import.donors",
    "donation": "import.donations",
    "test_result": "import.results",
    "pool_member": "import.pool-members",
    "consignee": "import.consignees",
}
"""Tables whose imported rows name their import's audit event (``import_event_id``), and that event's action.

The pointer has no foreign-key constraint, on purpose: the database would check it row by row on every insert
(on PostgreSQL a locking lookup per row, half the cost of loading a results file again), while the events it
points at can neither change nor go (audit_event is append-only, enforced by triggers) and the import writes the
event in the same transaction as its rows. ``audit verify`` checks, set-based, that every pointer names an
import event of the right kind.
"""
