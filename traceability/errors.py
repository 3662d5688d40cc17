"""Exit codes and the expected failures that carry them.

Rules and services raise these; only the ``cli`` package catches them, prints the message and exits with the code.
"""

from __future__ import annotations

from datetime import datetime
from enum import IntEnum
from typing import ClassVar


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    USAGE = 2
    RULE_VIOLATION = 3
    NOT_FOUND = 4
    INVALID_INPUT = 5
    CONFLICT = 6
    NOT_PERMITTED = 7


class TraceabilityError(Exception):
    """An expected failure: the CLI prints the message and exits with exit_code."""

    exit_code: ClassVar[ExitCode] = ExitCode.FAILURE


class RuleViolation(TraceabilityError):
    exit_code = ExitCode.RULE_VIOLATION


class NotFound(TraceabilityError):
    exit_code = ExitCode.NOT_FOUND

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key} not found.")
        self.kind, self.key = kind, key


class InvalidInput(TraceabilityError):
    exit_code = ExitCode.INVALID_INPUT


class Conflict(TraceabilityError):
    exit_code = ExitCode.CONFLICT


class ConcurrentChange(Conflict):
    """Another transaction changed the same rows at the same moment (a deadlock or serialization failure)."""


class NotPermitted(TraceabilityError):
    """The person acting may not do this: a role is missing, a duty conflicts, or a signature failed."""

    exit_code = ExitCode.NOT_PERMITTED


class DatabaseUnavailable(TraceabilityError):
    """The database cannot be opened, is read-only, or stayed locked too long."""

    exit_code = ExitCode.FAILURE


# --- not found -------------------------------------------------------------------------------------------------


class EstablishmentNotFound(NotFound):
    def __init__(self, code: str) -> None:
        super().__init__("Establishment", code)


class DonorNotFound(NotFound):
    def __init__(self, donor_code: str) -> None:
        super().__init__("Donor", donor_code)


class UnitNotFound(NotFound):
    def __init__(self, unit_number: str) -> None:
        super().__init__("Unit", unit_number)


class PoolNotFound(NotFound):
    def __init__(self, pool_number: str) -> None:
        super().__init__("Pool", pool_number)


class LotNotFound(NotFound):
    def __init__(self, lot_number: str) -> None:
        super().__init__("Lot", lot_number)


class CaseNotFound(NotFound):
    def __init__(self, case_number: str) -> None:
        super().__init__("Look-back case", case_number)


class ConsigneeNotFound(NotFound):
    def __init__(self, code: str) -> None:
        super().__init__("Consignee", code)


class StepNotFound(NotFound):
    def __init__(self, step_key: str) -> None:
        super().__init__("Step", step_key)


class RecallNotFound(NotFound):
    def __init__(self, recall_number: str) -> None:
        super().__init__("Recall", recall_number)


class NotAConsigneeOfRecall(NotFound):
    def __init__(self, recall_number: str, code: str) -> None:
        TraceabilityError.__init__(
            self, f"Consignee {code} was shipped none of the lots of recall {recall_number}; see recall show."
        )
        self.kind, self.key = "Consignee of recall", code


# --- invalid input ---------------------------------------------------------------------------------------------


class InvalidUnitNumber(InvalidInput):
    def __init__(self, text: str, problem: str) -> None:
        super().__init__(f"Unit number {text!r} is invalid: {problem}")
        self.text, self.problem = text, problem


class InvalidPolicy(InvalidInput):
    pass


class CheckConstraintFailed(InvalidInput):
    """The database refused a value by one of its CHECK constraints (e.g. a schema older than this version)."""

    def __init__(self, constraint: str) -> None:
        super().__init__(
            f"The database refused the change: it breaks its constraint {constraint}; nothing was written. "
            "If the database was made by an older version of plasmatrace, upgrade it with: plasmatrace init"
        )
        self.constraint = constraint


