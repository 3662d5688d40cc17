"""Recording from the command line: init, establishments, donors, donations, results, look-back; errors."""

from __future__ import annotations

from sqlalchemy import inspect

from tests.cli.conftest import Cli, seeded
from tests.factories import bulk_units
from traceability.db import make_engine
from traceability.errors import ExitCode

COLLECTED = "2026-05-01T09:30:00Z"


def site_with_donor(run: Cli, donor: str = "D-000123", site: str = "C-BOS") -> str:
    run("establishment", "add", site, "--name", "Boston centre", "--kind", "collection")
    run("donor", "add", donor, "--establishment", site)
    return donor


# --- init ------------------------------------------------------------------------------------------------------


def test_init_creates_the_schema_in_a_fresh_sqlite_file_and_a_second_init_says_up_to_date(fresh: Cli) -> None:
    run = fresh
    first = run("init")
    assert "upgraded from schema none" in first.stderr
    engine = make_engine(run.db_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"establishment", "donor", "donation", "pool", "pool_member", "lot", "audit_event"} <= tables

    second = run("init")
    assert "up to date" in second.stderr
    assert second.stdout == ""

    # --db overrides PLASMATRACE_DB.
    other = run.workdir / "other.db"
    run("--db", f"sqlite:///{other}", "init")
    run("--db", f"sqlite:///{other}", "establishment", "add", "C-NYC", "--name", "New York", "--kind", "collection")
    assert [row["code"] for row in run.json("--db", f"sqlite:///{other}", "establishment", "list")] == ["C-NYC"]
    assert run.json("establishment", "list") == []


def test_a_command_on_a_database_without_schema_says_to_run_init(fresh: Cli) -> None:
    result = fresh("establishment", "list", code=ExitCode.FAILURE)
    assert "plasmatrace init" in result.stderr


def test_init_on_a_migrated_database_says_up_to_date(run: Cli) -> None:
    assert "up to date" in run("init").stderr


# --- establishments and donors ---------------------------------------------------------------------------------


def test_establishments_and_donors_are_added_listed_and_shown(run: Cli) -> None:
    added = run(
        "establishment",
        "add",
        "C-BOS",
        "--name",
        "Boston centre",
        "--kind",
        "collection",
        "--timezone",
        "America/New_York",
    )
    assert "C-BOS" in added.stderr
    run("establishment", "add", "LAB-1", "--name", "Central lab", "--kind", "testing")
    assert run.json("establishment", "list") == [
        {"code": "C-BOS", "name": "Boston centre", "kind": "collection", "timezone": "America/New_York"},
        {"code": "LAB-1", "name": "Central lab", "kind": "testing", "timezone": "UTC"},
    ]
    refused = run(
        "establishment",
        "add",
        "C-MARS",
        "--name",
        "Mars",
        "--kind",
        "collection",
        "--timezone",
        "Mars/Olympus",
        code=ExitCode.INVALID_INPUT,
    )
    assert "Establishment C-MARS: Time zone 'Mars/Olympus' is not an IANA time zone" in refused.stderr
    assert [e["code"] for e in run.json("establishment", "list")] == ["C-BOS", "LAB-1"]

    assert "D-000123" in run("donor", "add", "D-000123", "--establishment", "C-BOS").stderr
    run("donor", "add", "D-000124", "-e", "C-BOS", "--registered-on", "2026-01-15")
    listed = run.json("donor", "list")
    assert [row["donor"] for row in listed] == ["D-000123", "D-000124"]
    assert all(row["establishment"] == "C-BOS" and row["donations"] == 0 for row in listed)

    shown = run.json("donor", "show", "D-000124")
    assert shown["donor_code"] == "D-000124"
    assert shown["establishment"] == "C-BOS"
    assert shown["registered_on"] == "2026-01-15"
    assert shown["donations"] == [] and shown["deferrals"] == []

    table = run("donor", "list")
    assert "D-000123" in table.stdout and "D-000124" in table.stdout
    assert added.stdout == ""

    # CSV exports neutralise cells a spreadsheet would evaluate.
    run("donor", "add", "=1+2", "--establishment", "C-BOS")
    exported = run("donor", "list", "--format", "csv").stdout.splitlines()
    assert exported[0] == "donor,establishment,registered on,donations"
    assert "'=1+2,C-BOS,,0" in exported
    assert run.json("donor", "show", "=1+2")["donor_code"] == "=1+2"


