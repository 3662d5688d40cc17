"""The audit trail and the policy from the command line: verify, checkpoint, tampering; policy show and overrides."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import text

from tests.cli.conftest import Cli
from tests.factories import cli_actor
from traceability.db import make_engine
from traceability.errors import ExitCode


def tamper(db_url: str, statement: str, **params: object) -> None:
    """Run raw SQL on audit_event with the append-only guards out of the way."""
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            if engine.url.get_backend_name() == "sqlite":
                conn.execute(text("DROP TRIGGER IF EXISTS audit_event_no_update"))
                conn.execute(text("DROP TRIGGER IF EXISTS audit_event_no_delete"))
            else:
                conn.execute(text("ALTER TABLE audit_event DISABLE TRIGGER USER"))
            assert conn.execute(text(statement), params).rowcount == 1
    finally:
        engine.dispose()


def test_audit_verify_passes_on_an_intact_trail_and_names_the_event_that_was_removed_or_changed(run: Cli) -> None:
    run("establishment", "add", "C-BOS", "--name", "Boston centre", "--kind", "collection")
    run("donor", "add", "D-000123", "--establishment", "C-BOS")
    run("donor", "add", "D-000124", "--establishment", "C-BOS")
    run("donor", "defer", "D-000124", "--reason", "travel", "--from", "2026-03-01", "--until", "2026-09-01")

    intact = run("audit", "verify")
    assert "intact" in intact.stderr
    token = run("audit", "checkpoint").stdout
    assert re.fullmatch(r"\d+:[0-9a-f]{64}\n", token)
    head = int(token.split(":")[0])
    run("audit", "verify", "--checkpoint", token.strip())

    events = run.json("audit", "log")
    assert [e["seq"] for e in events] == list(range(1, head + 1))
    assert all(e["actor"] == cli_actor(run.db_url) for e in events)  # on PostgreSQL: the login
    donor_added = next(e for e in events if e["key"] == "D-000123")

    # Removing the newest event leaves no gap; only the checkpoint kept outside the database shows it.
    tamper(run.db_url, "DELETE FROM audit_event WHERE seq = :seq", seq=head)
    cut = run("audit", "verify", "--checkpoint", token.strip(), code=None)
    assert str(head) in cut.stderr

    tamper(run.db_url, "UPDATE audit_event SET actor = 'mallory' WHERE seq = :seq", seq=donor_added["seq"])
    changed = run("audit", "verify", code=None)
    assert re.search(rf"\bevent {donor_added['seq']}\b", changed.stderr), changed.stderr
    assert "changed" in changed.stderr


def test_audit_log_shows_who_changed_a_record_what_and_why(run: Cli) -> None:
    run("establishment", "add", "C-BOS", "--name", "Boston centre", "--kind", "collection")
    run("donor", "add", "D-000123", "--establishment", "C-BOS")
    run(
        "donation",
        "add",
        "=G12341765432170",
        "--donor",
        "D-000123",
        "--collected-at",
        "2026-05-01T09:30Z",
        "--volume-ml",
        "780",
    )
    run(
        "--actor",
        cli_actor(run.db_url, "qa.lead"),  # on PostgreSQL only the login may be named
        "donation",
        "correct",
        "G123417654321",
        "--set",
        "volume_ml=760",
        "--reason",
        "scale misread",
    )
    history = run.json("audit", "log", "--entity", "donation", "--key", "G123417654321A")
    assert [(e["action"], e["actor"]) for e in history] == [
        ("donation.added", cli_actor(run.db_url)),
        ("donation.corrected", cli_actor(run.db_url, "qa.lead")),
    ]
    assert history[1]["old"]["volume_ml"] == 780 and history[1]["new"]["volume_ml"] == 760
    assert history[1]["reason"] == "scale misread"


# --- policy: no database involved ------------------------------------------------------------------------------


def test_policy_show_prints_the_defaults_as_json(bare: Cli) -> None:
    policy = bare.json("policy", "show")
    assert policy["min_donors"] == 1000
    assert policy["hold_days"] == 60
    assert policy["required_panel"] == ["hbsag", "anti-hiv", "anti-hcv", "hiv-rna", "hcv-rna", "hbv-dna"]
    assert set(policy["products"]) >= {"ivig", "albumin", "anti-d"}
    assert "b19-dna" in policy["products"]["anti-d"]["pool_tests"]
    assert "min_donors" in bare("policy", "show").stdout


def test_a_policy_file_may_raise_the_minimum_for_a_product(bare: Cli) -> None:
    path = bare.workdir / "policy.toml"
    path.write_text("[products.ivig]\nmin_donors = 1200\n", encoding="utf-8")
    policy = bare.json("--policy", str(path), "policy", "show")
    assert policy["products"]["ivig"]["min_donors"] == 1200
    assert policy["min_donors"] == 1000


@pytest.mark.parametrize("content", ["min_donors = 500\n", "[products.albumin]\nmin_donors = 999\n"])
def test_a_policy_file_may_not_lower_the_minimum_below_1000(bare: Cli, content: str) -> None:
    path = bare.workdir / "lax.toml"
    path.write_text(content, encoding="utf-8")
    result = bare("--policy", str(path), "policy", "show", code=ExitCode.INVALID_INPUT)
    assert "1,000" in result.stderr
    assert "lax.toml" in result.stderr
    assert result.stdout == ""


def test_a_missing_or_malformed_policy_file_is_invalid_input(bare: Cli) -> None:
    missing = bare("--policy", "nowhere.toml", "policy", "show", code=ExitCode.INVALID_INPUT)
    assert "nowhere.toml" in missing.stderr
    broken = bare.workdir / "broken.toml"
    broken.write_text("min_donors = [\n", encoding="utf-8")
    assert "broken.toml" in bare("--policy", str(broken), "policy", "show", code=ExitCode.INVALID_INPUT).stderr


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ("[clearance]\neffective_log = 0\nenveloped_steps = 0\n", "effective_log = 0.0"),
        ("required_panel = []\n", "required_panel = []"),
        ("lookback_months = 3\n", "lookback_months = 3"),
        ("hold_days = 30\n", "hold_days = 30"),
    ],
)
def test_a_policy_that_relaxes_the_law_is_exit_5_naming_the_key(bare: Cli, content: str, key: str) -> None:
    path = bare.workdir / "lax.toml"
    path.write_text(content, encoding="utf-8")
    result = bare("--policy", str(path), "policy", "show", code=ExitCode.INVALID_INPUT)
    assert key in result.stderr and "relaxes the law" in result.stderr


def test_a_policy_folder_is_exit_5(bare: Cli) -> None:
    result = bare("--policy", str(bare.workdir), "policy", "show", code=ExitCode.INVALID_INPUT)
    assert "is a folder" in result.stderr


def test_policy_show_prints_each_keys_meaning_limit_and_source_and_the_policys_sha256(bare: Cli) -> None:
    shown = bare("policy", "show", "--format", "csv").stdout
    assert "qualification_months" in shown and "PPTA IQPP Qualified Donor Standard" in shown
    assert "markers.syphilis.on_reactive" in shown and "defer-until-nonreactive" in shown
    digest = bare.json("policy", "show")["sha256"]
    assert len(digest) == 64
    assert f"Policy SHA-256: {digest}" in bare("policy", "show").stderr
    path = bare.workdir / "site.toml"
    path.write_text("hold_days = 90\n", encoding="utf-8")
    assert bare.json("--policy", str(path), "policy", "show")["sha256"] != digest