class InvalidImportFile(InvalidInput):
    """A file with at least one bad row; ``problems`` lists every one as FILE:LINE: column: message."""

    def __init__(self, path: str, problems: list[str], *, total: int | None = None, shown: int = 50) -> None:
        count = total if total is not None else len(problems)
        head = "\n".join(problems[:shown])
        more = f"\n... and {count - shown:,} more." if count > shown else ""
        super().__init__(
            f"{path}: {count:,} problem{'s' if count != 1 else ''}; nothing was loaded.\n{head}{more}\n"
            "Fix the file, or load the good rows with --skip-invalid (the bad ones go to a rejects file)."
        )
        self.path, self.problems, self.total = path, problems, count


# --- conflicts -------------------------------------------------------------------------------------------------


class DuplicateKey(Conflict):
    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"{kind} {key} already exists.")
        self.kind, self.key = kind, key


class UnitAlreadyPooled(Conflict):
    def __init__(self, unit_number: str, pool_number: str | None) -> None:
        where = f"pool {pool_number}" if pool_number else "another pool"
        super().__init__(f"Unit {unit_number} is already in {where}; a unit can be in one pool only.")
        self.unit_number, self.pool_number = unit_number, pool_number


class UnitsAlreadyPooled(Conflict):
    def __init__(self, pooled: list[tuple[str, str | None]], *, shown: int = 20) -> None:
        lines = "\n".join(f"  {unit}: in pool {pool}" for unit, pool in pooled[:shown])
        more = f"\n  ... and {len(pooled) - shown:,} more." if len(pooled) > shown else ""
        super().__init__(
            f"{len(pooled):,} units are already pooled; a unit can be in one pool only. Nothing was changed.\n"
            + lines
            + more
        )
        self.pooled = pooled


# --- rules -----------------------------------------------------------------------------------------------------


class IneligibleUnits(RuleViolation):
    """One or more units may not be pooled; ``reasons`` maps each unit number to every reason."""

    def __init__(
        self, pool_number: str, reasons: dict[str, list[str]], *, shown: int = 50, closing: bool = False
    ) -> None:
        lines = [f"  {unit}: {'; '.join(why)}" for unit, why in list(reasons.items())[:shown]]
        more = f"\n  ... and {len(reasons) - shown:,} more units." if len(reasons) > shown else ""
        noun = "unit is" if len(reasons) == 1 else "units are"
        if closing:
            units = " ".join(list(reasons)[:20]) + (" ..." if len(reasons) > 20 else "")
            head = (
                f"Pool {pool_number} cannot close: {len(reasons):,} member {noun} no longer eligible; "
                "nothing was changed.\n"
            )
            more += f"\nTake them out first: plasmatrace pool remove {pool_number} {units} --reason TEXT"
        else:
            head = f"Pool {pool_number}: {len(reasons):,} {noun} not eligible for pooling; nothing was changed.\n"
        super().__init__(head + "\n".join(lines) + more)
        self.pool_number, self.reasons = pool_number, reasons


class NotEnoughDonors(RuleViolation):
    def __init__(self, pool_number: str, *, found: int, required: int) -> None:
        super().__init__(f"Pool {pool_number} has {found:,} distinct donors; {required:,} are required.")
        self.pool_number, self.found, self.required = pool_number, found, required


class WrongState(RuleViolation):
    pass


class PoolNotReleasable(RuleViolation):
    def __init__(self, pool_number: str, problems: list[str]) -> None:
        super().__init__(f"Pool {pool_number} cannot be released:\n" + "\n".join(f"  {p}" for p in problems))
        self.pool_number, self.problems = pool_number, problems


class LotNotReleasable(RuleViolation):
    def __init__(self, lot_number: str, problems: list[str]) -> None:
        super().__init__(f"Lot {lot_number} cannot be released:\n" + "\n".join(f"  {p}" for p in problems))
        self.lot_number, self.problems = lot_number, problems


