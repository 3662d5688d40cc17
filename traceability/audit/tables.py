"""The declarations of the regulated tables: one ``Regulated`` per table (its business key, the SELECT that reads
its rows, and the actions that create, change or delete them), and the tables the record proof leaves aside."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Date, DateTime, Select, Table, type_coerce
from sqlalchemy.types import NullType
from sqlmodel import SQLModel

from ..db import dialect
from ..models import UTCDateTime
from .selects import (
    cases,
    consignees,
    corrections,
    deferrals,
    donations,
    donors,
    establishments,
    findings,
    holds,
    lot_inputs,
    lots,
    members,
    pool_tests,
    pools,
    recall_consignees,
    recalls,
    results,
    shipments,
    steps,
    tasks,
    users,
)


def _as_stored(column: Any) -> Any:
    """Times and dates read as the canonical text the proof compares (SQLite stores them so; PostgreSQL renders
    them on the server), so that no engine hands back objects to convert row by row."""
    kind = column.type
    if isinstance(kind, UTCDateTime | DateTime):
        return dialect.utc_time_text(column)
    if isinstance(kind, Date):
        return dialect.date_text(column)
    return column


@dataclass(frozen=True)
class Regulated:
    """One regulated table: how to read its rows in business terms, and which actions write them.

    ``source`` returns a SELECT whose first two columns are the row's surrogate id and its import event (or NULL),
    then the business key's columns (``key`` names them), then every other field the trail keeps."""

    table: str
    key: tuple[str, ...]
    source: Callable[[], Select[Any]]
    creates: tuple[str, ...] = ()
    changes: tuple[str, ...] = ()
    deletes: tuple[str, ...] = ()
    imported: bool = False

    @property
    def actions(self) -> frozenset[str]:
        return frozenset(self.creates + self.changes + self.deletes)

    def select(self) -> Select[Any]:
        """The declaration's SELECT with every column read as the driver returns it (no type processing)."""
        query = self.source()
        coerced = query.with_only_columns(
            *(
                type_coerce(_as_stored(c), NullType()).label(c.key or f"c{i}")
                for i, c in enumerate(query.selected_columns)
            ),
            maintain_column_froms=True,
        )
        return cast("Select[Any]", coerced)

    def columns(self) -> list[str]:
        return [c.key or "" for c in self.source().selected_columns][2:]

    @property
    def model_table(self) -> Table:
        return SQLModel.metadata.tables[self.table]


REGULATED: tuple[Regulated, ...] = (
    Regulated("establishment", ("code",), establishments, creates=("establishment.added",)),
    Regulated("donor", ("donor_code",), donors, creates=("donor.added",), imported=True),
    Regulated(
        "deferral",
        ("donor", "sequence"),
        deferrals,
        creates=("donor.deferred",),
        changes=("donor.deferral_lifted",),
    ),
    Regulated(
        "donation",
        ("unit_number",),
        donations,
        creates=("donation.added",),
        changes=(
            "donation.corrected",
            "donation.discarded",
            "donation.rejected",
            "donation.interdicted",
            "pool.units_added",
            "pool.units_removed",
        ),
        imported=True,
    ),
    Regulated("test_result", ("unit", "marker", "version"), results, creates=("result.added",), imported=True),
    Regulated(
        "pool",
        ("pool_number",),
        pools,
        creates=("pool.created",),
        changes=("pool.closed", "pool.quarantined", "pool.released", "lot.created"),
    ),
    Regulated(
        "pool_member",
        ("unit",),
        members,
        creates=("pool.units_added",),
        deletes=("pool.units_removed",),
        imported=True,
    ),
    Regulated("pool_test", ("pool", "marker", "version"), pool_tests, creates=("pool.tested",)),
    Regulated(
        "lot",
        ("lot_number",),
        lots,
        creates=("lot.created",),
        changes=(
            "lot.created",
            "lot.quantity-recorded",
            "lot.released",
            "lot.quarantined",
            "lot.hold_lifted",
            "lot.shipped",
        ),
    ),
    Regulated("lot_input", ("lot", "input_pool", "input_lot"), lot_inputs, creates=("lot.created",)),
    Regulated("step", ("step_key",), steps, creates=("step.added",), changes=("step.deviation_closed",)),
    Regulated("consignee", ("code",), consignees, creates=("consignee.added",), imported=True),
    Regulated("shipment", ("shipment_number",), shipments, creates=("lot.shipped",)),
    Regulated(
        "lookback_case",
        ("case_number",),
        cases,
        creates=("lookback.opened",),
        changes=("lookback.joined", "lookback.closed"),
    ),
    Regulated("case_finding", ("case", "unit"), findings, creates=("lookback.opened", "lookback.joined")),
    Regulated(
        "case_task",
        ("case", "seq"),
        tasks,
        creates=("lookback.task_added",),
        changes=("lookback.task_done", "lookback.task_waived"),
    ),
    Regulated("lot_hold", ("lot", "hold"), holds, creates=("lot.held",), changes=("lot.unheld",)),
    Regulated("recall", ("recall_number",), recalls, creates=("recall.opened",), changes=("recall.closed",)),
    Regulated(
        "recall_consignee",
        ("recall", "consignee"),
        recall_consignees,
        creates=("recall.consignee_listed",),
        changes=("recall.notified", "recall.acknowledged"),
    ),
    Regulated("app_user", ("login",), users, creates=("user.added",), changes=("user.disabled",)),
    Regulated("correction_deviation", ("unit", "donation_version"), corrections, creates=("donation.corrected",)),
)
"""Every regulated table, one declaration each; a new table is one more entry here (tests/integrity/test_record_proof
fails for a table in the metadata that is neither here nor in NOT_REGULATED)."""

NOT_REGULATED: dict[str, str] = {
    "audit_event": "the trail itself: its hash chain proves it (audit verify checks the chain first)",
    "recall_drill": (
        "a kept recall drill changes no regulated record (SPEC §12): it is kept outside the chain, with the audit "
        "checkpoint it read and the SHA-256 of its answer"
    ),
    "signature": (
        "each row restates its own signature.applied event (login, printed name, meaning, time, content hash), "
        "which the chain proves; it is written after that event because it names the event's id"
    ),
}
"""Tables in the metadata that the record proof does not replay, and why."""

BY_TABLE: dict[str, Regulated] = {spec.table: spec for spec in REGULATED}
