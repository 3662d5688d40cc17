"""A realistic synthetic site, built through the same importers and services as every command.

Two collection centres export donors, donations and screening results; QA imports them, builds two pools of more
than 1,000 distinct donors (and is refused when trying to pool an applicant's unit or a unit still on hold),
tests and releases them, records the viral inactivation steps, makes an intermediate and two final lots and ships
them. Then a late reactive result arrives for a donor whose earlier donations went into a pool: the unit is
rejected, the donor deferred, the units still in the freezer interdicted, and the trace shows where the rest went.

Scenes (:mod:`.scenes`), the site's people and places (:mod:`.cast`), its donors and exported files
(:mod:`.population`). Deterministic for a seed (apart from the timestamps of the run itself).
"""

from .cast import APPROVER, AUDITOR, CENTRES, CONSIGNEES, DEMO_USERS, INVESTIGATOR, RECORDER, DemoUser
from .scenes import DemoResult, LateResult, Tour, build, ensure_empty

__all__ = [
    "APPROVER",
    "AUDITOR",
    "CENTRES",
    "CONSIGNEES",
    "DEMO_USERS",
    "INVESTIGATOR",
    "RECORDER",
    "DemoResult",
    "DemoUser",
    "LateResult",
    "Tour",
    "build",
    "ensure_empty",
]
