"""Every user mistake of issue 12 ends in a one-line message and its SPEC exit code, never a traceback; outputs
never replace the database or an input; stored text is printed escaped; consignees and quantities on the command
line."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.cli.conftest import Cli, seeded
from tests.factories import cli_actor
from tests.integration.test_records import released_final_lot, released_pool
from traceability.errors import ExitCode

ROOT = Path(__file__).resolve().parents[2]
TODAY = datetime.now(UTC).date().isoformat()


def site(run: Cli) -> None:
    run("establishment", "add", "C-1", "--name", "Centre", "--kind", "collection")
    run("donor", "add", "D-000855", "--establishment", "C-1", "--registered-on", "2026-01-05")


def released_lot(run: Cli) -> str:
    with seeded(run.db_url) as session:
        released_pool(session, "P-R")
        return released_final_lot(session, "P-R", lot="IVG-R", quantity=100)


# --- the database URL, the policy file, the actor --------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "code", "said"),
    [
        ("foo://bar", ExitCode.INVALID_INPUT, "'foo' databases are not supported"),
        ("not a url", ExitCode.INVALID_INPUT, "is not a database URL"),
        ("mysql://u:pw@h/db", ExitCode.INVALID_INPUT, "'mysql' databases are not supported"),
    ],
)
def test_an_unusable_database_url_is_named_without_a_traceback(bare: Cli, url: str, code: int, said: str) -> None:
    result = bare.runner.invoke(bare_app(), ["--db", url, "establishment", "list"])
    assert result.exit_code == code and said in result.stderr and "Traceback" not in result.output
    assert "pw" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def bare_app():  # noqa: ANN201
    import cli

    return cli.app


def test_a_file_that_is_not_a_database_is_said_so(bare: Cli) -> None:
    path = bare.workdir / "some.csv"
    path.write_text("a,b\n1,2\n", encoding="utf-8")
    result = bare.runner.invoke(bare_app(), ["--db", f"sqlite:///{path}", "establishment", "list"])
    assert result.exit_code == ExitCode.FAILURE and "is not a plasmatrace database" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_password_in_the_url_query_is_never_printed(bare: Cli) -> None:
    url = "postgresql://nobody@127.0.0.1:1/x?password=s3cret-pw&connect_timeout=1"
    result = bare.runner.invoke(bare_app(), ["--db", url, "establishment", "list"])
    assert result.exit_code == ExitCode.FAILURE
    assert "s3cret" not in result.output and "cannot be reached" in result.stderr


def test_a_policy_folder_and_a_newline_in_the_actor_are_refused(bare: Cli) -> None:
    folder = bare.workdir / "some-folder"
    folder.mkdir()
    policy = bare("--policy", str(folder), "policy", "show", code=ExitCode.INVALID_INPUT)
    assert "is a folder" in policy.stderr
    actor = bare("--actor", "alice\nbob", "policy", "show", code=ExitCode.INVALID_INPUT)
    assert "--actor" in actor.stderr


def test_a_mistyped_sqlite_path_leaves_no_files_behind(bare: Cli) -> None:
    missing = bare.workdir / "missing.db"
    result = bare.runner.invoke(bare_app(), ["--db", f"sqlite:///{missing}", "donor", "list"])
    assert result.exit_code == ExitCode.FAILURE and "does not exist" in result.stderr
    assert sorted(p.name for p in bare.workdir.iterdir()) == []


def test_a_database_on_read_only_media_can_be_read(run: Cli, tmp_path: Path) -> None:
    if not run.db_url.startswith("sqlite"):
        pytest.skip("read-only media concern a SQLite file")
    site(run)
    mount = tmp_path / "ro"
    mount.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)], check=False).returncode:
            pytest.skip("cannot mount a tmpfs here")
    from tests.cli.conftest import dispose_engines

    try:
        dispose_engines(run.db_url, tmp_path)  # checkpoints the WAL into the file
        source = Path(run.db_url.removeprefix("sqlite:///"))
        (mount / "site.db").write_bytes(source.read_bytes())
        if os.geteuid() == 0:
            subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        else:
            (mount / "site.db").chmod(0o444)
            mount.chmod(0o555)
        reader = Cli(db_url=f"sqlite:///{mount / 'site.db'}", workdir=tmp_path)
        listed = reader("donor", "list", "--format", "json")
        assert "D-000855" in listed.stdout
        refused = reader("donor", "add", "D-2", "--establishment", "C-1", code=ExitCode.FAILURE)
        assert "read-only" in refused.stderr
    finally:
        dispose_engines(f"sqlite:///{mount / 'site.db'}", mount)  # the file is closed before the unmount
        if os.geteuid() == 0:
            subprocess.run(["umount", str(mount)], check=False)


# --- values ----------------------------------------------------------------------------------------------------


def test_numbers_too_large_for_the_database_are_invalid_input(run: Cli) -> None:
    site(run)
    big = str(2**63)
    volume = run(
        "donation", "add", "A999926123456", "--donor", "D-000855", "--collected-at", "2026-03-01T09:30Z",
        "--volume-ml", big, code=ExitCode.INVALID_INPUT,
    )  # fmt: skip
    assert "too large" in volume.stderr
    pg_int = run(
        "donation", "add", "A999926123456", "--donor", "D-000855", "--collected-at", "2026-03-01T09:30Z",
        "--volume-ml", str(2**31), code=ExitCode.INVALID_INPUT,
    )  # fmt: skip
    assert "2,147,483,647" in pg_int.stderr
    limit = run("donor", "list", "--limit", big, code=ExitCode.INVALID_INPUT)
    assert "too large" in limit.stderr


def test_a_name_of_100000_characters_is_refused(run: Cli) -> None:
    result = run(
        "establishment", "add", "C-2", "--name", "x" * 100_000, "--kind", "collection", code=ExitCode.INVALID_INPUT
    )
    assert "100,000 characters" in result.stderr and len(result.stderr) < 400


def test_a_time_outside_the_calendar_is_invalid_input(run: Cli) -> None:
    site(run)
    result = run(
        "donation", "add", "A999926123456", "--donor", "D-000855", "--collected-at", "9999-12-31T23:59:59-14:00",
        "--volume-ml", "700", code=ExitCode.INVALID_INPUT,
    )  # fmt: skip
    assert "outside the calendar" in result.stderr


def test_a_collection_in_1850_and_one_before_registration_are_implausible(run: Cli) -> None:
    site(run)
    for when, said in (("1850-01-01T00:00Z", "before 1940"), ("2026-01-02T00:00Z", "registered on 2026-01-05")):
        result = run(
            "donation", "add", "A999926123456", "--donor", "D-000855", "--collected-at", when, "--volume-ml", "700",
            code=ExitCode.INVALID_INPUT,
        )  # fmt: skip
        assert said in result.stderr and "A999926123456" in result.stderr
    assert run.json("donation", "list") == []


def test_a_repeated_lrv_class_is_refused(run: Cli) -> None:
    result = run(
        "step", "add", "--pool", "P-1", "--method", "caprylate", "--started-at", "2026-05-01T08:00Z",
        "--ended-at", "2026-05-01T09:00Z", "--lrv", "enveloped=3", "--lrv", "enveloped=9",
        code=ExitCode.INVALID_INPUT,
    )  # fmt: skip
    assert "enveloped is given twice" in result.stderr


def test_a_unit_list_that_is_not_utf8_is_invalid_input(run: Cli) -> None:
    path = run.workdir / "units.txt"
    path.write_bytes(b"A999926123456\nA99992\xff\n")
    result = run("pool", "add", "P-1", "--file", str(path), code=ExitCode.INVALID_INPUT)
    assert "units.txt:2: not UTF-8" in result.stderr


@pytest.mark.parametrize("number", ["Q12342690001", "W12342614596", "W123426145963-00"])
def test_a_near_miss_din_is_refused_not_stored_as_a_local_number(run: Cli, number: str) -> None:
    site(run)
    result = run(
        "donation", "add", number, "--donor", "D-000855", "--collected-at", "2026-03-01T09:30Z", "--volume-ml", "700",
        code=ExitCode.INVALID_INPUT,
    )  # fmt: skip
    assert number in result.stderr and "DIN" in result.stderr
    path = run.workdir / "donations.csv"
    path.write_text(f"unit_number,donor_code,collected_at,volume_ml\n{number},D-000855,2026-03-01T09:30Z,700\n")
    run("import", "donations", str(path), code=ExitCode.INVALID_INPUT)
    assert run.json("donation", "list") == []


def test_full_width_digits_are_the_same_key(run: Cli) -> None:
    site(run)
    again = run("donor", "add", "D-000８55", "--establishment", "C-1", code=ExitCode.CONFLICT)
    assert "D-000855 already exists" in again.stderr
    shown = run("donor", "show", "D-000８55")
    assert "D-000855" in shown.stdout


def test_keys_and_names_with_escape_sequences_are_refused_and_stored_ones_print_escaped(run: Cli) -> None:
    hostile = "Hosp\x1b]52;c;aGVsbG8=\x07\x1b[8mhidden"
    refused = run("consignee", "add", "H-1", "--name", hostile, "--address", "x", code=ExitCode.INVALID_INPUT)
    assert "\x1b" not in refused.stderr and "\\x1b" in refused.stderr
    run("establishment", "add", "C-\x1b[8m", "--name", "x", "--kind", "collection", code=ExitCode.INVALID_INPUT)
    # A name stored before these checks (here by raw SQL) is printed with its escapes visible.
    run("consignee", "add", "H-1", "--name", "Hospital", "--address", "1 Road")
    from sqlalchemy import text

    with seeded(run.db_url) as session:
        session.execute(text("UPDATE consignee SET name = :n WHERE code = 'H-1'"), {"n": hostile})
    listed = run("consignee", "list")
    assert "\x1b" not in listed.stdout and "\\x1b" in listed.stdout


def test_a_newline_in_the_actor_never_reaches_the_audit_trail(run: Cli) -> None:
    run("--actor", "alice\nmallory", "establishment", "add", "C-9", "--name", "x", "--kind", "collection", code=5)
    assert run.json("establishment", "list") == []


# --- consignees and quantities on the command line -------------------------------------------------------------


def test_a_lot_ships_to_a_consignee_code_within_its_balance_and_shows_the_distribution_record(run: Cli) -> None:
    lot = released_lot(run)
    run("consignee", "add", "H-STM", "--name", "St Mary's", "--address", "Greenhill Road, Leeds", "--country", "GB")
    run("lot", "ship", lot, "--to", "St Mary's", "--quantity", "1", code=ExitCode.NOT_FOUND)
    shipped = run("lot", "ship", lot, "--to", "H-STM", "--quantity", "60", "--shipped-on", TODAY)
    assert "40 vials left" in shipped.stderr
    over = run("lot", "ship", lot, "--to", "H-STM", "--quantity", "99999999", code=ExitCode.RULE_VIOLATION)
    assert "Lot IVG-R has 40 vials left (100 made, 0 drawn, 60 shipped); 99,999,999 cannot be shipped." in over.stderr
    for day in ("1999-01-01", "2031-01-01"):
        dated = run("lot", "ship", lot, "--to", "H-STM", "--quantity", "1", "--shipped-on", day, code=5)
        assert f"shipped on {day}" in dated.stderr
    record = run.json("consignee", "show", "H-STM")
    assert record["address"] == "Greenhill Road, Leeds"
    assert [(s["lot"], s["quantity"], s["unit"], s["shipped_on"]) for s in record["shipments"]] == [
        (lot, 60, "vials", TODAY)
    ]
    trace = run.json("trace", "lot", lot)
    assert trace["available"] == 40 and trace["shipments"][0]["consignee_address"] == "Greenhill Road, Leeds"


def test_a_correction_in_released_lineage_needs_a_deviation_shown_on_pool_lot_and_report(run: Cli) -> None:
    lot = released_lot(run)
    unit = run.json("donation", "list", "--pool", "P-R", "--limit", "1")[0]["unit"]
    refused = run("donation", "correct", unit, "--set", "volume_ml=100", "--reason", "scale", code=3)
    assert "--deviation" in refused.stderr and "P-R" in refused.stderr
    run("donation", "correct", unit, "--set", "volume_ml=100", "--reason", "scale", "--deviation", "DEV-14")
    assert run.json("trace", "pool", "P-R")["deviations"][0]["reference"] == "DEV-14"
    assert run.json("trace", "lot", lot)["deviations"][0]["unit_number"] == unit
    assert "DEV-14" in run("lot", "show", lot).stdout
    report = run.workdir / "r.json"
    run("report", "lot", lot, "--format", "json", "--output", str(report))
    assert "DEV-14" in report.read_text(encoding="utf-8")


def test_lot_create_takes_quantities_with_units_and_refuses_a_draw_over_the_pool(run: Cli) -> None:
    with seeded(run.db_url) as session:
        released_pool(session, "P-Q")  # 780 L
    run("lot", "create", "PASTE-1", "--product", "ivig", "--pool", "P-Q=780L", "--kind", "intermediate",
        "--quantity", "120", "--unit", "kg")  # fmt: skip
    twice = run("lot", "create", "PASTE-2", "--product", "ivig", "--pool", "P-Q=999999mL", code=3)
    assert "Pool P-Q has 0 mL left" in twice.stderr


# --- imports ---------------------------------------------------------------------------------------------------


def test_a_partly_rejected_file_loads_its_now_valid_rows_when_imported_again(run: Cli) -> None:
    run("establishment", "add", "C-1", "--name", "Centre", "--kind", "collection")
    path = run.workdir / "donors.csv"
    path.write_text("donor_code,establishment\nD-1,C-1\nD-2,C-NEW\n", encoding="utf-8")
    run("import", "donors", str(path), "--skip-invalid")
    run("establishment", "add", "C-NEW", "--name", "New centre", "--kind", "collection")
    again = run("import", "donors", str(path))
    assert "1 of 2 rows loaded this time, 1 loaded earlier" in again.stderr
    assert sorted(d["donor"] for d in run.json("donor", "list")) == ["D-1", "D-2"]
    third = run("import", "donors", str(path))
    assert "already imported" in third.stderr and "nothing was added" in third.stderr
    run("audit", "verify")


def test_import_consignees_with_the_guarantees_of_the_other_imports(run: Cli) -> None:
    path = run.workdir / "consignees.csv"
    path.write_text(
        'code,name,address,country\nH-1,Hosp One,"1 Road, Town",US\nH-2,=HYPERLINK("http://x"),,GB\n', encoding="utf-8"
    )
    bad = run("import", "consignees", str(path), code=ExitCode.INVALID_INPUT)
    assert "consignees.csv:3: address" in bad.stderr
    assert run.json("consignee", "list") == []
    run("import", "consignees", str(path), "--skip-invalid")
    assert [c["code"] for c in run.json("consignee", "list")] == ["H-1"]
    with (run.workdir / "consignees.rejects.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["name"] == '\'=HYPERLINK("http://x")'  # neutralised for spreadsheets
    run("audit", "verify")


def test_rejects_never_overwrite_the_database_and_need_an_existing_folder(run: Cli) -> None:
    path = run.workdir / "donors.csv"
    path.write_text("donor_code,establishment\nD-1,C-NONE\n", encoding="utf-8")
    if run.db_url.startswith("sqlite"):
        target = run.db_url.removeprefix("sqlite:///")
        size = Path(target).stat().st_size
        clash = run("import", "donors", str(path), "--skip-invalid", "--rejects", target, code=5)
        assert "is the database" in clash.stderr and Path(target).stat().st_size == size
    missing = run("import", "donors", str(path), "--skip-invalid", "--rejects", "/nonexistent/r.csv", code=5)
    assert "/nonexistent does not exist" in missing.stderr


def test_a_full_disk_while_writing_rejects_loads_nothing_and_says_so(run: Cli, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs a tiny tmpfs")
    folder = tmp_path / "full"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(folder)], check=False).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        run("establishment", "add", "C-1", "--name", "Centre", "--kind", "collection")
        path = run.workdir / "donors.csv"
        lines = ["donor_code,establishment"] + [f"D-{i},C-NONE-{'x' * 30}" for i in range(2000)] + ["D-OK,C-1"]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        result = run(
            "import", "donors", str(path), "--skip-invalid", "--rejects", str(folder / "r.csv"), code=ExitCode.FAILURE
        )
        assert "No space left on device" in result.stderr and "nothing was loaded" in result.stderr
        assert run.json("donor", "list") == []
    finally:
        subprocess.run(["umount", str(folder)], check=False)


# --- report files ----------------------------------------------------------------------------------------------


def test_report_files_never_replace_the_database_and_pdf_is_named_by_its_format(run: Cli) -> None:
    lot = released_lot(run)
    if run.db_url.startswith("sqlite"):
        target = run.db_url.removeprefix("sqlite:///")
        run("report", "lot", lot, "--output", target, code=ExitCode.INVALID_INPUT)
        run("lot", "show", lot)  # the database is whole
    run("report", "lot", lot, "--format", "pdf")
    assert (run.workdir / "report.pdf").read_bytes().startswith(b"%PDF")
    assert not (run.workdir / "report.html").exists()
    stdout = run("report", "lot", lot, "--format", "json", "--output", "-")
    assert '"report": "lot"' in stdout.stdout and not (run.workdir / "-").exists()
    run("report", "lot", lot, "--format", "pdf", "--output", "-", code=ExitCode.INVALID_INPUT)


def test_a_failed_report_write_leaves_the_previous_file_whole(run: Cli) -> None:
    lot = released_lot(run)
    target = run.workdir / "lot.html"
    run("report", "lot", lot, "--output", str(target))
    before = target.read_bytes()
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    script = (
        "import resource,sys;resource.setrlimit(resource.RLIMIT_FSIZE,(2000,2000));"
        "import signal;signal.signal(signal.SIGXFSZ,signal.SIG_IGN);"
        "sys.argv=['plasmatrace','report','lot',sys.argv[1],'--output',sys.argv[2]];"
        "import cli;cli.app()"
    )
    env = {**os.environ, "PLASMATRACE_DB": run.db_url, "PLASMATRACE_ACTOR": cli_actor(run.db_url, "qa")}
    done = subprocess.run(
        [sys.executable, "-c", script, lot, str(target)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == ExitCode.FAILURE, done.stderr
    assert "Cannot write" in done.stderr and "Traceback" not in done.stderr
    assert target.read_bytes() == before
    assert [p.name for p in run.workdir.iterdir() if p.name.endswith(".part")] == []
    assert resource.getrlimit(resource.RLIMIT_FSIZE) == (soft, hard)


# --- Ctrl-C ----------------------------------------------------------------------------------------------------


def test_ctrl_c_says_a_word_and_exits_130(tmp_path: Path) -> None:
    env = {**os.environ, "PLASMATRACE_DB": f"sqlite:///{tmp_path / 'demo.db'}", "PLASMATRACE_ACTOR": "qa"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "demo"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    proc.send_signal(2)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Interrupted" in stderr and "Traceback" not in stderr


def test_a_full_disk_during_an_import_says_so_and_leaves_the_database_as_it_was(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs a tiny tmpfs")
    folder = tmp_path / "small"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(folder)], check=False).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        run = Cli(db_url=f"sqlite:///{folder / 'site.db'}", workdir=tmp_path)
        run("init")
        run("establishment", "add", "C-1", "--name", "Centre", "--kind", "collection")
        path = tmp_path / "donors.csv"
        path.write_text("donor_code,establishment\n" + "".join(f"DONOR-{i:08d},C-1\n" for i in range(20_000)))
        result = run("import", "donors", str(path), code=ExitCode.FAILURE)
        assert "disk is full" in result.stderr and "savepoint" not in result.stderr
        assert run.json("donor", "list") == []
        run("audit", "verify")
    finally:
        from tests.cli.conftest import dispose_engines

        dispose_engines(f"sqlite:///{folder / 'site.db'}", tmp_path)
        subprocess.run(["umount", str(folder)], check=False)
