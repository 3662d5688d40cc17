"""Plausible times (SPEC §10): pure checks that the dates and times of a record make sense together.

Every write, on the command line and in imports, goes through these before anything is written. A violation is
``ImplausibleTime`` (exit 5) naming the record, both times and the rule. No function here queries: the caller
passes the times it loaded.

Days and instants: a day (a donor's registration, a shipment) is a local day somewhere; an instant is stored in
UTC. A day is compared with an instant generously, so that no time zone can make a plausible record look wrong:
the day ``D`` began, at the earliest, at ``D 00:00 UTC+14`` and ended, at the latest, at ``D+1 00:00 UTC-12``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from .errors import InvalidInput

CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future a recorded time may lie (clocks of scanners and servers differ a little)."""
EARLIEST = datetime(1940, 1, 1, tzinfo=UTC)
"""Nothing recorded here happened before plasma fractionation existed (Cohn, 1940s)."""
_EARLIEST_ZONE = timedelta(hours=14)  # UTC+14: the first place a day begins
_LATEST_ZONE = timedelta(hours=12)  # UTC-12: the last place a day ends


class ImplausibleTime(InvalidInput):
    """A time that cannot be true: in the future, or before something it must follow."""

    def __init__(self, record: str, message: str, rule: str) -> None:
        super().__init__(f"{record}: {message} (rule: {rule}); nothing was written.")
        self.record, self.rule = record, rule


def _show(value: datetime | date) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value.isoformat()


def day_began(day: date) -> datetime:
    """The earliest instant at which ``day`` began anywhere (00:00 at UTC+14)."""
    return datetime.combine(day, time(), tzinfo=UTC) - _EARLIEST_ZONE


def day_ended(day: date) -> datetime:
    """The latest instant at which ``day`` ended anywhere (24:00 at UTC-12)."""
    return datetime.combine(day, time(), tzinfo=UTC) + timedelta(days=1) + _LATEST_ZONE


def latest_day(instant: datetime) -> date:
    """The latest local day anywhere at ``instant``."""
    return (instant.astimezone(UTC) + _EARLIEST_ZONE).date()


def earliest_day(instant: datetime) -> date:
    """The earliest local day anywhere at ``instant``."""
    return (instant.astimezone(UTC) - _LATEST_ZONE).date()


def check_not_future(record: str, what: str, value: datetime | date | None, *, now: datetime) -> None:
    """A time at most CLOCK_SKEW ahead of now; a day not after today anywhere on earth; nothing before 1940."""
    if value is None:
        return
    if isinstance(value, datetime):
        if value > now + CLOCK_SKEW:
            raise ImplausibleTime(
                record, f"{what} {_show(value)} is in the future (now {_show(now)})", "not in the future"
            )
        if value < EARLIEST:
            raise ImplausibleTime(record, f"{what} {_show(value)} is before {EARLIEST.year}", "not before 1940")
        return
    if value > latest_day(now + CLOCK_SKEW):
        raise ImplausibleTime(record, f"{what} {_show(value)} is in the future (now {_show(now)})", "not in the future")
    if value < EARLIEST.date():
        raise ImplausibleTime(record, f"{what} {_show(value)} is before {EARLIEST.year}", "not before 1940")


def check_collection(record: str, *, collected_at: datetime, registered_on: date | None, now: datetime) -> None:
    """A collection is not in the future and not before the donor's registration day."""
    check_not_future(record, "collected at", collected_at, now=now)
    if registered_on is not None and collected_at < day_began(registered_on):
        raise ImplausibleTime(
            record,
            f"collected at {_show(collected_at)}, before the donor was registered on {_show(registered_on)}",
            "a collection is not before the donor's registration",
        )


def check_result(record: str, *, tested_at: datetime, collected_at: datetime, now: datetime) -> None:
    """A screening result is not in the future and not before its unit was collected."""
    check_not_future(record, "tested at", tested_at, now=now)
    if tested_at < collected_at:
        raise ImplausibleTime(
            record,
            f"tested at {_show(tested_at)}, before it was collected at {_show(collected_at)}",
            "a result is not before its collection",
        )


def check_pool_test(record: str, *, tested_at: datetime, closed_at: datetime | None, now: datetime) -> None:
    """A pool test is not in the future and not before the pool was closed."""
    check_not_future(record, "tested at", tested_at, now=now)
    if closed_at is not None and tested_at < closed_at:
        raise ImplausibleTime(
            record,
            f"tested at {_show(tested_at)}, before the pool was closed at {_show(closed_at)}",
            "a pool test is not before the pool closed",
        )


def check_step(
    record: str, *, started_at: datetime, ended_at: datetime, began: datetime | None, target: str, now: datetime
) -> None:
    """A step lies within the life of its pool or lot: it ends by now and does not start before the material
    existed (``began``: the latest collection of a unit in the pool, or in the pools upstream of the lot)."""
    check_not_future(record, "started at", started_at, now=now)
    check_not_future(record, "ended at", ended_at, now=now)
    if began is not None and started_at < began:
        raise ImplausibleTime(
            record,
            f"started at {_show(started_at)}, before {target} ({_show(began)})",
            "a step lies within the life of its pool or lot",
        )


def check_shipment(record: str, *, shipped_on: date, released_at: datetime | None, now: datetime) -> None:
    """A shipment is not in the future and not before the lot was released."""
    check_not_future(record, "shipped on", shipped_on, now=now)
    if released_at is not None and shipped_on < earliest_day(released_at):
        raise ImplausibleTime(
            record,
            f"shipped on {_show(shipped_on)}, before the lot was released at {_show(released_at)}",
            "a shipment is not before the lot's release",
        )
