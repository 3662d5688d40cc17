"""Fixtures of the integration tests."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from tests.factories import make_donor, make_establishment


@pytest.fixture(name="site")
def site_fixture(session: Session) -> str:
    return make_establishment(session, code="SITE-1")


@pytest.fixture(name="donor_code")
def donor_code_fixture(session: Session, site: str) -> str:
    return make_donor(session, establishment=site, donor_code="D-0001").donor_code