def test_a_duplicate_donor_is_a_conflict_and_an_unknown_establishment_is_not_found(run: Cli) -> None:
    site_with_donor(run, "D-000123")
    duplicate = run("donor", "add", "D-000123", "--establishment", "C-BOS", code=ExitCode.CONFLICT)
    assert "D-000123" in duplicate.stderr
    assert "already exists" in duplicate.stderr
    assert (
        "C-BOS"
        in run("establishment", "add", "C-BOS", "--name", "Again", "--kind", "testing", code=ExitCode.CONFLICT).stderr
    )

    unknown = run("donor", "add", "D-000124", "--establishment", "C-NOWHERE", code=ExitCode.NOT_FOUND)
    assert "C-NOWHERE" in unknown.stderr
    assert [row["donor"] for row in run.json("donor", "list")] == ["D-000123"]


# --- donations -------------------------------------------------------------------------------------------------


def test_every_printed_din_form_is_stored_canonical_and_codabar_and_local_numbers_keep_their_scheme(run: Cli) -> None:
    donor = site_with_donor(run)
    scanned = run(
        "donation",
        "add",
        "=G12341765432170",
        "--donor",
        donor,
        "--collected-at",
        "2026-05-01T11:30:00+02:00",
        "--volume-ml",
        "780",
    )
    assert "G123417654321" in scanned.stderr
    shown = run.json("donation", "show", "G123417654321")
    assert (shown["unit_number"], shown["scheme"], shown["donor_code"]) == ("G123417654321", "isbt128", donor)
    assert shown["volume_ml"] == 780
    assert shown["collected_at"] == "2026-05-01T09:30:00+00:00"

    # The keyboard form of the same DIN is the same unit: it is refused as a duplicate under its canonical number.
    again = run(
        "donation",
        "add",
        "G123417654321A",
        "--donor",
        donor,
        "--collected-at",
        COLLECTED,
        "--volume-ml",
        "780",
        code=ExitCode.CONFLICT,
    )
    assert "G123417654321" in again.stderr

    run("donation", "add", "W0000 09 123456 02 G", "--donor", donor, "--collected-at", COLLECTED, "--volume-ml", "700")
    assert run.json("donation", "show", "W000009123456")["unit_number"] == "W000009123456"

    # Any printed form finds the stored unit.
    assert run.json("donation", "show", "G1234 17 654321 A")["unit_number"] == "G123417654321"
    assert run.json("unit", "show", "G123417654321")["unit_number"] == "G123417654321"  # the alias group
    assert run.json("donation", "show", "=W00000912345602")["unit_number"] == "W000009123456"
    assert sorted(row["unit"] for row in run.json("donation", "list")) == ["G123417654321", "W000009123456"]

    # Codabar and local numbers are accepted and marked with their scheme.
    run("donation", "add", "A12345678B", "--donor", donor, "--collected-at", COLLECTED, "--volume-ml", "650")
    run("donation", "add", "LOC-2026/0001", "--donor", donor, "--collected-at", COLLECTED, "--volume-ml", "650")
    codabar = run.json("donation", "show", "12345678")
    assert (codabar["unit_number"], codabar["scheme"]) == ("12345678", "codabar")
    local = run.json("donation", "show", "LOC-2026/0001")
    assert (local["unit_number"], local["scheme"]) == ("LOC-2026/0001", "local")
    assert sorted(d["unit_number"] for d in run.json("trace", "donor", donor)["donations"]) == [
        "12345678",
        "G123417654321",
        "LOC-2026/0001",
        "W000009123456",
    ]


def test_a_wrong_check_character_is_invalid_input_naming_the_input_and_the_expected_character(run: Cli) -> None:
    donor = site_with_donor(run)
    result = run(
        "donation",
        "add",
        "G123417654321B",
        "--donor",
        donor,
        "--collected-at",
        COLLECTED,
        "--volume-ml",
        "780",
        code=ExitCode.INVALID_INPUT,
    )
    assert "G123417654321B" in result.stderr
    assert "does not match A" in result.stderr
    assert run.json("donation", "list") == []
    assert run.json("donor", "show", donor)["donations"] == []


# --- results ---------------------------------------------------------------------------------------------------


PANEL = ["hbsag", "anti-hiv", "anti-hcv", "hiv-rna", "hcv-rna", "hbv-dna"]


def test_result_aliases_are_recorded_as_nonreactive_and_reactive(run: Cli) -> None:
    donor = site_with_donor(run)
    run("donation", "add", "G123417654321", "--donor", donor, "--collected-at", COLLECTED, "--volume-ml", "780")
    for marker, given in [("hbsag", "NR"), ("anti-hiv", "non-reactive"), ("anti-hcv", "negative"), ("hav-rna", "R")]:
        run(
            "result",
            "add",
            "G123417654321",
            "--marker",
            marker,
            "--result",
            given,
            "--tested-at",
            "2026-05-03T10:00:00Z",
        )
    results = {r["marker"]: r["result"] for r in run.json("donation", "show", "G123417654321")["results"]}
    assert results == {
        "hbsag": "nonreactive",
        "anti-hiv": "nonreactive",
        "anti-hcv": "nonreactive",
        "hav-rna": "reactive",
    }

    bad = run("result", "add", "G123417654321", "--marker", "hbsag", "--result", "maybe", code=ExitCode.INVALID_INPUT)
    assert "maybe" in bad.stderr


