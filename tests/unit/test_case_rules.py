"""Look-back task deadlines (SPEC §12; DOMAIN §2.11): calendar days, a policy may shorten them, never lengthen."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from traceability.rules import DEFAULT_POLICY, Policy, case_due_on, days_late


def test_deadlines_are_calendar_days_across_month_and_year_ends() -> None:
    assert case_due_on(date(2026, 4, 30), 3) == date(2026, 5, 3)
    assert case_due_on(date(2026, 11, 30), 3) == date(2026, 12, 3)
    assert case_due_on(date(2026, 12, 30), 3) == date(2027, 1, 2)
    assert case_due_on(date(2028, 2, 27), 3) == date(2028, 3, 1)  # through 29 February
    assert case_due_on(date(2026, 4, 30), 45) == date(2026, 6, 14)


def test_a_task_is_late_from_the_day_after_its_due_day() -> None:
    due = date(2026, 5, 3)
    assert [days_late(due, date(2026, 5, d)) for d in (2, 3, 4, 10)] == [0, 0, 1, 7]
    assert days_late(None, date(2030, 1, 1)) == 0


def test_a_policy_may_shorten_the_deadlines_but_not_lengthen_them() -> None:
    assert (DEFAULT_POLICY.lookback_quarantine_days, DEFAULT_POLICY.lookback_supplemental_days) == (3, 45)
    assert Policy(lookback_quarantine_days=1, lookback_supplemental_days=30).lookback_quarantine_days == 1
    with pytest.raises(ValidationError, match="lookback_quarantine_days = 4 relaxes the law: at most 3"):
        Policy(lookback_quarantine_days=4)
    with pytest.raises(ValidationError, match="lookback_supplemental_days = 46 relaxes the law: at most 45"):
        Policy(lookback_supplemental_days=46)
    with pytest.raises(ValidationError):
        Policy(lookback_quarantine_days=0)
