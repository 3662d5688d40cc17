"""The catalogue of audit events: one class per action, naming its entity type and the fields it records.

``audit.record`` refuses an action that is not here and an entity type that does not match its class. Besides the
fields named here, an event that wrote rows of regulated tables keeps their complete state under ``records`` (see
``audit.recording``). README lists every action (tests/test_docs.py checks that the list matches).
"""

from __future__ import annotations

from typing import ClassVar

from ..errors import InvalidInput

_CATALOGUE: dict[str, type[AuditAction]] = {}


class AuditAction:
    """One kind of audit event. Subclasses set ``action``, ``entity_types`` and ``fields``."""

    action: ClassVar[str]
    entity_types: ClassVar[tuple[str, ...]]
    fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        if cls.action in _CATALOGUE:
            raise TypeError(f"audit action {cls.action} is declared twice")
        _CATALOGUE[cls.action] = cls


# --- sites, donors, deferrals ---
class EstablishmentAdded(AuditAction):
    action, entity_types, fields = "establishment.added", ("establishment",), ("name", "kind", "timezone")


class DonorAdded(AuditAction):
    action, entity_types, fields = "donor.added", ("donor",), ("establishment", "registered_on")


class DonorDeferred(AuditAction):
    action, entity_types = "donor.deferred", ("donor",)
    fields = ("deferral", "starts_on", "ends_on", "source", "marker")


class DeferralLifted(AuditAction):
    action, entity_types, fields = "donor.deferral_lifted", ("donor",), ("deferral", "lifted_on")


# --- donations and results ---
class DonationAdded(AuditAction):
    action, entity_types = "donation.added", ("donation",)
    fields = ("donor", "collected_at", "volume_ml", "scheme", "plasma_kind")


class DonationCorrected(AuditAction):
    action, entity_types = "donation.corrected", ("donation",)
    fields = ("collected_at", "frozen_at", "volume_ml", "plasma_kind", "establishment_id", "version", "deviation")


class DonationDiscarded(AuditAction):
    action, entity_types, fields = "donation.discarded", ("donation",), ("status",)


class DonationRejected(AuditAction):
    action, entity_types, fields = "donation.rejected", ("donation",), ("status",)


class DonationInterdicted(AuditAction):
    action, entity_types, fields = "donation.interdicted", ("donation",), ("status", "window_starts_on")


class ResultAdded(AuditAction):
    action, entity_types = "result.added", ("donation",)
    fields = ("marker", "version", "result", "value", "unit", "tested_at")


# --- pools ---
class PoolCreated(AuditAction):
    action, entity_types, fields = "pool.created", ("pool",), ("product", "status", "min_donors")


class PoolUnitsAdded(AuditAction):
    action, entity_types, fields = "pool.units_added", ("pool",), ("count", "units")


class PoolUnitsRemoved(AuditAction):
    action, entity_types, fields = "pool.units_removed", ("pool",), ("units", "count", "rejected", "interdicted")


class PoolClosed(AuditAction):
    action, entity_types, fields = "pool.closed", ("pool",), ("status", "donors", "units", "volume_ml")


class PoolTested(AuditAction):
    action, entity_types = "pool.tested", ("pool",)
    fields = ("marker", "version", "result", "value", "unit", "tested_at")


class PoolQuarantined(AuditAction):
    action, entity_types, fields = "pool.quarantined", ("pool",), ("status",)


class PoolReleased(AuditAction):
    action, entity_types, fields = "pool.released", ("pool",), ("status", "policy_sha256")


# --- steps, lots, shipments ---
class StepAdded(AuditAction):
    action, entity_types = "step.added", ("pool", "lot")
    fields = ("step", "method", "started_at", "ended_at", "parameters", "lrv", "outcome", "operator")


class StepDeviationClosed(AuditAction):
    action, entity_types, fields = "step.deviation_closed", ("step",), ("deviation_open",)


class LotCreated(AuditAction):
    action, entity_types = "lot.created", ("lot",)
    fields = ("product", "kind", "inputs", "quantity", "unit", "expires_on")


class LotQuantityRecorded(AuditAction):
    action, entity_types, fields = "lot.quantity-recorded", ("lot",), ("quantity", "unit", "expires_on")


class LotReleased(AuditAction):
    action, entity_types, fields = "lot.released", ("lot",), ("status", "policy_sha256")


class LotQuarantined(AuditAction):
    action, entity_types, fields = "lot.quarantined", ("lot",), ("status",)


class LotHoldLifted(AuditAction):
    action, entity_types, fields = "lot.hold_lifted", ("lot",), ("status", "status_reason")


class LotShipped(AuditAction):
    action, entity_types = "lot.shipped", ("lot",)
    fields = ("shipment", "consignee", "quantity", "unit", "shipped_on")


class ConsigneeAdded(AuditAction):
    action, entity_types, fields = "consignee.added", ("consignee",), ("name", "address", "country")


# --- look-back ---
_CASE_ROW = (
    "id", "case_number", "donor_id", "reason", "status", "window_start", "closed_at", "closure", "trigger",
    "received_on", "timezone", "closed_by", "created_at", "created_by",
)  # fmt: skip
"""Every column of a look-back case, as its events record it."""


class LookbackOpened(AuditAction):
    action, entity_types = "lookback.opened", ("lookback_case",)
    fields = (
        *_CASE_ROW, "donor", "window_starts_on", "last_nonreactive", "interdicted", "pooled", "other", "findings",
    )  # fmt: skip


class LookbackJoined(AuditAction):
    """A later finding about a donor with an open case joins it: the new findings, interdictions and tasks."""

    action, entity_types, fields = "lookback.joined", ("lookback_case",), LookbackOpened.fields


class LookbackClosed(AuditAction):
    action, entity_types, fields = "lookback.closed", ("lookback_case",), _CASE_ROW


