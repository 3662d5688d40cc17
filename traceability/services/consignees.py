"""Consignees (SPEC §10): the hospitals, distributors and manufacturers lots are shipped to, with addresses."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlmodel import Session, col

from .. import audit
from ..errors import DuplicateKey, InvalidInput
from ..models import Consignee
from .common import check_code, check_name, unique_or_conflict

_COUNTRY = re.compile(r"[A-Z]{2}")


def check_country(value: str | None, record: str) -> str | None:
    """An ISO 3166-1 alpha-2 country code (upper-cased), or None. Raises InvalidInput."""
    if value is None or not value.strip():
        return None
    code = value.strip().upper()
    if not _COUNTRY.fullmatch(code):
        raise InvalidInput(f"{record}: country {value[:20]!r} is not a two-letter ISO 3166 code such as US or DE.")
    return code


@dataclass(frozen=True)
class ConsigneeFields:
    """A consignee's checked fields, as the command line and the import both give them."""

    code: str
    name: str
    address: str
    country: str | None


def check_consignee(*, code: str, name: str, address: str, country: str | None) -> ConsigneeFields:
    """Check every field of a consignee; raises InvalidInput naming the consignee and the problem."""
    code = check_code(code, "Consignee code")
    record = f"Consignee {code}"
    return ConsigneeFields(
        code=code,
        name=check_name(name, f"{record}: name"),
        address=check_name(address, f"{record}: address", limit=500),
        country=check_country(country, record),
    )


def add_consignee(
    session: Session, *, code: str, name: str, address: str, actor: str, country: str | None = None
) -> Consignee:
    """Register a consignee with its address. Raises InvalidInput, DuplicateKey."""
    fields = check_consignee(code=code, name=name, address=address, country=country)
    if session.execute(select(col(Consignee.id)).where(col(Consignee.code) == fields.code)).first():
        raise DuplicateKey("Consignee", fields.code)
    row = Consignee(
        code=fields.code, name=fields.name, address=fields.address, country=fields.country, created_by=actor
    )
    with unique_or_conflict(session, "Consignee", fields.code):
        session.add(row)
    audit.record(
        session,
        action="consignee.added",
        entity_type="consignee",
        entity_key=fields.code,
        actor=actor,
        new={"name": row.name, "address": row.address, "country": row.country},
    )
    return row
