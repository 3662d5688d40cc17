"""Lineage traces, forward from a donor or unit and backward from a lot or pool, and look-back cases.

One module per trace (``donor``, ``unit``, ``pool``, ``lot``, ``case``); the read models they share are in
``lines`` and the queries they share in ``shared``. Each trace runs a fixed number of statements whatever the size
of the pools (joins, recursive CTEs and GROUP BYs, never one statement per unit) and returns plain dataclasses
that outlive the session; ``as_json()`` gives the keys of SPEC §5.
"""

from .case import CaseTrace, list_cases, trace_case
from .donor import DonationLine, DonorTrace, trace_donor
from .donor_statement import DONOR_TRACE
from .lines import (
    ClearancePathLine,
    DeferralLine,
    DeviationLine,
    FindingLine,
    InputLine,
    LotLine,
    MemberLine,
    PoolLine,
    PoolTestLine,
    ResultLine,
    ShipmentLine,
    SignedLine,
    StepLine,
)
from .lot import LotTrace, trace_lot
from .pool import PoolTrace, trace_pool
from .unit import UnitTrace, trace_unit

__all__ = [
    "DONOR_TRACE",
    "CaseTrace",
    "ClearancePathLine",
    "DeferralLine",
    "DeviationLine",
    "DonationLine",
    "DonorTrace",
    "FindingLine",
    "InputLine",
    "LotLine",
    "LotTrace",
    "MemberLine",
    "PoolLine",
    "PoolTestLine",
    "PoolTrace",
    "ResultLine",
    "ShipmentLine",
    "SignedLine",
    "StepLine",
    "UnitTrace",
    "list_cases",
    "trace_case",
    "trace_donor",
    "trace_lot",
    "trace_pool",
    "trace_unit",
]
