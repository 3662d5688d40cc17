"""Logins, roles, separation of duties and electronic signatures on a PostgreSQL server that checks passwords."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from tests.factories import ACTOR, APPROVER, NOW, bulk_units
from tests.identity.conftest import Site
from traceability import audit
from traceability.db import make_engine
from traceability.errors import ExitCode
from traceability.models import ResultValue
from traceability.services import pools

NOT_PERMITTED = ExitCode.NOT_PERMITTED


@contextmanager
def superuser(site: Site) -> Iterator[Session]:
    engine = make_engine(site.admin_url)
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            yield session
    finally:
        engine.dispose()


def closed_pool(site: Site, number: str) -> None:
    """A closed pool of 1,000 qualified donors' units, set up by the superuser; its tests are the test's to record."""
    with superuser(site) as session:
        units = bulk_units(session, donors_count=1000, units_per_donor=2)
        pools.create_pool(session, pool_number=number, product="ivig", actor=ACTOR)
        pools.add_units(session, pool_number=number, unit_numbers=units[::2], actor=ACTOR, now=NOW)
        pools.close_pool(session, pool_number=number, actor=ACTOR, now=NOW)


@pytest.fixture(scope="module")
def released_pool(site: Site) -> str:
    closed_pool(site, "P-BASE")
    with superuser(site) as session:
        for marker in ("hbsag", "anti-hiv", "hcv-rna"):
            pools.test_pool(
                session, pool_number="P-BASE", marker=marker, result=ResultValue.NONREACTIVE, tested_at=NOW, actor=ACTOR
            )
        pools.release_pool(session, pool_number="P-BASE", actor=APPROVER)
    return "P-BASE"


def intermediate_lot(site: Site, who: str, lot: str, draw: str) -> None:
    site.run(who, "lot", "create", lot, "--product", "ivig", "--pool", draw, "--kind", "intermediate")


def raw_sql_is_refused(site: Site, who: str, statement: str) -> str:
    with pytest.raises(DBAPIError) as refused:
        site.sql(who, statement)
    assert getattr(refused.value.orig, "sqlstate", None) == "42501", refused.value  # insufficient_privilege
    return str(refused.value.orig)


def test_an_auditor_login_cannot_write_by_command_or_by_raw_sql(site: Site, released_pool: str) -> None:
    refused = site.run(
        "aud", "establishment", "add", "C-AUD", "--name", "X", "--kind", "collection", code=NOT_PERMITTED
    )
    assert site.login("aud") in refused.stderr and "plasmatrace_recorder" in refused.stderr
    raw_sql_is_refused(
        site,
        "aud",
        "INSERT INTO establishment (code, name, kind, created_at, created_by) "
        "VALUES ('C-RAW', 'raw', 'collection', now(), session_user)",
    )
    raw_sql_is_refused(site, "aud", "UPDATE pool SET status = 'quarantined'")
    raw_sql_is_refused(site, "aud", "DELETE FROM donor")
    raw_sql_is_refused(
        site,
        "aud",
        "INSERT INTO audit_event (seq, occurred_at, actor, action, entity_type, entity_key, prev_hash, hash) "
        "VALUES (99999, now(), session_user, 'x', 'x', 'x', 'h1', "
        "'h2')",
    )
    # Reading and verifying is what an auditor is for.
    assert "intact" in site.run("aud", "audit", "verify").stderr
    assert site.run("aud", "pool", "show", released_pool, "--format", "json").stdout


def test_a_recorder_cannot_release_by_command_or_by_raw_sql(site: Site) -> None:
    closed_pool(site, "P-REC")
    for marker in ("hbsag", "anti-hiv", "hcv-rna"):
        site.run("rec", "pool", "test", "P-REC", "--marker", marker, "--result", "NR")
    refused = site.run("rec", "pool", "release", "P-REC", code=NOT_PERMITTED)
    assert "plasmatrace_approver" in refused.stderr and site.login("rec") in refused.stderr
    message = raw_sql_is_refused(site, "rec", "UPDATE pool SET status = 'released' WHERE pool_number = 'P-REC'")
    assert "plasmatrace_approver" in message
    # The approver may, and the pool is then released once, by them.
    done = site.run("appr", "pool", "release", "P-REC")
    assert "P-REC released" in done.stderr
    shown = json.loads(site.run("appr", "pool", "show", "P-REC", "--format", "json").stdout)
    assert shown["status"] == "released"


def test_a_database_refusal_is_exit_7_with_the_databases_reason_never_a_traceback(site: Site) -> None:
    # A login in no plasmatrace role: the command needs no role to read, the database's GRANTs refuse it.
    bare = site.login("bare")
    site.sql("postgres", f"CREATE ROLE \"{bare}\" LOGIN PASSWORD 'bare-pass-12'")
    refused = site.run(
        "bare", "lot", "list", code=NOT_PERMITTED, env={"PLASMATRACE_DB": site.url("bare", "bare-pass-12")}
    )
    assert "permission denied" in refused.stderr and bare in refused.stderr
    # A role that may not do a thing is told which role would.
    refused = site.run("appr", "donor", "add", "D-NOPE", "--establishment", "X", code=NOT_PERMITTED)
    assert "plasmatrace_recorder" in refused.stderr


def test_the_creator_of_a_lot_or_recorder_of_its_steps_cannot_release_it(site: Site, released_pool: str) -> None:
    intermediate_lot(site, "appr2", "INT-MINE", f"{released_pool}=10")
    refused = site.run("appr2", "lot", "release", "INT-MINE", code=NOT_PERMITTED)
    assert f"{site.login('appr2')}, who created lot INT-MINE" in refused.stderr
    assert "release.separate_duties" in refused.stderr

    intermediate_lot(site, "rec", "INT-STEP", f"{released_pool}=10")
    site.run(
        "appr2",
        "step",
        "add",
        "--lot",
        "INT-STEP",
        "--method",
        "low-ph",
        "--started-at",
        "2026-06-02T08:00Z",
        "--ended-at",
        "2026-06-02T10:00Z",
        "--lrv",
        "enveloped=3",
    )
    refused = site.run("appr2", "lot", "release", "INT-STEP", code=NOT_PERMITTED)
    assert "recorded step INT-STEP-S1" in refused.stderr
    # Nothing was written by the refusals; someone else may release.
    assert json.loads(site.run("aud", "lot", "show", "INT-STEP", "--format", "json").stdout)["status"] == "pending"
    site.run("appr", "lot", "release", "INT-STEP")
    site.run("appr", "lot", "release", "INT-MINE")


def test_who_recorded_a_pools_tests_does_not_release_it(site: Site) -> None:
    closed_pool(site, "P-DUTY")
    for marker in ("hbsag", "anti-hiv"):
        site.run("rec", "pool", "test", "P-DUTY", "--marker", marker, "--result", "NR")
    site.run("appr2", "pool", "test", "P-DUTY", "--marker", "hcv-rna", "--result", "NR")
    refused = site.run("appr2", "pool", "release", "P-DUTY", code=NOT_PERMITTED)
    assert "recorded pool test hcv-rna v1 of pool P-DUTY" in refused.stderr
    site.run("appr", "pool", "release", "P-DUTY")


def test_a_wrong_password_fails_the_signature_is_recorded_and_the_third_locks_signing(
    site: Site, released_pool: str
) -> None:
    login = site.login("lock")
    site.run(
        "postgres", "user", "add", login, "--role", "approver", "--full-name", "Lena Lock", "--password-stdin",
        stdin="lock-pass-12\n",
    )  # fmt: skip
    intermediate_lot(site, "rec", "INT-LOCK", f"{released_pool}=5")
    for attempt in (1, 2, 3):
        failed = site.run(
            "lock", "lot", "release", "INT-LOCK", "--sign", "--password-stdin", stdin="not-my-password\n",
            code=NOT_PERMITTED, env={"PLASMATRACE_DB": site.url("lock", "lock-pass-12")},
        )  # fmt: skip
        assert "password is wrong" in failed.stderr
        assert ("locked for 15 minutes" in failed.stderr) == (attempt == 3)
    # The release rolled back each time; the failures were committed on their own, by the login.
    assert json.loads(site.run("aud", "lot", "show", "INT-LOCK", "--format", "json").stdout)["status"] == "pending"
    history = json.loads(site.run("aud", "audit", "log", "--entity", "user", "--key", login, "--format", "json").stdout)
    failures = [e for e in history if e["action"] == "signature.failed"]
    assert len(failures) == 3 and {e["actor"] for e in failures} == {login}
    # Now even the right password is refused until the lock ends.
    locked = site.run(
        "lock", "lot", "release", "INT-LOCK", "--sign", "--password-stdin", stdin="lock-pass-12\n",
        code=NOT_PERMITTED, env={"PLASMATRACE_DB": site.url("lock", "lock-pass-12")},
    )  # fmt: skip
    assert "locked until" in locked.stderr
    assert "intact" in site.run("aud", "audit", "verify").stderr


def test_a_valid_signature_shows_name_meaning_and_time_and_a_later_change_flags_it(
    site: Site, released_pool: str
) -> None:
    intermediate_lot(site, "rec", "INT-SIGN", f"{released_pool}=7")
    done = site.run("appr", "lot", "release", "INT-SIGN", "--sign", "--meaning", "approved", "--password-stdin",
                    stdin="approver-pass-1\n")  # fmt: skip
    assert "Signed by Anna Approver" in done.stderr
    shown = json.loads(site.run("aud", "lot", "show", "INT-SIGN", "--format", "json").stdout)
    [signature] = shown["signatures"]
    assert signature["full_name"] == "Anna Approver" and signature["login"] == site.login("appr")
    assert signature["meaning"] == "approved" and signature["signed_at"].startswith("20")
    assert signature["changed_since_signing"] is False and len(signature["content_sha256"]) == 64
    traced = json.loads(site.run("aud", "trace", "lot", "INT-SIGN", "--format", "json").stdout)
    assert traced["signatures"] == shown["signatures"]
    assert "Anna Approver" in site.run("aud", "lot", "show", "INT-SIGN").stdout
    # The signature is an event of the chain, by the signer.
    events = json.loads(site.run("aud", "audit", "log", "--key", "INT-SIGN", "--format", "json").stdout)
    applied = [e for e in events if e["action"] == "signature.applied"]
    assert len(applied) == 1 and applied[0]["actor"] == site.login("appr")
    # A correction of the lot afterwards: the signature no longer covers what the record says.
    site.sql("postgres", "UPDATE lot SET status_reason = 'relabelled' WHERE lot_number = 'INT-SIGN'")
    after = json.loads(site.run("aud", "lot", "show", "INT-SIGN", "--format", "json").stdout)
    assert after["signatures"][0]["changed_since_signing"] is True
    listed = json.loads(site.run("aud", "signature", "list", "--key", "INT-SIGN", "--format", "json").stdout)
    assert listed[0]["changed_since_signing"] is True
    assert "CHANGED SINCE SIGNING" in site.run("aud", "lot", "show", "INT-SIGN").stdout


def test_a_later_pool_test_flags_the_pool_release_signature(site: Site) -> None:
    closed_pool(site, "P-SIGN")
    for marker in ("hbsag", "anti-hiv", "hcv-rna"):
        site.run("rec", "pool", "test", "P-SIGN", "--marker", marker, "--result", "NR")
    site.run("appr", "pool", "release", "P-SIGN", "--sign", "--password-stdin", stdin="approver-pass-1\n")
    before = json.loads(site.run("aud", "pool", "show", "P-SIGN", "--format", "json").stdout)["signatures"]
    assert [s["changed_since_signing"] for s in before] == [False]
    site.run("rec", "pool", "test", "P-SIGN", "--marker", "hbsag", "--result", "NR")  # a repeat test: version 2
    after = json.loads(site.run("aud", "pool", "show", "P-SIGN", "--format", "json").stdout)["signatures"]
    assert [s["changed_since_signing"] for s in after] == [True]


def test_the_audit_actor_is_the_login_even_when_actor_or_the_environment_says_otherwise(site: Site) -> None:
    rec = site.login("rec")
    forged = site.run(
        "rec", "--actor", "QA Director (forged)", "establishment", "add", "C-F", "--name", "F", "--kind", "collection",
        code=NOT_PERMITTED,
    )  # fmt: skip
    assert "QA Director (forged)" in forged.stderr and rec in forged.stderr
    site.run(
        "rec", "establishment", "add", "C-F", "--name", "F", "--kind", "collection",
        env={"PLASMATRACE_ACTOR": "someone.else"}, code=NOT_PERMITTED,
    )  # fmt: skip
    site.run(
        "rec", "establishment", "add", "C-F", "--name", "F", "--kind", "collection", env={"PLASMATRACE_ACTOR": rec}
    )
    # Through the library, whatever actor the caller passes, the event records the login ...
    engine = make_engine(site.url("rec"))
    try:
        with Session(engine) as session, session.begin():
            event = audit.record(
                session, action="signature.failed", entity_type="user", entity_key="N-1", actor="mallory"
            )
            assert event.actor == rec
        # ... and the database refuses an event naming anyone else, even from a login allowed to append.
        with pytest.raises(DBAPIError) as refused, engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO audit_event (seq, occurred_at, actor, action, entity_type, entity_key, prev_hash, "
                    "hash) VALUES (99998, now(), 'mallory', 'x', 'x', 'x', "
                    "'h3', 'h4')"
                )
            )
        assert "names the actor mallory" in str(refused.value.orig)
    finally:
        engine.dispose()
    events = json.loads(site.run("aud", "audit", "log", "--key", "C-F", "--format", "json").stdout)
    assert [e["actor"] for e in events] == [rec]
    with superuser(site) as session:
        created_by = session.execute(text("SELECT created_by FROM establishment WHERE code = 'C-F'")).scalar_one()
    assert created_by == rec


def test_only_an_admin_adds_users_and_a_disabled_login_can_neither_connect_nor_sign(
    site: Site, released_pool: str
) -> None:
    refused = site.run(
        "rec", "user", "add", "x_nobody", "--role", "approver", "--full-name", "X", "--password-stdin",
        stdin="password-123\n", code=NOT_PERMITTED,
    )  # fmt: skip
    assert "plasmatrace_admin" in refused.stderr
    login = site.login("gone")
    site.run(
        "postgres", "user", "add", login, "--role", "approver", "--full-name", "Gina Gone", "--password-stdin",
        stdin="gone-pass-12\n",
    )  # fmt: skip
    gone = {"PLASMATRACE_DB": site.url("gone", "gone-pass-12")}
    intermediate_lot(site, "rec", "INT-GONE", f"{released_pool}=3")
    site.run("gone", "lot", "release", "INT-GONE", "--sign", "--password-stdin", stdin="gone-pass-12\n", env=gone)
    site.run("postgres", "user", "disable", login, "--reason", "left the company")
    # Its sessions still open are refused by plasmatrace; a new connection by PostgreSQL itself.
    still_open = site.run("gone", "lot", "list", env=gone, code=NOT_PERMITTED)
    assert f"User {login} was disabled" in still_open.stderr
    site.forget_connections()
    cannot = site.run("gone", "lot", "list", env=gone, code=NOT_PERMITTED)
    assert "not permitted to log in" in cannot.stderr and "gone-pass-12" not in cannot.stderr
    wrong = site.run(
        "rec", "lot", "list", env={"PLASMATRACE_DB": site.url("rec", "wrong-password")}, code=NOT_PERMITTED
    )
    assert "password authentication failed" in wrong.stderr and "wrong-password" not in wrong.stderr
    users = json.loads(site.run("aud", "user", "list", "--format", "json").stdout)
    assert [u["disabled_at"] is not None for u in users if u["login"] == login] == [True]
    # Its records keep its printed name.
    kept = json.loads(site.run("aud", "signature", "list", "--key", "INT-GONE", "--format", "json").stdout)
    assert kept[0]["full_name"] == "Gina Gone"


def test_a_reactive_result_opens_a_case_an_investigator_closes_signed_and_a_recorder_may_not_open_one(
    site: Site,
) -> None:
    with superuser(site) as session:
        units = bulk_units(session, donors_count=1, units_per_donor=2)
        donor = session.execute(
            text("SELECT d.donor_code FROM donor d JOIN donation u ON u.donor_id = d.id WHERE u.unit_number = :n"),
            {"n": units[0]},
        ).scalar_one()
    refused = site.run("rec", "lookback", "open", donor, "--reason", "PDI", code=NOT_PERMITTED)
    assert "plasmatrace_investigator" in refused.stderr
    # The recorder's reactive result opens the case by itself; the investigator works it and closes it.
    opened = site.run("rec", "result", "add", units[1], "--marker", "anti-hcv", "--result", "R")
    case = next(w for w in opened.stderr.split() if w.startswith("LB-"))
    message = raw_sql_is_refused(site, "appr", "UPDATE lookback_case SET status = 'closed'")
    assert "permission denied" in message
    joined = site.run(
        "inv", "lookback", "open", donor, "--trigger", "pdi", "--reason", "PDI: HCV RNA reactive elsewhere"
    )
    assert f"already has an open look-back case, {case}" in joined.stderr
    # The recorder inserted the case's tasks; ending one by raw SQL is the investigator's, as the trigger says.
    message = raw_sql_is_refused(site, "rec", "UPDATE case_task SET state = 'done', note = 'x'")
    assert "needs the role plasmatrace_investigator" in message
    site.run("inv", "lookback", "task", case, "1", "--done", "--note", "records reviewed, nothing pooled")
    closed = site.run("inv", "lookback", "close", case, "--reason", "no pooled units", "--sign", "--meaning",
                      "responsible", "--password-stdin", stdin="investigate-1\n")  # fmt: skip
    assert "Signed by Ivo Investigator" in closed.stderr
    signed = json.loads(site.run("aud", "signature", "list", "--key", case, "--format", "json").stdout)
    assert [(s["entity_type"], s["meaning"], s["changed_since_signing"]) for s in signed] == [
        ("lookback_case", "responsible", False)
    ]


def test_a_signature_row_naming_another_login_is_refused_by_the_database(site: Site) -> None:
    message = raw_sql_is_refused(
        site,
        "appr",
        "INSERT INTO signature (audit_event_id, entity_type, entity_key, login, full_name, meaning, signed_at, "
        "content_sha256, created_at, created_by) SELECT id, 'lot', 'X', 'someone_else', 'Someone', 'approved', now(), "
        "'h', now(), session_user FROM audit_event ORDER BY seq DESC LIMIT 1",
    )
    assert "cannot sign as someone_else" in message


def test_an_admin_login_adds_a_user_who_can_then_log_in(site: Site) -> None:
    admin = site.login("adm")
    site.run("postgres", "user", "add", admin, "--role", "admin", "--full-name", "Ada Admin", "--password-stdin",
             stdin="adm-pass-1\n")  # fmt: skip
    newcomer = site.login("new")
    site.run("adm", "user", "add", newcomer, "--role", "auditor", "--full-name", "Nils New", "--password-stdin",
             stdin="new-pass-12\n")  # fmt: skip
    listed = json.loads(site.run("new", "user", "list", "--format", "json", env={
        "PLASMATRACE_DB": site.url("new", "new-pass-12")}).stdout)  # fmt: skip
    assert [u["roles"] for u in listed if u["login"] == newcomer] == ["auditor"]


def test_an_investigator_runs_a_recall_drill_and_a_recorder_or_auditor_may_not(site: Site) -> None:
    with superuser(site) as session:
        units = bulk_units(session, donors_count=1, units_per_donor=2)
        donor = session.execute(
            text("SELECT d.donor_code FROM donor d JOIN donation u ON u.donor_id = d.id WHERE u.unit_number = :n"),
            {"n": units[0]},
        ).scalar_one()
    for who in ("rec", "aud"):
        refused = site.run(who, "recall", "drill", "--donor", donor, code=NOT_PERMITTED)
        assert "plasmatrace_investigator" in refused.stderr
    refused = site.run("rec", "recall", "open", "IVG-NONE", "--class", "I", "--reason", "x", code=NOT_PERMITTED)
    assert "plasmatrace_investigator" in refused.stderr
    raw_sql_is_refused(
        site,
        "rec",
        "INSERT INTO recall_drill (created_at, created_by, subject, subject_key, duration_ms, answer_sha256, "
        "units, pools, lots, consignees, audit_checkpoint) "
        "VALUES (now(), session_user, 'donor', 'X', 1, 'x', 0, 0, 0, 0, 'x')",
    )
    drilled = json.loads(site.run("inv", "recall", "drill", "--donor", donor, "--format", "json").stdout)
    assert drilled["units_to_stop"] == units
    kept = json.loads(site.run("aud", "recall", "drills", "--format", "json").stdout)
    assert [(d["by"], d["key"]) for d in kept][-1:] == [(site.login("inv"), donor)]