class LotNotShippable(RuleViolation):
    def __init__(self, lot_number: str, problems: list[str]) -> None:
        super().__init__(f"Lot {lot_number} cannot be shipped:\n" + "\n".join(f"  {p}" for p in problems))
        self.lot_number, self.problems = lot_number, problems


class RecallIncomplete(RuleViolation):
    """A recall closes only when every consignee was notified and acknowledged."""

    def __init__(self, recall_number: str, missing: list[str]) -> None:
        super().__init__(f"Recall {recall_number} cannot be closed yet:\n" + "\n".join(f"  {m}" for m in missing))
        self.recall_number, self.missing = recall_number, missing


class OverBalance(RuleViolation):
    """A draw or shipment larger than what is left of a pool or lot."""


class QuantityNotRecorded(RuleViolation):
    """A lot without a recorded quantity cannot be drawn from or shipped: its balance is unknown."""


class CorrectionNeedsDeviation(RuleViolation):
    """A correction to a unit in a closed or released pool must name a deviation."""


class InputNotReleased(RuleViolation):
    pass


class LineageCycle(RuleViolation):
    pass


class WrongProduct(RuleViolation):
    """A final lot whose lineage holds a pool made for another product."""


# --- not permitted ---------------------------------------------------------------------------------------------


class RoleRequired(NotPermitted):
    def __init__(self, login: str, *, role: str, doing: str) -> None:
        super().__init__(f"{login} may not {doing}: that needs the role {role}; nothing was changed.")
        self.login, self.role, self.doing = login, role, doing


class ActorNotLogin(NotPermitted):
    def __init__(self, declared: str, login: str) -> None:
        super().__init__(
            f"The actor is the database login {login}; --actor/PLASMATRACE_ACTOR names {declared}. "
            f"Connect as {declared} to act as them; nothing was changed."
        )
        self.declared, self.login = declared, login


class UnknownUser(NotPermitted):
    def __init__(self, login: str) -> None:
        super().__init__(f"{login} is not a plasmatrace user here; an admin adds it with `plasmatrace user add`.")
        self.login = login


class UserDisabled(NotPermitted):
    def __init__(self, login: str, disabled_at: str) -> None:
        super().__init__(f"User {login} was disabled on {disabled_at}; it may not act or sign.")
        self.login = login


class DutiesNotSeparated(NotPermitted):
    """Separation of duties: the releaser did part of the work being released."""

    def __init__(self, kind: str, key: str, *, login: str, conflicts: list[str]) -> None:
        super().__init__(
            f"{kind} {key} cannot be released by {login}, who "
            + "; ".join(conflicts)
            + " (policy release.separate_duties); another approver must release it."
        )
        self.kind, self.key, self.login, self.conflicts = kind, key, login, conflicts


class SignatureFailed(NotPermitted):
    """A signature attempt whose password was wrong; the CLI records the attempt in a transaction of its own."""

    def __init__(self, login: str, *, kind: str, key: str, meaning: str, failures: int, locked: bool) -> None:
        tail = (
            "signing is now locked for 15 minutes"
            if locked
            else f"{failures} failed attempt(s) in a row; 3 lock signing"
        )
        super().__init__(f"Signature of {login} on {kind} {key} failed: the password is wrong; {tail}.")
        self.login, self.kind, self.key, self.meaning, self.failures, self.locked = (
            login,
            kind,
            key,
            meaning,
            failures,
            locked,
        )


class SigningLocked(NotPermitted):
    def __init__(self, login: str, until: str) -> None:
        super().__init__(
            f"Signing by {login} is locked until {until} after 3 failed signature attempts in a row (21 CFR 11.300(d))."
        )
        self.login, self.until = login, until


class NotYetRecorded(NotFound):
    """A trace or report as of a time before the record existed (``--as-of``)."""

    def __init__(self, kind: str, key: str, created_at: datetime, as_of: datetime) -> None:
        TraceabilityError.__init__(
            self, f"{kind} {key} was first recorded at {created_at.isoformat()}, after {as_of.isoformat()}."
        )
        self.kind, self.key = kind, key