def test_a_reactive_hiv_rna_rejects_the_unit_defers_the_donor_and_interdicts_the_other_unit(run: Cli) -> None:
    donor = site_with_donor(run)
    for unit, collected in (("A999925000001", "2025-01-15T09:00:00Z"), ("A999926000001", "2026-04-01T09:00:00Z")):
        run("donation", "add", unit, "--donor", donor, "--collected-at", collected, "--volume-ml", "780")
        for marker in PANEL:
            run("result", "add", unit, "--marker", marker, "--result", "NR", "--tested-at", collected[:10] + "T18:00Z")
    run("donation", "add", "A999926000002", "--donor", donor, "--collected-at", COLLECTED, "--volume-ml", "780")

    reactive = run(
        "result",
        "add",
        "A999926000002",
        "--marker",
        "hiv-rna",
        "--result",
        "R",
        "--method",
        "nat",
        "--tested-at",
        "2026-05-03T10:00Z",
    )
    assert "A999926000002 rejected" in reactive.stderr
    assert f"Donor {donor} deferred permanently" in reactive.stderr
    assert "A999926000001" in reactive.stderr
    assert "A999925000001" not in reactive.stderr

    rejected = run.json("donation", "show", "A999926000002")
    assert rejected["status"] == "rejected"
    assert "hiv-rna" in rejected["status_reason"]
    assert run.json("donation", "show", "A999926000001")["status"] == "interdicted"

    # The look-back window reaches 365 days before the last nonreactive donation (2026-04-01), not further.
    trace = run.json("trace", "donor", donor)
    assert {d["unit_number"]: d["status"] for d in trace["donations"]} == {
        "A999925000001": "in-inventory",
        "A999926000001": "interdicted",
        "A999926000002": "rejected",
    }
    [deferral] = trace["deferrals"]
    assert deferral["ends_on"] is None and deferral["source"] == "reactive-result"
    assert [row["unit"] for row in run.json("donation", "list", "--status", "interdicted")] == ["A999926000001"]


# --- look-back ------------------------------------------------------------------------------------------------


def test_a_lookback_case_interdicts_units_in_inventory_and_reports_the_pooled_ones(run: Cli) -> None:
    with seeded(run.db_url) as session:
        units = bulk_units(session, donors_count=2, units_per_donor=2)  # donor X: units[0:2], donor Y: units[2:4]
    run("pool", "create", "P-0009", "--product", "ivig")
    run("pool", "add", "P-0009", units[0], units[2])
    donor = run.json("donation", "show", units[0])["donor_code"]
    run(
        "donation",
        "add",
        "A777726000001",
        "--donor",
        donor,
        "--collected-at",
        "2026-03-01T09:00Z",
        "--volume-ml",
        "700",
    )

    opened = run("lookback", "open", donor, "--reason", "PDI: later HCV RNA reactive at another centre")
    assert donor in opened.stderr and "2 unit(s) interdicted" in opened.stderr and "1 pooled" in opened.stderr
    [listed] = run.json("lookback", "list")
    case = listed["case"]
    assert case in opened.stderr
    assert (listed["status"], listed["donor"], listed["units"]) == ("open", donor, 3)

    shown = run.json("lookback", "show", case)
    assert shown["donor_code"] == donor and shown["pools"] == ["P-0009"]
    assert {f["unit_number"]: (f["action"], f["pool_number"]) for f in shown["findings"]} == {
        units[0]: ("pooled", "P-0009"),
        units[1]: ("interdicted", None),
        "A777726000001": ("interdicted", None),
    }
    assert run.json("donation", "show", units[1])["status"] == "interdicted"
    assert run.json("donation", "show", units[3])["status"] == "in-inventory"

    assert "1 open task" in run("lookback", "close", case, "--reason", "early", code=ExitCode.RULE_VIOLATION).stderr
    run("lookback", "task", case, "1", "--done", "--note", "records reviewed, units interdicted")
    run("lookback", "close", case, "--reason", "no pooled unit reached a lot")
    assert run.json("lookback", "show", case)["status"] == "closed"
    assert case in run("lookback", "close", case, "--reason", "again", code=ExitCode.RULE_VIOLATION).stderr
    assert "LB-1999-0001" in run("lookback", "show", "LB-1999-0001", code=ExitCode.NOT_FOUND).stderr
    assert "D-9999" in run("lookback", "open", "D-9999", "--reason", "PDI", code=ExitCode.NOT_FOUND).stderr


# --- not found and usage errors --------------------------------------------------------------------------------


