"""A private PostgreSQL cluster that checks passwords (SCRAM-SHA-256), for the tests of logins, roles and signatures.

A server with trust authentication accepts any password, so it cannot prove that a signature's password was
checked. This fixture runs initdb into a temporary folder with ``--auth=scram-sha-256`` and a superuser password,
starts the server on a free port (as the ``postgres`` OS user when the tests run as root) and stops it afterwards.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner, Result

import cli
from traceability import db
from traceability.db import make_engine
from traceability.errors import ExitCode

PASSWORDS = {"rec": "recorder-pass-1", "appr": "approver-pass-1", "appr2": "approver-pass-2", "inv": "investigate-1"}


def _binary(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ScramServer:
    port: int
    superuser_password: str

    def url(self, login: str, password: str, database: str = "postgres") -> str:
        return f"postgresql://{login}:{password}@127.0.0.1:{self.port}/{database}"


@pytest.fixture(scope="session")
def scram_server() -> Iterator[ScramServer]:
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        reason = "PostgreSQL server binaries (initdb, pg_ctl) not found: password-checking tests cannot run"
        if os.environ.get("PLASMATRACE_TEST_SCRAM") == "required":  # .ci/run: never skip them silently
            pytest.fail(reason)
        pytest.skip(reason)
    as_postgres: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="plasmatrace-scram-"))
    if os.geteuid() == 0:  # initdb refuses to run as root
        as_postgres = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres")
    password = secrets.token_urlsafe(18)
    pwfile = base / "pw"
    pwfile.write_text(password + "\n")
    if as_postgres:
        shutil.chown(pwfile, "postgres")
    data = base / "data"
    subprocess.run(
        [*as_postgres, initdb, "-D", str(data), "-U", "postgres", "--auth=scram-sha-256", f"--pwfile={pwfile}"]
        + ["-E", "UTF8", "--locale=C"],
        check=True,
        capture_output=True,
    )
    port = _free_port()
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [*as_postgres, pg_ctl, "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield ScramServer(port=port, superuser_password=password)
    finally:
        subprocess.run([*as_postgres, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class Site:
    """One database on the password-checking server, initialised, with a login per role."""

    server: ScramServer
    database: str
    suffix: str
    runner: CliRunner = field(default_factory=CliRunner)

    @property
    def admin_url(self) -> str:
        return self.server.url("postgres", self.server.superuser_password, self.database)

    def login(self, short: str) -> str:
        return f"{short}_{self.suffix}"

    def url(self, short: str, password: str | None = None) -> str:
        if short == "postgres":
            return self.admin_url
        return self.server.url(self.login(short), password or PASSWORDS.get(short, f"{short}-pass-1"), self.database)

    def run(
        self,
        who: str,
        *args: str,
        code: int = ExitCode.OK,
        stdin: str | None = None,
        env: dict[str, str | None] | None = None,
    ) -> Result:
        """`plasmatrace ARGS` connected as login ``who`` (its password in the URL)."""
        environment = {"PLASMATRACE_DB": self.url(who), "PLASMATRACE_ACTOR": None, "PLASMATRACE_POLICY": None}
        result = self.runner.invoke(cli.app, list(args), env={**environment, **(env or {})}, input=stdin)
        shown = f"{who}: plasmatrace {' '.join(args)}\n{result.stdout}\n{result.stderr}"
        assert result.exit_code == code, shown
        assert "Traceback" not in result.output, shown
        return result

    def forget_connections(self) -> None:
        """Close the engines the CLI cached in this process, as if each command ran in a process of its own."""
        for url in list(db._engines):
            if f":{self.server.port}/" in url:
                db._engines.pop(url).dispose()

    def sql(self, who: str, statement: str) -> None:
        engine = make_engine(self.url(who))
        try:
            with engine.begin() as conn:
                conn.execute(text(statement))
        finally:
            engine.dispose()


@pytest.fixture(scope="module")
def site(scram_server: ScramServer) -> Iterator[Site]:
    """A fresh database on the password server: `init` by the superuser, then one login per role:
    rec (recorder), appr (approver), appr2 (recorder and approver), inv (investigator), aud (auditor)."""
    suffix = uuid.uuid4().hex[:6]
    name = f"site_{suffix}"
    admin = make_engine(scram_server.url("postgres", scram_server.superuser_password))
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    here = Site(server=scram_server, database=name, suffix=suffix)
    here.run("postgres", "init")
    people = {
        "rec": (["recorder"], "Rita Recorder"),
        "appr": (["approver"], "Anna Approver"),
        "appr2": (["recorder", "approver"], "Bert Both"),
        "inv": (["investigator"], "Ivo Investigator"),
        "aud": (["auditor"], "Aude Auditor"),
    }
    for short, (roles, full_name) in people.items():
        role_args = [x for r in roles for x in ("--role", r)]
        password = PASSWORDS.get(short, f"{short}-pass-1")
        here.run(
            "postgres",
            "user",
            "add",
            here.login(short),
            *role_args,
            "--full-name",
            full_name,
            "--password-stdin",
            stdin=password + "\n",
        )
    yield here
    here.forget_connections()
    admin = make_engine(scram_server.url("postgres", scram_server.superuser_password))
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        for short in people:
            conn.execute(text(f'DROP ROLE IF EXISTS "{here.login(short)}"'))
    admin.dispose()


def login_of(url: str) -> str:
    return make_url(url).username or ""
