"""One SELECT per regulated table, in business terms: the row's surrogate id, its import event (or NULL), the
business key's columns, then every other field the trail keeps (``tables.Regulated`` declares each table with its
SELECT)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, null, select, type_coerce
from sqlalchemy.orm import aliased
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import NullType
from sqlmodel import col

from ..models import (
    AppUser,
    CaseFinding,
    CaseTask,
    Consignee,
    CorrectionDeviation,
    Deferral,
    Donation,
    Donor,
    Establishment,
    LookbackCase,
    Lot,
    LotHold,
    LotInput,
    Pool,
    PoolMember,
    PoolTest,
    Recall,
    RecallConsignee,
    Shipment,
    Step,
    TestResult,
)


def _imp(column: Any) -> ColumnElement[Any]:
    return type_coerce(column, NullType()).label("_import")


def _no_import() -> ColumnElement[Any]:
    return null().label("_import")


def _recorded(model: Any) -> list[ColumnElement[Any]]:
    return [col(model.created_at).label("created_at"), col(model.created_by).label("created_by")]


def establishments() -> Select[Any]:
    e = Establishment
    return select(col(e.id), _no_import(), col(e.code), col(e.name), col(e.kind), col(e.timezone), *_recorded(e))


def donors() -> Select[Any]:
    site = aliased(Establishment)
    return (
        select(
            col(Donor.id),
            _imp(col(Donor.import_event_id)),
            col(Donor.donor_code),
            col(site.code).label("establishment"),
            col(Donor.registered_on),
            *_recorded(Donor),
        )
        .select_from(Donor)
        .outerjoin(site, col(site.id) == col(Donor.establishment_id))
    )


def deferrals() -> Select[Any]:
    d = Deferral
    return (
        select(
            col(d.id),
            _no_import(),
            col(Donor.donor_code).label("donor"),
            col(d.sequence),
            col(d.reason),
            col(d.source),
            col(d.starts_on),
            col(d.ends_on),
            col(d.lifted_on),
            col(d.lift_reason),
            col(d.marker),
            *_recorded(d),
        )
        .select_from(d)
        .outerjoin(Donor, col(Donor.id) == d.donor_id)
    )


def donations() -> Select[Any]:
    d = Donation
    site = aliased(Establishment)
    return (
        select(
            col(d.id),
            _imp(d.import_event_id),
            col(d.unit_number),
            col(d.scheme),
            col(d.flag),
            col(Donor.donor_code).label("donor"),
            col(site.code).label("establishment"),
            col(d.collected_at),
            col(d.frozen_at),
            col(d.volume_ml),
            col(d.plasma_kind),
            col(d.status),
            col(d.status_reason),
            col(d.version),
            *_recorded(d),
        )
        .select_from(d)
        .outerjoin(Donor, col(Donor.id) == d.donor_id)
        .outerjoin(site, col(site.id) == col(d.establishment_id))
    )


def results() -> Select[Any]:
    r = TestResult
    lab = aliased(Establishment)
    return (
        select(
            col(r.id),
            _imp(r.import_event_id),
            col(Donation.unit_number).label("unit"),
            col(r.marker),
            col(r.version),
            col(r.result),
            col(r.value),
            col(r.value_unit),
            col(r.method),
            col(lab.code).label("lab"),
            col(r.tested_at),
            col(r.reason),
            *_recorded(r),
        )
        .select_from(r)
        .outerjoin(Donation, col(Donation.id) == r.donation_id)
        .outerjoin(lab, col(lab.id) == col(r.lab_id))
    )


def pools() -> Select[Any]:
    p = Pool
    return select(
        col(p.id),
        _no_import(),
        col(p.pool_number),
        col(p.product),
        col(p.status),
        col(p.closed_at),
        col(p.released_at),
        col(p.status_reason),
        col(p.drawn_ml),
        *_recorded(p),
    )


def members() -> Select[Any]:
    m = PoolMember
    return (
        select(
            col(m.id),
            _imp(m.import_event_id),
            col(Donation.unit_number).label("unit"),
            col(Pool.pool_number).label("pool"),
            *_recorded(m),
        )
        .select_from(m)
        .outerjoin(Donation, col(Donation.id) == m.donation_id)
        .outerjoin(Pool, col(Pool.id) == m.pool_id)
    )


def pool_tests() -> Select[Any]:
    t = PoolTest
    return (
        select(
            col(t.id),
            _no_import(),
            col(Pool.pool_number).label("pool"),
            col(t.marker),
            col(t.version),
            col(t.result),
            col(t.value),
            col(t.value_unit),
            col(t.tested_at),
            col(t.reason),
            *_recorded(t),
        )
        .select_from(t)
        .outerjoin(Pool, col(Pool.id) == t.pool_id)
    )


def lots() -> Select[Any]:
    o = Lot
    return select(
        col(o.id),
        _no_import(),
        col(o.lot_number),
        col(o.product),
        col(o.kind),
        col(o.status),
        col(o.released_at),
        col(o.status_reason),
        col(o.quantity),
        col(o.unit),
        col(o.expires_on),
        col(o.drawn),
        col(o.shipped),
        *_recorded(o),
    )


def lot_inputs() -> Select[Any]:
    i = LotInput
    made, drawn = aliased(Lot), aliased(Lot)
    return (
        select(
            col(i.id),
            _no_import(),
            col(made.lot_number).label("lot"),
            col(Pool.pool_number).label("input_pool"),
            col(drawn.lot_number).label("input_lot"),
            col(i.quantity),
            col(i.quantity_unit),
            *_recorded(i),
        )
        .select_from(i)
        .outerjoin(made, col(made.id) == col(i.lot_id))
        .outerjoin(Pool, col(Pool.id) == i.input_pool_id)
        .outerjoin(drawn, col(drawn.id) == col(i.input_lot_id))
    )


def steps() -> Select[Any]:
    s = Step
    return (
        select(
            col(s.id),
            _no_import(),
            col(s.step_key),
            col(Pool.pool_number).label("pool"),
            col(Lot.lot_number).label("lot"),
            col(s.method),
            col(s.started_at),
            col(s.ended_at),
            col(s.parameters),
            col(s.lrv_enveloped),
            col(s.lrv_non_enveloped),
            col(s.outcome),
            col(s.operator),
            col(s.deviation_closed_at),
            col(s.deviation_closure),
            *_recorded(s),
        )
        .select_from(s)
        .outerjoin(Pool, col(Pool.id) == s.pool_id)
        .outerjoin(Lot, col(Lot.id) == s.lot_id)
    )


def consignees() -> Select[Any]:
    c = Consignee
    return select(
        col(c.id),
        _imp(c.import_event_id),
        col(c.code),
        col(c.name),
        col(c.address),
        col(c.country),
        *_recorded(c),
    )


def shipments() -> Select[Any]:
    s = Shipment
    return (
        select(
            col(s.id),
            _no_import(),
            col(s.shipment_number),
            col(Lot.lot_number).label("lot"),
            col(Consignee.code).label("consignee_code"),
            col(s.consignee),
            col(s.quantity),
            col(s.shipped_on),
            *_recorded(s),
        )
        .select_from(s)
        .outerjoin(Lot, col(Lot.id) == s.lot_id)
        .outerjoin(Consignee, col(Consignee.id) == s.consignee_id)
    )


def cases() -> Select[Any]:
    c = LookbackCase
    return (
        select(
            col(c.id),
            _no_import(),
            col(c.case_number),
            col(Donor.donor_code).label("donor"),
            col(c.reason),
            col(c.status),
            col(c.window_start),
            col(c.closed_at),
            col(c.closure),
            col(c.trigger),
            col(c.received_on),
            col(c.timezone),
            col(c.closed_by),
            *_recorded(c),
        )
        .select_from(c)
        .outerjoin(Donor, col(Donor.id) == c.donor_id)
    )


def tasks() -> Select[Any]:
    t = CaseTask
    return (
        select(
            col(t.id),
            _no_import(),
            col(LookbackCase.case_number).label("case"),
            col(t.seq),
            col(t.kind),
            col(Lot.lot_number).label("lot"),
            col(Consignee.code).label("consignee"),
            col(t.due_on),
            col(t.state),
            col(t.decision),
            col(t.note),
            col(t.done_at),
            col(t.done_by),
            *_recorded(t),
        )
        .select_from(t)
        .outerjoin(LookbackCase, col(LookbackCase.id) == t.case_id)
        .outerjoin(Lot, col(Lot.id) == t.lot_id)
        .outerjoin(Consignee, col(Consignee.id) == t.consignee_id)
    )


def holds() -> Select[Any]:
    h = LotHold
    return (
        select(
            col(h.id),
            _no_import(),
            col(Lot.lot_number).label("lot"),
            col(h.id).label("hold"),
            col(LookbackCase.case_number).label("case"),
            col(h.reason),
            col(h.lifted_at),
            col(h.lifted_by),
            col(h.lift_reason),
            *_recorded(h),
        )
        .select_from(h)
        .outerjoin(Lot, col(Lot.id) == h.lot_id)
        .outerjoin(LookbackCase, col(LookbackCase.id) == h.case_id)
    )


def recalls() -> Select[Any]:
    r = Recall
    return (
        select(
            col(r.id),
            _no_import(),
            col(r.recall_number),
            col(Lot.lot_number).label("lot"),
            col(r.recall_class),
            col(r.reason),
            col(r.status),
            col(r.closed_at),
            col(r.closed_by),
            *_recorded(r),
        )
        .select_from(r)
        .outerjoin(Lot, col(Lot.id) == r.lot_id)
    )


def recall_consignees() -> Select[Any]:
    rc = RecallConsignee
    return (
        select(
            col(rc.id),
            _no_import(),
            col(Recall.recall_number).label("recall"),
            col(Consignee.code).label("consignee"),
            col(rc.shipped),
            col(rc.notified_on),
            col(rc.notified_by),
            col(rc.acknowledged_at),
            col(rc.acknowledged_by),
            col(rc.returned),
            *_recorded(rc),
        )
        .select_from(rc)
        .outerjoin(Recall, col(Recall.id) == rc.recall_id)
        .outerjoin(Consignee, col(Consignee.id) == rc.consignee_id)
    )


def findings() -> Select[Any]:
    f = CaseFinding
    return (
        select(
            col(f.id),
            _no_import(),
            col(LookbackCase.case_number).label("case"),
            col(Donation.unit_number).label("unit"),
            col(Pool.pool_number).label("pool"),
            col(f.action),
            *_recorded(f),
        )
        .select_from(f)
        .outerjoin(LookbackCase, col(LookbackCase.id) == f.case_id)
        .outerjoin(Donation, col(Donation.id) == f.donation_id)
        .outerjoin(Pool, col(Pool.id) == f.pool_id)
    )


def users() -> Select[Any]:
    u = AppUser
    return select(
        col(u.id),
        _no_import(),
        col(u.login),
        col(u.full_name),
        col(u.roles),
        col(u.password_hash),
        col(u.disabled_at),
        col(u.disabled_by),
        *_recorded(u),
    )


def corrections() -> Select[Any]:
    c = CorrectionDeviation
    return (
        select(
            col(c.id),
            _no_import(),
            col(Donation.unit_number).label("unit"),
            col(c.donation_version),
            col(c.reference),
            col(Pool.pool_number).label("pool"),
            col(c.changes),
            col(c.reason),
            *_recorded(c),
        )
        .select_from(c)
        .outerjoin(Donation, col(Donation.id) == c.donation_id)
        .outerjoin(Pool, col(Pool.id) == c.pool_id)
    )
