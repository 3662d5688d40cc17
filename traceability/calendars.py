"""Time zones and calendar months: the one place where a stored UTC instant becomes a collection centre's day.

The rules count days and months on the collection centre's own calendar (SPEC §4, DOMAIN §2.11): a deferral day, the
day of collection, the first day of a look-back window and the end of a six-month qualification window are local
dates in the establishment's IANA time zone. Times stay stored in UTC; only the rules look at local dates.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from .errors import InvalidInput

DEFAULT_TIMEZONE = "UTC"


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The IANA zone of that name. Raises InvalidInput naming it when the zone database does not know it."""
    if not name or name != name.strip() or name.startswith("/") or ".." in name:
        raise InvalidInput(f"Time zone {name!r} is not an IANA time zone name such as Europe/Vienna.")
    try:
        found = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"Time zone {name!r} is not an IANA time zone name such as Europe/Vienna.") from None
    if name not in _known_names():
        raise InvalidInput(f"Time zone {name!r} is not an IANA time zone name such as Europe/Vienna.")
    return found


@lru_cache(maxsize=1)
def _known_names() -> frozenset[str]:
    return frozenset(available_timezones()) | {"UTC"}


def check_timezone(name: str) -> str:
    """The zone name, checked. Raises InvalidInput."""
    zone(name)
    return name


def local_day(at: datetime, tz: str | None) -> date:
    """The calendar day at the establishment when the instant ``at`` happened."""
    return at.astimezone(zone(tz or DEFAULT_TIMEZONE)).date()


def local_time(at: datetime, tz: str | None) -> datetime:
    """The instant as wall-clock time at the establishment (aware)."""
    return at.astimezone(zone(tz or DEFAULT_TIMEZONE))


def start_of_day(day: date, tz: str | None) -> datetime:
    """The UTC instant at which that local day begins at the establishment."""
    return datetime.combine(day, time(0), tzinfo=zone(tz or DEFAULT_TIMEZONE)).astimezone(UTC)


def add_months(day: date, months: int) -> date:
    """The same day ``months`` calendar months later (earlier when negative), clamped to the month's last day:
    2024-02-29 minus 12 months is 2023-02-28; 2025-08-31 plus 6 months is 2026-02-28."""
    index = day.year * 12 + (day.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def within_months(earlier: date, later: date, months: int) -> bool:
    """True when ``later`` falls no more than ``months`` calendar months after ``earlier`` (the edge day included):
    2026-01-15 and 2026-07-15 are within 6 months; 2026-07-16 is not."""
    if later < earlier:
        earlier, later = later, earlier
    return later <= add_months(earlier, months)


@lru_cache(maxsize=32)
def shortest_span_days(months: int) -> int:
    """The fewest days that ``months`` calendar months can span (6 months: 181 days, from 31 August to 28 February).
    Two instants closer than this, less a day for each side's time zone, are certainly within ``months``."""
    start = date(2000, 1, 1)
    return min((add_months(start + timedelta(days=i), months) - (start + timedelta(days=i))).days for i in range(1461))
