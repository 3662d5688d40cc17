"""The scenes after the late reactive result: the look-back case it opened by itself (what is due, one
notification) and a mock recall drill, the trace exercise inspectors ask for."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlmodel import col

from .. import audit
from ..models import Donation, Donor, PoolMember
from ..queries import casework, drill
from ..services import lookback, recalls
from .cast import INVESTIGATOR

if TYPE_CHECKING:
    from .scenes import LateResult, Tour


def case_work(tour: Tour, late: LateResult) -> None:
    """Shows the look-back case the late reactive result opened by itself: what is due, in calendar days, and one
    notification recorded (the first consignee's quarantine request)."""
    case = late.outcome.case
    if case is None:
        return
    number = case.case_number
    tour.say(
        f"Look-back case {number} opened by itself for donor {case.donor_code}: {case.tasks} task(s), "
        f"first due {case.first_due}; lots held until assessed: {', '.join(case.held) or 'none'}."
    )
    with tour.work() as session:
        due = [t for t in casework.due_tasks(session) if t.case_number == number]
        for line in due[:4]:
            what = " ".join(x for x in (line.kind, line.lot_number, line.consignee) if x)
            tour.say(f"  due {line.due_on}: task {line.task} {what}")
        request = next((t for t in due if t.kind == "quarantine-request"), None)
        if request is not None:
            lookback.finish_task(
                session,
                case_number=number,
                seq=request.task,
                actor=INVESTIGATOR.login if tour.people else tour.admin,
                note=f"quarantine of lot {request.lot_number} requested from {request.consignee} by phone and letter",
            )
            tour.say(f"Notified {request.consignee} to quarantine lot {request.lot_number} (task {request.task} done).")


def recall_drill(tour: Tour, late: LateResult) -> None:
    """Shows a mock recall, the trace exercise inspectors ask for: what a look-back case on another donor of the
    same pool would touch (units to stop, pools, lots, consignees), answered without changing anything, timed and
    kept for the inspector (``plasmatrace recall drills``)."""
    with tour.work() as session:
        member_pools = select(col(PoolMember.pool_id)).join(Donation, col(Donation.id) == col(PoolMember.donation_id))
        donor = session.execute(
            select(col(Donor.donor_code))
            .join(Donation, col(Donation.donor_id) == col(Donor.id))
            .join(PoolMember, col(PoolMember.donation_id) == col(Donation.id))
            .where(
                col(PoolMember.pool_id).in_(
                    member_pools.join(Donor, col(Donor.id) == col(Donation.donor_id)).where(
                        col(Donor.donor_code) == late.donor_code
                    )
                ),
                col(Donor.donor_code) != late.donor_code,
            )
            .order_by(col(Donor.donor_code))
            .limit(1)
        ).scalar_one()
        answer = drill.drill_donor(session, donor, policy=tour.policy)
        recalls.record_drill(
            session,
            answer=answer,
            checkpoint=audit.head_checkpoint(session),
            actor=INVESTIGATOR.login if tour.people else tour.admin,
        )
    tour.say(
        f"Mock recall drill for donor {donor} (nothing changed): {len(answer.units_to_stop)} unit(s) to stop, "
        f"pools {', '.join(answer.pools) or 'none'}, lots {', '.join(x.lot_number for x in answer.lots) or 'none'}, "
        f"{len(answer.consignees)} consignee(s); answered in {answer.duration_ms:.0f} ms and kept."
    )
