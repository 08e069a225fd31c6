"""The `dialer` command as users run it: sheets in, clean output and one-line errors out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openpyxl
import pytest
from typer.testing import CliRunner

from campaign.cli import app
from campaign.config import get_settings

pytestmark = pytest.mark.integration

SHEET = "Name;Teléfono;Ciudad\nAna;(415) 555-2671;SF\nBeto;4155552671;SF\nCid;n/a;LA\n"


@pytest.fixture
def runner(ledger_url: str) -> Iterator[CliRunner]:
    get_settings.cache_clear()  # settings are read once per process; each test has its ledger
    yield CliRunner(env={"DIALER_DATABASE_URL": ledger_url, "DIALER_LOG_LEVEL": "WARNING"})
    get_settings.cache_clear()


@pytest.fixture
def sheet(tmp_path: Path) -> Path:
    path = tmp_path / "leads.csv"
    path.write_bytes(SHEET.encode("cp1252"))
    return path


def test_check_json_is_one_pure_object(runner: CliRunner, sheet: Path) -> None:
    result = runner.invoke(app, ["check", str(sheet), "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["rows"] == 3
    assert data["accepted"] == [
        {
            "row": 2,
            "e164": "+14155552671",
            "name": "Ana",
            "timezones": ["America/Los_Angeles"],
            "extension": None,
        }
    ]
    assert data["duplicates"] == [{"row": 3, "e164": "+14155552671", "duplicate_of_row": 2}]
    assert data["rejected"] == [{"row": 4, "raw": "n/a", "reason": "unparseable"}]


def test_check_json_on_a_big_sheet_keeps_progress_off_stdout(
    runner: CliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "big.csv"
    path.write_text("Phone\n" + "\n".join(f"(415) 555-{i % 10000:04d}" for i in range(12_000)))
    result = runner.invoke(app, ["check", str(path), "--format", "json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert (len(data["accepted"]), len(data["duplicates"])) == (10_000, 2_000)


def test_check_table_and_csv(runner: CliRunner, sheet: Path) -> None:
    table = runner.invoke(app, ["check", str(sheet)])
    assert table.exit_code == 0
    assert "accepted 1" in table.stdout and "duplicate of row 2" in table.stdout
    assert "unparseable" in table.stdout
    csv_out = runner.invoke(app, ["check", str(sheet), "--format", "csv"])
    lines = csv_out.stdout.splitlines()
    assert lines[0].startswith("row,status,e164")
    assert [line.split(",")[1] for line in lines[1:]] == ["accepted", "duplicate", "rejected"]


def test_check_with_region_and_phone_column(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "uk.xlsx"
    workbook = openpyxl.Workbook()
    ws = workbook.active
    assert ws is not None
    ws.append(["Name", "Home", "Work"])
    ws.append(["Ann", 2079460958, 7911123456])
    workbook.save(path)
    result = runner.invoke(
        app, ["check", str(path), "--region", "GB", "--phone-column", "Work", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accepted"][0]["e164"] == "+447911123456"


def test_check_writes_nothing(runner: CliRunner, sheet: Path, ledger_url: str) -> None:
    assert runner.invoke(app, ["check", str(sheet)]).exit_code == 0
    assert not Path(ledger_url.removeprefix("sqlite:///")).exists()


def test_import_twice_then_campaigns(runner: CliRunner, sheet: Path) -> None:
    first = runner.invoke(app, ["import", str(sheet), "--campaign", "spring"])
    assert first.exit_code == 0, first.output
    assert "new 1" in first.stdout
    second = runner.invoke(app, ["import", str(sheet), "--campaign", "spring"])
    assert "new 0" in second.stdout and "already in campaign 1" in second.stdout
    listed = runner.invoke(app, ["campaigns", "--format", "json"])
    (campaign,) = json.loads(listed.stdout)
    assert (campaign["name"], campaign["contacts"], campaign["by_status"]) == (
        "spring",
        1,
        {"pending": 1},
    )
    assert "spring" in runner.invoke(app, ["campaigns"]).stdout


def test_db_option_overrides_the_environment(
    runner: CliRunner, sheet: Path, tmp_path: Path
) -> None:
    other = f"sqlite:///{tmp_path / 'other.db'}"
    assert (
        runner.invoke(app, ["import", str(sheet), "--campaign", "x", "--db", other]).exit_code == 0
    )
    assert (tmp_path / "other.db").exists()
    assert json.loads(runner.invoke(app, ["campaigns", "--format", "json"]).stdout) == []


def test_dnc_commands(runner: CliRunner, sheet: Path, tmp_path: Path) -> None:
    added = runner.invoke(app, ["dnc", "add", "(415) 555-2671", "+44 20 7946 0958"])
    assert added.exit_code == 0, added.output
    assert "Added 2" in added.stdout
    dnc_file = tmp_path / "dnc.csv"
    dnc_file.write_text("phone\n212-555-0187\n+1 415 555 2671\nnot a number\n")
    imported = runner.invoke(app, ["dnc", "import", str(dnc_file)])
    assert "Added 1" in imported.stdout and "1 already listed" in imported.stdout
    assert "1 row(s) without a valid number" in imported.stdout
    listed = json.loads(runner.invoke(app, ["dnc", "list", "--format", "json"]).stdout)
    assert sorted(entry["e164"] for entry in listed) == [
        "+12125550187",
        "+14155552671",
        "+442079460958",
    ]
    result = runner.invoke(app, ["import", str(sheet), "--campaign", "spring"])
    assert "new 0" in result.stdout and "do-not-call 2" in result.stdout
    bad = runner.invoke(app, ["dnc", "add", "12"])
    assert bad.exit_code == 1 and "not a valid phone number: '12'" in bad.stderr
    removed = runner.invoke(app, ["dnc", "remove", "+1 415 555 2671"])
    assert "Removed 1" in removed.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "{tmp}/missing.csv"], "missing.csv: no such file"),
        (["check", "{tmp}/broken.xlsx"], "not a readable Excel file"),
        (["check", "{tmp}/nophone.csv"], "no phone column found"),
        (["check", "{tmp}/nophone.csv", "--region", "ZZ"], "unknown region 'ZZ'"),
        (["import", "{tmp}/nophone.csv", "--campaign", "c", "--db", "nonsense://"], "ledger"),
    ],
)
def test_errors_are_one_line_without_traceback(
    tmp_path: Path, ledger_url: str, args: list[str], message: str
) -> None:
    (tmp_path / "broken.xlsx").write_bytes(b"PK\x03\x04garbage")
    (tmp_path / "nophone.csv").write_text("Name,City\nAnn,SF\nBob,LA\n")
    env = {**os.environ, "DIALER_DATABASE_URL": ledger_url}
    completed = subprocess.run(
        [sys.executable, "-m", "campaign", *(arg.format(tmp=tmp_path) for arg in args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert completed.returncode in (1, 2)
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), completed.stderr
    assert message in lines[0]
    assert completed.stdout == ""
