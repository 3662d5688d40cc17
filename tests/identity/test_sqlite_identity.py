"""Users, roles, separation of duties and signatures on SQLite, the single-workstation database: the actor is the
OS user or --actor, and signatures check an Argon2id signing password."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session

from tests.cli.conftest import Cli, dispose_engines
from tests.factories import ACTOR, NOW, bulk_units
from traceability.db import make_engine
from traceability.errors import ExitCode
from traceability.models import AppUser
from traceability.services import pools

NOT_PERMITTED = ExitCode.NOT_PERMITTED


class Workstation(Cli):
    def as_(self, actor: str, *args: str, code: int = ExitCode.OK, stdin: str | None = None) -> object:
        result = self.runner.invoke(
            __import__("cli").app, ["--actor", actor, *args], env={**self.env, "PLASMATRACE_POLICY": None}, input=stdin
        )
        shown = f"{actor}: plasmatrace {' '.join(args)}\n{result.stdout}\n{result.stderr}"
        assert result.exit_code == code, shown
        assert "Traceback" not in result.output, shown
        return result


@pytest.fixture(name="ws")
def ws_fixture(sqlite_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workstation]:
    monkeypatch.chdir(tmp_path)
    shutil.copy(sqlite_template, tmp_path / "site.db")
    url = f"sqlite:///{tmp_path / 'site.db'}"
    here = Workstation(db_url=url, workdir=tmp_path)
    here.as_("boss", "user", "add", "boss", "--role", "admin", "--full-name", "Bo Boss", "--password-stdin",
             stdin="boss-pass-1\n")  # fmt: skip
    for login, role, name in (("rita", "recorder", "Rita Recorder"), ("anna", "approver", "Anna Approver")):
        here.as_("boss", "user", "add", login, "--role", role, "--full-name", name, "--password-stdin",
                 stdin=f"{login}-pass-1\n")  # fmt: skip
    here.as_("boss", "user", "add", "bert", "--role", "recorder", "--role", "approver", "--full-name", "Bert Both",
             "--password-stdin", stdin="bert-pass-1\n")  # fmt: skip
    yield here
    dispose_engines(url, tmp_path)


def closed_pool(ws: Workstation, number: str) -> None:
    engine = make_engine(ws.db_url)
    with Session(engine) as session, session.begin():
        units = bulk_units(session, donors_count=1000, units_per_donor=2)
        pools.create_pool(session, pool_number=number, product="ivig", actor=ACTOR)
        pools.add_units(session, pool_number=number, unit_numbers=units[::2], actor=ACTOR, now=NOW)
        pools.close_pool(session, pool_number=number, actor=ACTOR, now=NOW)
    engine.dispose()


def test_the_signing_password_is_kept_as_an_argon2id_hash(ws: Workstation) -> None:
    engine = make_engine(ws.db_url)
    with Session(engine) as session:
        stored = session.execute(select(AppUser.password_hash).where(AppUser.login == "anna")).scalar_one()
    engine.dispose()
    assert stored.startswith("$argon2id$") and "anna-pass-1" not in stored


def test_once_users_exist_an_unknown_actor_may_not_write_and_a_role_is_needed(ws: Workstation) -> None:
    unknown = ws.as_("mallory", "establishment", "add", "C-1", "--name", "C", "--kind", "collection",
                     code=NOT_PERMITTED)  # fmt: skip
    assert "mallory is not a plasmatrace user" in unknown.stderr  # type: ignore[attr-defined]
    refused = ws.as_("anna", "establishment", "add", "C-1", "--name", "C", "--kind", "collection", code=NOT_PERMITTED)
    assert "plasmatrace_recorder" in refused.stderr  # type: ignore[attr-defined]
    ws.as_("rita", "establishment", "add", "C-1", "--name", "C", "--kind", "collection")
    refused = ws.as_("rita", "user", "add", "eve", "--role", "admin", "--full-name", "Eve", "--password-stdin",
                     stdin="eve-pass-12\n", code=NOT_PERMITTED)  # fmt: skip
    assert "plasmatrace_admin" in refused.stderr  # type: ignore[attr-defined]


def test_separation_of_duties_and_a_signed_release_on_sqlite(ws: Workstation) -> None:
    closed_pool(ws, "P-1")
    for marker in ("hbsag", "anti-hiv"):
        ws.as_("rita", "pool", "test", "P-1", "--marker", marker, "--result", "NR")
    ws.as_("bert", "pool", "test", "P-1", "--marker", "hcv-rna", "--result", "NR")
    refused = ws.as_("rita", "pool", "release", "P-1", code=NOT_PERMITTED)
    assert "plasmatrace_approver" in refused.stderr  # type: ignore[attr-defined]
    refused = ws.as_("bert", "pool", "release", "P-1", code=NOT_PERMITTED)
    assert "bert, who recorded pool test hcv-rna v1 of pool P-1" in refused.stderr  # type: ignore[attr-defined]
    wrong = ws.as_("anna", "pool", "release", "P-1", "--sign", "--password-stdin", stdin="bert-pass-1\n",
                   code=NOT_PERMITTED)  # fmt: skip
    assert "password is wrong" in wrong.stderr  # type: ignore[attr-defined]
    assert json.loads(ws.as_("anna", "pool", "show", "P-1", "--format", "json").stdout)["status"] == "closed"  # type: ignore[attr-defined]
    ws.as_("anna", "pool", "release", "P-1", "--sign", "--meaning", "approved", "--password-stdin",
           stdin="anna-pass-1\n")  # fmt: skip
    shown = json.loads(ws.as_("anna", "pool", "show", "P-1", "--format", "json").stdout)  # type: ignore[attr-defined]
    assert [(s["full_name"], s["meaning"], s["changed_since_signing"]) for s in shown["signatures"]] == [
        ("Anna Approver", "approved", False)
    ]
    report = ws.workdir / "P-1.html"
    ws.as_("anna", "report", "pool", "P-1", "--format", "html", "--output", str(report))
    assert "Anna Approver" in report.read_text(encoding="utf-8")  # reports print the signature too
    # The failed attempt stayed on record although its release rolled back.
    log = json.loads(ws.as_("anna", "audit", "log", "--entity", "user", "--key", "anna", "--format", "json").stdout)  # type: ignore[attr-defined]
    assert [e["action"] for e in log] == ["user.added", "signature.failed"]
    assert "intact" in ws.as_("anna", "audit", "verify").stderr  # type: ignore[attr-defined]


def test_three_failed_signatures_lock_signing_and_a_success_resets_the_count(ws: Workstation) -> None:
    ws.as_("rita", "establishment", "add", "C-1", "--name", "C", "--kind", "collection")
    ws.as_("rita", "donor", "add", "D-1", "--establishment", "C-1", "--registered-on", "2026-01-01")
    for n in (1, 2, 3):
        ws.as_(
            "rita", "donor", "defer", "D-1", "--reason", f"travel {n}", "--from", "2026-02-01", "--until", "2026-09-01"
        )

    def lift(number: int, password: str, code: int = ExitCode.OK) -> str:
        result = ws.as_("anna", "donor", "lift", "D-1", "--deferral", str(number), "--reason", "cleared", "--sign",
                        "--password-stdin", stdin=password + "\n", code=code)  # fmt: skip
        return str(result.stderr)  # type: ignore[attr-defined]

    assert "1 failed attempt(s) in a row" in lift(1, "nope", NOT_PERMITTED)
    assert "2 failed attempt(s) in a row" in lift(1, "nope", NOT_PERMITTED)
    lift(1, "anna-pass-1")  # a success: the count starts again
    assert "1 failed attempt(s) in a row" in lift(2, "nope", NOT_PERMITTED)
    assert "2 failed attempt(s) in a row" in lift(2, "nope", NOT_PERMITTED)
    assert "locked for 15 minutes" in lift(2, "nope", NOT_PERMITTED)
    assert "locked until" in lift(2, "anna-pass-1", NOT_PERMITTED)
    assert "locked until" in lift(3, "anna-pass-1", NOT_PERMITTED)
    signed = json.loads(ws.as_("rita", "signature", "list", "--format", "json").stdout)  # type: ignore[attr-defined]
    assert [(s["entity_type"], s["entity_key"], s["full_name"]) for s in signed] == [
        ("deferral", "D-1#1", "Anna Approver")
    ]


def test_a_disabled_user_may_not_act_or_sign_and_keeps_its_name(ws: Workstation) -> None:
    ws.as_("boss", "user", "disable", "rita", "--reason", "left")
    refused = ws.as_("rita", "establishment", "add", "C-9", "--name", "C", "--kind", "collection", code=NOT_PERMITTED)
    assert "User rita was disabled" in refused.stderr  # type: ignore[attr-defined]
    users = json.loads(ws.as_("boss", "user", "list", "--format", "json").stdout)  # type: ignore[attr-defined]
    assert [u["full_name"] for u in users if u["login"] == "rita" and u["disabled_at"]] == ["Rita Recorder"]
