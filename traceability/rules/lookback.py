"""The look-back window (SPEC §4, last paragraph)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta

from .. import calendars

# --- look-back (SPEC §4, last paragraph) ---------------------------------------------------------------------------


def lookback_anchor(nonreactive: Iterable[tuple[datetime, date]], first_reactive_at: datetime | None) -> date | None:
    """The local day of the donor's last nonreactive donation, from which the look-back window counts back: the
    last one collected before the donor's first reactive donation. A nonreactive donation collected after the
    reactive one (before its result came back: donors give twice a week) must not move the window later.
    ``nonreactive``: (collected at, local day) of the donations with a complete nonreactive panel."""
    days = [(at, day) for at, day in nonreactive if first_reactive_at is None or at < first_reactive_at]
    return max(days)[1] if days else None


def lookback_window_starts_on(last_nonreactive_day: date, lookback_months: int) -> date:
    """The first local day of the look-back window (``lookback_months``): the same day that many calendar months
    before the donor's last nonreactive donation, the whole day included (21 CFR 610.46: "twelve months and less
    before"); 2024-03-01 gives 2023-03-01, 2024-02-29 gives 2023-02-28."""
    return calendars.add_months(last_nonreactive_day, -lookback_months)


def case_due_on(received_on: date, days: int) -> date:
    """The last local day on which a look-back task counted in calendar days is on time: ``days`` calendar days
    after the day of the reactive test or of the information (30 November + 3 days: 3 December)."""
    return received_on + timedelta(days=days)


def days_late(due_on: date | None, today: date) -> int:
    """Whole calendar days a task is late on ``today`` (0 on its due day and before)."""
    return 0 if due_on is None else max(0, (today - due_on).days)


def in_lookback_window(collection_day: date, starts_on: date | None) -> bool:
    """A donation is in the window when collected on or after its first day (no nonreactive donation: all are)."""
    return starts_on is None or collection_day >= starts_on
