"""Establishments, donors and deferrals."""

from __future__ import annotations

from datetime import date

from sqlalchemy import func, select
from sqlmodel import Session, col

from .. import audit
from ..calendars import DEFAULT_TIMEZONE, check_timezone, local_day
from ..errors import DuplicateKey, InvalidInput, NotFound
from ..models import Deferral, DeferralSource, Donor, Establishment, EstablishmentKind, Marker, saved_id, utcnow
from ..plausibility import check_not_future
from ..queries.lookup import get_donor, get_establishment
from .common import check_code, check_name, unique_or_conflict


def add_establishment(
    session: Session,
    *,
    code: str,
    name: str,
    kind: EstablishmentKind,
    actor: str,
    timezone: str = DEFAULT_TIMEZONE,
) -> Establishment:
    """Register a collection centre, testing lab or fractionation site in its IANA time zone (the rules count its
    local days). Raises InvalidInput (an unknown zone), DuplicateKey."""
    code = check_code(code, "Establishment code")
    try:
        timezone = check_timezone(timezone)
    except InvalidInput as error:
        raise InvalidInput(f"Establishment {code}: {error}") from None
    if not name.strip():
        raise InvalidInput(f"Establishment {code} needs a name.")
    name = check_name(name, f"Establishment {code}: name")
    if session.execute(select(col(Establishment.id)).where(col(Establishment.code) == code)).first():
        raise DuplicateKey("Establishment", code)
    row = Establishment(code=code, name=name.strip(), kind=kind, timezone=timezone, created_by=actor)
    with unique_or_conflict(session, "Establishment", code):
        session.add(row)
    audit.record(
        session,
        action="establishment.added",
        entity_type="establishment",
        entity_key=code,
        actor=actor,
        new={"name": row.name, "kind": kind, "timezone": timezone},
    )
    return row


def add_donor(
    session: Session, *, donor_code: str, establishment: str, registered_on: date | None, actor: str
) -> Donor:
    """Register a donor by pseudonymous code. Raises EstablishmentNotFound, DuplicateKey."""
    donor_code = check_code(donor_code, "Donor code")
    check_not_future(f"Donor {donor_code}", "registered on", registered_on, now=utcnow())
    site = get_establishment(session, establishment)
    if session.execute(select(col(Donor.id)).where(col(Donor.donor_code) == donor_code)).first():
        raise DuplicateKey("Donor", donor_code)
    row = Donor(
        donor_code=donor_code, establishment_id=saved_id(site.id), registered_on=registered_on, created_by=actor
    )
    with unique_or_conflict(session, "Donor", donor_code):
        session.add(row)
    audit.record(
        session,
        action="donor.added",
        entity_type="donor",
        entity_key=donor_code,
        actor=actor,
        new={"establishment": site.code, "registered_on": registered_on},
    )
    return row


def defer_donor(
    session: Session,
    *,
    donor_code: str,
    reason: str,
    starts_on: date | None,
    ends_on: date | None,
    actor: str,
    source: DeferralSource = DeferralSource.MANUAL,
    marker: Marker | None = None,
) -> Deferral:
    """Defer a donor from starts_on (default today at the donor's centre) until ends_on (the first day they may
    donate again); no end is permanent."""
    reason = audit.require_reason(reason, f"Deferring donor {donor_code}")
    donor = get_donor(session, donor_code)
    starts_on = starts_on or today_at(session, donor)
    if ends_on is not None and ends_on <= starts_on:
        raise InvalidInput(
            f"Deferral of donor {donor_code} would end on {ends_on} but starts on {starts_on}; the end must be later."
        )
    sequence = (
        session.execute(select(func.max(col(Deferral.sequence))).where(col(Deferral.donor_id) == donor.id)).scalar()
        or 0
    ) + 1
    row = Deferral(
        donor_id=saved_id(donor.id),
        sequence=sequence,
        reason=reason,
        source=source,
        starts_on=starts_on,
        ends_on=ends_on,
        marker=marker,
        created_by=actor,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        action="donor.deferred",
        entity_type="donor",
        entity_key=donor_code,
        actor=actor,
        new={"deferral": sequence, "starts_on": starts_on, "ends_on": ends_on, "source": source}
        | ({"marker": marker} if marker is not None else {}),
        reason=reason,
    )
    return row


def lift_deferral(
    session: Session, *, donor_code: str, sequence: int, lifted_on: date | None, reason: str, actor: str
) -> Deferral:
    """End a deferral early (from ``lifted_on``, default today at the donor's centre). The deferral stays on record
    with the day and reason it was lifted. A deferral after a reactive test is not lifted by hand."""
    reason = audit.require_reason(reason, f"Lifting a deferral of donor {donor_code}")
    donor = get_donor(session, donor_code)
    row = session.execute(
        select(Deferral).where(col(Deferral.donor_id) == donor.id, col(Deferral.sequence) == sequence)
    ).scalar_one_or_none()
    if row is None:
        raise NotFound("Deferral", f"{donor_code}#{sequence}")
    if row.lifted_on is not None:
        raise InvalidInput(f"Deferral {donor_code}#{sequence} was already lifted on {row.lifted_on}.")
    if row.source == DeferralSource.REACTIVE_RESULT:
        raise InvalidInput(
            f"Deferral {donor_code}#{sequence} follows a reactive screening result and is permanent; "
            "re-entry needs a documented re-entry algorithm outside plasmatrace."
        )
    if row.source == DeferralSource.UNTIL_NONREACTIVE:
        raise InvalidInput(
            f"Deferral {donor_code}#{sequence} follows a reactive {row.marker or 'screening'} test and ends only when "
            "a later donation tests nonreactive for it (21 CFR 640.65(b)(2)(ii)); record that result instead."
        )
    lifted_on = lifted_on or today_at(session, donor)
    if lifted_on <= row.starts_on:
        raise InvalidInput(
            f"Deferral {donor_code}#{sequence} starts on {row.starts_on}; it can be lifted from the day after at the "
            f"earliest, not {lifted_on} (that would undo it from its first day)."
        )
    return end_deferral(session, row, donor_code=donor_code, lifted_on=lifted_on, reason=reason, actor=actor)


def today_at(session: Session, donor: Donor) -> date:
    """Today on the calendar of the donor's establishment (its IANA time zone)."""
    zone = session.execute(
        select(col(Establishment.timezone)).where(col(Establishment.id) == donor.establishment_id)
    ).scalar()
    return local_day(utcnow(), zone)


def end_deferral(
    session: Session, row: Deferral, *, donor_code: str, lifted_on: date, reason: str, actor: str
) -> Deferral:
    """Record that a deferral ends on ``lifted_on`` (the first day the donor may donate again), with its audit
    event; the deferral stays on record."""
    row.lifted_on, row.lift_reason = lifted_on, reason
    session.flush()
    audit.record(
        session,
        action="donor.deferral_lifted",
        entity_type="donor",
        entity_key=donor_code,
        actor=actor,
        old={"deferral": row.sequence, "lifted_on": None},
        new={"deferral": row.sequence, "lifted_on": lifted_on},
        reason=reason,
    )
    return row
