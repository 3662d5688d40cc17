"""The catalogue of audit events: one class per action, naming its entity type and the fields it records.

``audit.record`` refuses an action that is not here and an entity type that does not match its class. Besides the
fields named here, an event that wrote rows of regulated tables keeps their complete state under ``records`` (see
``audit.records``). README lists every action (tests/test_docs.py checks that the list matches).
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
class LookbackOpened(AuditAction):
    action, entity_types = "lookback.opened", ("lookback_case",)
    fields = ("donor", "window_starts_on", "last_nonreactive", "interdicted", "pooled", "other")


class LookbackClosed(AuditAction):
    action, entity_types, fields = "lookback.closed", ("lookback_case",), ("status",)


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
