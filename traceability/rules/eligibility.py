"""Eligibility of a unit for pooling (SPEC §4, rules 1-6) and a pool's composition."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from .. import calendars
from ..calendars import DEFAULT_TIMEZONE
from ..errors import NotEnoughDonors
from ..models import ResultValue, UnitStatus
from .policy import (
    DEFAULT_POLICY,
    Policy,
)

# --- eligibility (SPEC §4, rules 1-6) -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitFacts:
    """What the eligibility rules need to know about one unit, loaded set-based by the queries."""

    unit_number: str
    status: UnitStatus
    collected_at: datetime
    volume_ml: int
    current_results: dict[str, str]
    donor_code: str
    qualified: bool
    deferral_at_collection: str | None
    already_pooled_in: str | None = None
    donation_id: int | None = None
    timezone: str = DEFAULT_TIMEZONE
    open_case: str | None = None
    donor_reactive: str | None = None
    other_reactive: tuple[str, ...] = ()
    """Markers outside the required panel whose current result on this unit is reactive."""


def unit_in_inventory_problem(unit: UnitFacts, *, pooled_ok_in: str | None = None) -> str | None:
    """Rule 1: the unit is in inventory (or, when its pool is being closed, pooled there) and no open look-back case
    holds it."""
    if unit.status == UnitStatus.POOLED:
        if pooled_ok_in is None or unit.already_pooled_in != pooled_ok_in:
            where = f"pool {unit.already_pooled_in}" if unit.already_pooled_in else "a pool"
            return f"not in inventory: already in {where}"
    elif unit.status != UnitStatus.IN_INVENTORY:
        return f"not in inventory: {unit.status.value}"
    if unit.open_case:
        return f"held by open look-back case {unit.open_case}"
    return None


def screening_problems(current_results: dict[str, str], required_panel: Sequence[str]) -> list[str]:
    """Rule 2 (``required_panel``): every panel marker has a current result, and each is nonreactive."""
    if all(current_results.get(m) == ResultValue.NONREACTIVE for m in required_panel):
        return []
    reasons = []
    missing = [m for m in required_panel if m not in current_results]
    if missing:
        reasons.append(f"screening incomplete: no result for {', '.join(missing)}")
    reactive = [m for m in required_panel if current_results.get(m) == ResultValue.REACTIVE]
    if reactive:
        reasons.append(f"reactive: {', '.join(reactive)}")
    invalid = [m for m in required_panel if current_results.get(m) == ResultValue.INVALID]
    if invalid:
        reasons.append(f"invalid result, retest needed: {', '.join(invalid)}")
    return reasons


def panel_complete_and_nonreactive(current_results: dict[str, str], policy: Policy = DEFAULT_POLICY) -> bool:
    """A donation whose required panel is complete and wholly nonreactive: it qualifies and anchors look-back."""
    return not screening_problems(current_results, policy.panel)


def hold_ends_at(collected_at: datetime, hold_days: int) -> datetime:
    """Rule 3 (``hold_days``): the instant the inventory hold ends, exactly hold_days after collection."""
    return collected_at + timedelta(days=hold_days)


def hold_problem(collected_at: datetime, *, now: datetime, hold_days: int, timezone: str) -> str | None:
    """Rule 3: the hold has passed at ``now``; the end is shown in the collection centre's local time."""
    ends = hold_ends_at(collected_at, hold_days)
    if now >= ends:
        return None
    local = calendars.local_time(ends, timezone)
    return f"inventory hold until {local.strftime('%Y-%m-%d %H:%M')} {timezone} ({hold_days} days)"


def qualified_for_unit(unit_day: date, other_qualifying_days: Iterable[date], qualification_months: int) -> bool:
    """Rule 4 (``qualification_months``): the donor is qualified for this unit.

    Qualification belongs to the unit (PPTA IQPP; DOMAIN §2.11): the unit is usable only when another donation of
    the donor with a complete nonreactive panel was collected within qualification_months calendar months of it,
    before or after, on local days. So an applicant's first unit waits for a second nonreactive donation within
    the months, and is never usable when the second came later; and a donor away longer than the months is an
    applicant again: the first unit after the gap waits for the next. (A qualifying pair before the unit with no
    longer gap since then always includes the donation just before the unit, which is within the months.)
    """
    return any(calendars.within_months(day, unit_day, qualification_months) for day in other_qualifying_days)


def deferral_covers(starts_on: date, ends_on: date | None, lifted_on: date | None, day: date) -> bool:
    """Rule 5: a deferral covers the local days from starts_on up to, not including, ends_on (or the day it was
    lifted)."""
    end = min(d for d in (ends_on, lifted_on) if d is not None) if (ends_on or lifted_on) else None
    return starts_on <= day and (end is None or day < end)


def volume_problem(volume_ml: int) -> str | None:
    """Rule 6: the unit has a positive volume."""
    return None if volume_ml > 0 else f"volume {volume_ml} mL is not positive"


def eligibility_problems(
    unit: UnitFacts, *, now: datetime, policy: Policy = DEFAULT_POLICY, pooled_ok_in: str | None = None
) -> list[str]:
    """Every reason the unit may not be pooled (empty when eligible): SPEC §4 rules 1-6 in order.

    ``pooled_ok_in`` names the pool the unit is already a member of when a pool is being closed: being pooled
    there is expected, anything else about its status is not.
    """
    reasons: list[str] = []
    if problem := unit_in_inventory_problem(unit, pooled_ok_in=pooled_ok_in):
        reasons.append(problem)
    reasons.extend(screening_problems(unit.current_results, policy.panel))
    if unit.other_reactive:  # every reactive result rejects its unit (markers.<marker>.on_reactive)
        reasons.append(f"reactive: {', '.join(unit.other_reactive)} (not on the panel; the unit is rejected)")
    if unit.donor_reactive:
        reasons.append(f"donor {unit.donor_code} has a reactive result: {unit.donor_reactive}")
    if problem := hold_problem(unit.collected_at, now=now, hold_days=policy.hold_days, timezone=unit.timezone):
        reasons.append(problem)
    if not unit.qualified:
        reasons.append(
            f"donor {unit.donor_code} not qualified for this unit: no other donation with a complete nonreactive "
            f"panel within {policy.qualification_months} calendar months of it"
        )
    if unit.deferral_at_collection:
        reasons.append(f"donor {unit.donor_code} was deferred at collection: {unit.deferral_at_collection}")
    if problem := volume_problem(unit.volume_ml):
        reasons.append(problem)
    return reasons


def check_pool_composition(pool_number: str, donor_count: int, min_donors: int) -> None:
    """A pool closes with at least ``min_donors`` distinct donors (``Policy.min_donors_for`` the product)."""
    if donor_count < min_donors:
        raise NotEnoughDonors(pool_number, found=donor_count, required=min_donors)
