"""get_* lookups by business key: one row, else the matching NotFound error."""

from __future__ import annotations

import unicodedata

from sqlmodel import Session, col, select

from ..errors import (
    ConsigneeNotFound,
    DonorNotFound,
    EstablishmentNotFound,
    LotNotFound,
    PoolNotFound,
    StepNotFound,
    UnitNotFound,
)
from ..identifiers import parse_unit_number
from ..models import Consignee, Donation, Donor, Establishment, Lot, Pool, Step


def _key(text: str) -> str:
    """Business keys are stored NFKC-normalised: a look-alike typed in a look-up finds the same record."""
    return unicodedata.normalize("NFKC", text).strip()


def canonical_unit_number(text: str) -> str:
    """The stored form of a unit number typed, scanned or printed in any accepted form."""
    return parse_unit_number(text).value


def get_establishment(session: Session, code: str) -> Establishment:
    code = _key(code)
    row = session.exec(select(Establishment).where(col(Establishment.code) == code)).one_or_none()
    if row is None:
        raise EstablishmentNotFound(code)
    return row


def get_donor(session: Session, donor_code: str) -> Donor:
    donor_code = _key(donor_code)
    row = session.exec(select(Donor).where(col(Donor.donor_code) == donor_code)).one_or_none()
    if row is None:
        raise DonorNotFound(donor_code)
    return row


def get_unit(session: Session, unit_number: str, *, for_update: bool = False) -> Donation:
    canonical = canonical_unit_number(unit_number)
    query = select(Donation).where(col(Donation.unit_number) == canonical)
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    row = session.exec(query).one_or_none()
    if row is None:
        raise UnitNotFound(canonical)
    return row


def get_pool(session: Session, pool_number: str, *, for_update: bool = False) -> Pool:
    pool_number = _key(pool_number)
    query = select(Pool).where(col(Pool.pool_number) == pool_number)
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    row = session.exec(query).one_or_none()
    if row is None:
        raise PoolNotFound(pool_number)
    return row


def get_lot(session: Session, lot_number: str, *, for_update: bool = False) -> Lot:
    lot_number = _key(lot_number)
    query = select(Lot).where(col(Lot.lot_number) == lot_number)
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    row = session.exec(query).one_or_none()
    if row is None:
        raise LotNotFound(lot_number)
    return row


def get_step(session: Session, step_key: str) -> Step:
    row = session.exec(select(Step).where(col(Step.step_key) == step_key)).one_or_none()
    if row is None:
        raise StepNotFound(step_key)
    return row


def get_consignee(session: Session, code: str) -> Consignee:
    code = _key(code)
    row = session.exec(select(Consignee).where(col(Consignee.code) == code)).one_or_none()
    if row is None:
        raise ConsigneeNotFound(code)
    return row