def test_unknown_business_keys_are_not_found_and_named(run: Cli) -> None:
    site_with_donor(run)
    run("pool", "create", "P-0001", "--product", "ivig")
    cases = [
        (["pool", "show", "P-9999"], "P-9999"),
        (["pool", "close", "P-9999"], "P-9999"),
        (["pool", "add", "P-9999", "A999926000009"], "P-9999"),
        (["pool", "add", "P-0001", "A999926000009"], "A999926000009"),
        (["trace", "pool", "P-9999"], "P-9999"),
        (["lot", "show", "L-9999"], "L-9999"),
        (["lot", "release", "L-9999"], "L-9999"),
        (["lot", "ship", "L-9999", "--to", "Hospital A", "--quantity", "1"], "L-9999"),
        (["lot", "create", "L-0001", "--product", "ivig", "--pool", "P-9999"], "P-9999"),
        (["trace", "lot", "L-9999"], "L-9999"),
        (["donor", "show", "D-9999"], "D-9999"),
        (["trace", "donor", "D-9999"], "D-9999"),
        (["donor", "defer", "D-9999", "--reason", "travel"], "D-9999"),
        (["donation", "show", "A999926000009"], "A999926000009"),
        (["trace", "unit", "=A99992600000900"], "A999926000009"),
        (["result", "add", "A999926000009", "--marker", "hbsag", "--result", "NR"], "A999926000009"),
        (
            [
                "donation",
                "add",
                "A999926000001",
                "--donor",
                "D-9999",
                "--collected-at",
                COLLECTED,
                "--volume-ml",
                "780",
            ],
            "D-9999",
        ),
        (
            [
                "step",
                "add",
                "--pool",
                "P-9999",
                "--method",
                "solvent-detergent",
                "--started-at",
                "2026-05-01T08:00Z",
                "--ended-at",
                "2026-05-01T14:00Z",
                "--lrv",
                "enveloped=6",
            ],
            "P-9999",
        ),
    ]
    for args, key in cases:
        result = run(*args, code=ExitCode.NOT_FOUND)
        assert key in result.stderr, args
        assert result.stdout == "", args
    assert run.json("pool", "show", "P-0001")["donation_count"] == 0
    assert run.json("donation", "list") == []


def test_usage_errors_exit_2_without_a_traceback(bare: Cli) -> None:
    cases = [
        ["pool", "list", "--no-such-option"],
        ["pool", "create"],
        ["pool", "create", "P-0001"],
        ["donation", "add", "A999926000001", "--donor", "D-1"],
        ["donor", "add"],
        ["trace", "lot"],
        ["trace", "lot", "L-1", "--format", "xml"],
        ["step", "add", "--pool", "P-1", "--method", "boiling", "--started-at", "x", "--ended-at", "y"],
        ["lot", "create", "L-1", "--product", "ivig", "--pool", "P-1=lots"],
        ["no-such-command"],
        ["--no-such-root-option", "policy", "show"],
    ]
    for args in cases:
        result = bare(*args, code=ExitCode.USAGE)
        assert result.stdout == "", args


# --- regressions -----------------------------------------------------------------------------------------------


def test_list_filters_refuse_unknown_values(run: Cli) -> None:
    site_with_donor(run)
    for args in (["donation", "list", "--status", "bogus"], ["pool", "list", "--status", "bogus"]):
        result = run(*args, code=ExitCode.USAGE)
        assert "bogus" in result.stderr, args
    unknown = run("donor", "list", "--establishment", "C-NOWHERE", code=ExitCode.NOT_FOUND)
    assert "C-NOWHERE" in unknown.stderr


def test_messages_name_keys_with_square_brackets_verbatim(run: Cli) -> None:
    site_with_donor(run)
    shown = run("donor", "add", "D-[b]7", "--establishment", "C-BOS")
    assert "D-[b]7" in shown.stderr
    crashed = run("donor", "add", "D-[/]8", "--establishment", "C-BOS")
    assert "D-[/]8" in crashed.stderr
    pool = run("pool", "create", "P-[red]1", "--product", "ivig")
    assert "P-[red]1" in pool.stderr
    assert "C-[i]2" in run("establishment", "add", "C-[i]2", "--name", "[/] lab", "--kind", "testing").stderr
    unit = run(
        "donation", "add", "A999926000001", "--donor", "D-[b]7", "--collected-at", COLLECTED, "--volume-ml", "780"
    )
    assert "D-[b]7" in unit.stderr
    assert "D-[/]8" in run("donor", "defer", "D-[/]8", "--reason", "[b]travel").stderr
    assert "D-[b]7" in run("lookback", "open", "D-[b]7", "--reason", "PDI").stderr
    assert "D-[/]8" in run("trace", "donor", "D-[/]8").stdout
    assert [row["donor"] for row in run.json("donor", "list")] == ["D-000123", "D-[/]8", "D-[b]7"]