_TASK_ROW = (
    "id", "case_id", "seq", "kind", "lot_id", "consignee_id", "due_on", "state", "decision", "note", "done_at",
    "done_by", "created_at", "created_by",
)  # fmt: skip


class LookbackTaskAdded(AuditAction):
    action, entity_types, fields = "lookback.task_added", ("case_task",), _TASK_ROW


class LookbackTaskDone(AuditAction):
    """A task done (an assessment records its decision here)."""

    action, entity_types, fields = "lookback.task_done", ("case_task",), _TASK_ROW


class LookbackTaskWaived(AuditAction):
    action, entity_types, fields = "lookback.task_waived", ("case_task",), _TASK_ROW


_HOLD_ROW = (
    "id", "lot_id", "case_id", "reason", "lifted_at", "lifted_by", "lift_reason", "created_at", "created_by",
)  # fmt: skip


class LotHeld(AuditAction):
    """A hold placed on a lot, by a look-back case (``case``) or by an approver."""

    action, entity_types, fields = "lot.held", ("lot",), (*_HOLD_ROW, "case")


class LotUnheld(AuditAction):
    action, entity_types, fields = "lot.unheld", ("lot",), _HOLD_ROW


# --- recalls ---
_RECALL_ROW = (
    "id", "recall_number", "lot_id", "recall_class", "reason", "status", "closed_at", "closed_by", "created_at",
    "created_by",
)  # fmt: skip
_RECALL_CONSIGNEE_ROW = (
    "id", "recall_id", "consignee_id", "shipped", "notified_on", "notified_by", "acknowledged_at", "acknowledged_by",
    "returned", "created_at", "created_by",
)  # fmt: skip


class RecallOpened(AuditAction):
    action, entity_types, fields = "recall.opened", ("recall",), (*_RECALL_ROW, "lot")


class RecallClosed(AuditAction):
    action, entity_types, fields = "recall.closed", ("recall",), (*_RECALL_ROW, "lot")


class RecallConsigneeListed(AuditAction):
    action, entity_types, fields = (
        "recall.consignee_listed",
        ("recall_consignee",),
        (*_RECALL_CONSIGNEE_ROW, "consignee"),
    )


class RecallNotified(AuditAction):
    action, entity_types, fields = "recall.notified", ("recall_consignee",), (*_RECALL_CONSIGNEE_ROW, "consignee")


class RecallAcknowledged(AuditAction):
    action, entity_types = "recall.acknowledged", ("recall_consignee",)
    fields = (*_RECALL_CONSIGNEE_ROW, "consignee")


# --- users and signatures ---
class UserAdded(AuditAction):
    action, entity_types, fields = "user.added", ("user",), ("full_name", "roles")


class UserDisabled(AuditAction):
    action, entity_types, fields = "user.disabled", ("user",), ("disabled_at",)


class SignatureApplied(AuditAction):
    action, entity_types = "signature.applied", ("lot", "pool", "lookback_case", "deferral", "donor")
    fields = ("login", "full_name", "meaning", "signed_at", "content_sha256")


class SignatureFailed(AuditAction):
    action, entity_types, fields = "signature.failed", ("user",), ("record", "meaning", "failures_in_row")


# --- imports ---
class ImportDonors(AuditAction):
    action, entity_types, fields = "import.donors", ("import",), ("sha256", "file")


class ImportDonorsCompleted(AuditAction):
    action, entity_types = "import.donors.completed", ("import",)
    fields = ("sha256", "rows", "loaded", "already_present", "rejected", "import_event", "digest")


class ImportDonations(AuditAction):
    action, entity_types, fields = "import.donations", ("import",), ("sha256", "file")


class ImportDonationsCompleted(AuditAction):
    action, entity_types, fields = "import.donations.completed", ("import",), ImportDonorsCompleted.fields


class ImportResults(AuditAction):
    action, entity_types, fields = "import.results", ("import",), ("sha256", "file")


class ImportResultsCompleted(AuditAction):
    action, entity_types, fields = "import.results.completed", ("import",), ImportDonorsCompleted.fields


class ImportPoolMembers(AuditAction):
    action, entity_types, fields = "import.pool-members", ("import",), ("sha256", "file")


class ImportPoolMembersCompleted(AuditAction):
    action, entity_types, fields = "import.pool-members.completed", ("import",), ImportDonorsCompleted.fields


class ImportConsignees(AuditAction):
    action, entity_types, fields = "import.consignees", ("import",), ("sha256", "file")


class ImportConsigneesCompleted(AuditAction):
    action, entity_types, fields = "import.consignees.completed", ("import",), ImportDonorsCompleted.fields


# --- the trail itself ---
class AuditBaseline(AuditAction):
    action, entity_types, fields = "audit.baseline", ("audit",), ("tables",)


def catalogue() -> dict[str, type[AuditAction]]:
    """Every action, by name."""
    return dict(_CATALOGUE)


def check(action: str, entity_type: str, *values: dict[str, object] | None) -> type[AuditAction]:
    """The class of an action; InvalidInput for an action not in the catalogue, a wrong entity type, or old or
    new values with a field the class does not name."""
    kind = _CATALOGUE.get(action)
    if kind is None:
        raise InvalidInput(f"Audit action {action!r} is not in the catalogue of audit events (traceability/audit).")
    if entity_type not in kind.entity_types:
        raise InvalidInput(f"Audit action {action} records a {' or '.join(kind.entity_types)}, not a {entity_type!r}.")
    for given in values:
        unknown = sorted(set(given or ()) - set(kind.fields) - {"records"})
        if unknown:
            raise InvalidInput(
                f"Audit action {action} records no field {', '.join(unknown)} (its fields: {', '.join(kind.fields)})."
            )
    return kind
