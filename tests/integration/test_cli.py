"""The `dialer` command as users run it: sheets in, clean output and one-line errors out."""

from __future__ import annotations

import csv
import io
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
def runner(sqlite_ledger_url: str) -> Iterator[CliRunner]:
    get_settings.cache_clear()  # settings are read once per process; each test has its ledger
    yield CliRunner(env={"DIALER_DATABASE_URL": sqlite_ledger_url, "DIALER_LOG_LEVEL": "WARNING"})
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


def test_check_writes_nothing(runner: CliRunner, sheet: Path, sqlite_ledger_url: str) -> None:
    assert runner.invoke(app, ["check", str(sheet)]).exit_code == 0
    assert not Path(sqlite_ledger_url.removeprefix("sqlite:///")).exists()


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


def dialer(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, in its own process (a traceback would show)."""
    return subprocess.run(
        [sys.executable, "-m", "campaign", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["check", "{tmp}/missing.csv"], "missing.csv: no such file", 1),
        (["check", "{tmp}/broken.xlsx"], "not a readable Excel file", 1),
        (["check", "{tmp}/nophone.csv"], "no phone column found", 1),
        (["check", "{tmp}/nophone.csv", "--region", "ZZ"], "unknown region 'ZZ'", 1),
        (["check", "{tmp}/unclosed.csv"], "line 2: a quoted cell is never closed", 1),
        (
            ["import", "{tmp}/nophone.csv", "--campaign", "bad name!"],
            "campaign name 'bad name!'",
            1,
        ),
        (["import", "{tmp}/nophone.csv", "--campaign", "c", "--db", "nonsense://"], "ledger", 4),
        (["schedule", "add", "../x", "--cron", "0 19 * * *", "--tz", "UTC"], "campaign name", 1),
    ],
)
def test_errors_are_one_line_without_traceback(
    tmp_path: Path, sqlite_ledger_url: str, args: list[str], message: str, code: int
) -> None:
    (tmp_path / "broken.xlsx").write_bytes(b"PK\x03\x04garbage")
    (tmp_path / "nophone.csv").write_text("Name,City\nAnn,SF\nBob,LA\n")
    (tmp_path / "unclosed.csv").write_text('Name,Phone\n"Ada,+12125550101\nBob,+12125550102\n')
    completed = dialer(
        [arg.format(tmp=tmp_path) for arg in args], DIALER_DATABASE_URL=sqlite_ledger_url
    )
    assert completed.returncode == code, completed.stderr
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), completed.stderr
    assert message in lines[0]
    assert completed.stdout == ""


@pytest.mark.parametrize(
    ("args", "variable", "value"),
    [
        (["campaigns"], "DIALER_LOG_LEVEL", "loud"),
        (["check", "x.csv"], "LIVEKIT_URL", "localhost:7880"),
        (["status", "c"], "DIALER_LOG_LEVEL", "loud"),
        (["schedule", "list"], "LIVEKIT_URL", "localhost:7880"),
        (["dnc", "list"], "DIALER_SHEET_MAX_ROWS", "many"),
    ],
)
def test_a_bad_setting_is_one_line_for_every_command(
    sqlite_ledger_url: str, args: list[str], variable: str, value: str
) -> None:
    completed = dialer(args, DIALER_DATABASE_URL=sqlite_ledger_url, **{variable: value})
    assert completed.returncode == 1
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: invalid settings:"), completed.stderr
    assert variable in lines[0]
    assert completed.stdout == ""


def test_a_refused_csv_is_in_the_json_output_too(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "unclosed.csv"
    path.write_text('Name,Phone\n"Ada Lovelace,+12125550101\nBob,+12125550102\nCy,+121255501\n')
    result = runner.invoke(app, ["check", str(path), "--format", "json"])
    assert result.exit_code == 1
    (error,) = json.loads(result.stdout)["errors"]
    assert error["line"] == 2 and "never closed" in error["message"]


FORMULAS = ['=HYPERLINK("http://evil.example","click")', "+cmd|' /C calc'!A0", "@SUM(A1)", "-2+3"]


def _cells(text: str) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(text)) for cell in row]


def test_check_csv_output_is_formula_safe(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "hostile.csv"
    rows = [f'"{formula.replace(chr(34), chr(34) * 2)}",n/a' for formula in FORMULAS]
    path.write_text("Name,Phone\n" + "\n".join(rows) + "\nAda,+1 212-736-0101\n")
    result = runner.invoke(app, ["check", str(path), "--format", "csv", "--phone-column", "Name"])
    assert result.exit_code == 0, result.output
    cells = _cells(result.stdout)
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@")]
    assert "'" + FORMULAS[0] in cells


def test_dnc_list_csv_is_formula_safe(runner: CliRunner) -> None:
    added = runner.invoke(app, ["dnc", "add", "+1 212-736-0101", "--note", FORMULAS[0]])
    assert added.exit_code == 0, added.output
    result = runner.invoke(app, ["dnc", "list", "--format", "csv"])
    cells = _cells(result.stdout)
    assert "'" + FORMULAS[0] in cells and "'+12127360101" in cells
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@")]


def test_import_refuses_a_name_the_campaign_file_refuses(runner: CliRunner, sheet: Path) -> None:
    result = runner.invoke(app, ["import", str(sheet), "--campaign", "bad name!"])
    assert result.exit_code == 1
    assert "campaign name 'bad name!'" in result.stderr
    assert json.loads(runner.invoke(app, ["campaigns", "--format", "json"]).stdout) == []


def test_a_ledger_file_that_is_no_database_is_one_line(tmp_path: Path) -> None:
    """The driver's own error (not a connection fault) is a one-line refusal too."""
    broken = tmp_path / "ledger.db"
    broken.write_bytes(b"this is not a SQLite database" * 100)
    completed = dialer(["campaigns"], DIALER_DATABASE_URL=f"sqlite:///{broken}")
    assert completed.returncode == 4, completed.stderr
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), completed.stderr


def test_cells_that_look_like_markup_are_printed_as_text(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "[odd] name.csv"
    path.write_text("Name,Phone\nAda,[/foo]\nBob,[bold]+1 212-736-0101\n")
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert "[/foo]" in result.stdout and "[odd] name.csv" in result.stdout
    runner.invoke(app, ["dnc", "add", "+1 212-736-0101", "--note", "[/x] said stop"])
    listed = runner.invoke(app, ["dnc", "list"])
    assert listed.exit_code == 0 and "[/x] said stop" in listed.stdout
