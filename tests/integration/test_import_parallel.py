"""A big sheet's import written by a child process while this one checks the sheet: the
same rows as the in-process import, in one transaction, and nothing when it fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from campaign.contacts import policy, read_sheet
from campaign.store import LedgerError, open_ledger
from campaign.store import imports as import_store

pytestmark = pytest.mark.integration

#: rows checked between two runs handed to the writer, small so a small sheet has many
_EVERY = 20


@pytest.fixture(autouse=True)
def small_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy, "_PROGRESS_EVERY", 10)
    monkeypatch.setattr(policy, "_STREAM_EVERY", _EVERY)


def sheet_file(path: Path, rows: int) -> Path:
    """Valid, invalid, repeated (also across the runs' borders) and long-named rows."""
    lines = ["Name,Phone,Plan,Zone"]
    for i in range(rows):
        if i % 17 == 5:
            phone = "n/a"
        elif i % 13 == 0 and i:
            phone = f"+1 212 555 {1000 + i - _EVERY // 2:04d}"  # the row half a run back
        elif i % 29 == 7:
            phone = "+1 900 555 0100"  # premium rate: valid, not dialable
        else:
            phone = f"+1 212 555 {1000 + i:04d}"
        name = "N" * 250 if i == 3 else f'Contact "{i}"'
        zone = "America/Chicago" if i % 7 == 0 else ""
        lines.append(f'"{name.replace(chr(34), chr(34) * 2)}",{phone},plan {i % 3},{zone}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def stored(url: str, campaign: str) -> dict[str, list[tuple[Any, ...]]]:
    """The campaign's contacts (in id order) and rejections, without ids and times."""
    ledger = open_ledger(url, migrate=False)
    with ledger.engine.connect() as conn:
        (campaign_id,) = conn.execute(
            text("SELECT id FROM campaigns WHERE name = :name"), {"name": campaign}
        ).one()
        found = {
            "contacts": list(
                conn.execute(
                    text(
                        "SELECT e164, raw_phone, extension, name, CAST(timezones AS TEXT),"
                        " zone_set_id, CAST(variables AS TEXT), source, source_row, status,"
                        " attempts_count, is_test, due_at = created_at"
                        " FROM contacts WHERE campaign_id = :c ORDER BY id"
                    ),
                    {"c": campaign_id},
                )
            ),
            "rejections": list(
                conn.execute(
                    text(
                        "SELECT source, source_row, raw, reason, e164, duplicate_of_row,"
                        " CAST(cells AS TEXT) FROM rejections WHERE campaign_id = :c"
                        " ORDER BY source_row"
                    ),
                    {"c": campaign_id},
                )
            ),
        }
    ledger.dispose()
    return found


def writer_processes(parent_pid: int | None = None) -> list[int]:
    """The import writers of this process (or of `parent_pid`) still running."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        wanted = os.getpid() if parent_pid is None else parent_pid
        if parent == wanted and b"campaign.store.import_writer" in command:
            found.append(int(entry.name))
    return found


def test_the_writer_process_stores_what_the_in_process_import_does(
    any_ledger_url: str, tmp_path: Path
) -> None:
    ledger = open_ledger(any_ledger_url)
    sheet = read_sheet(sheet_file(tmp_path / "big.csv", 400))
    with ledger.session() as session:
        import_store.add_dnc(session, ["+12125551010"])
    serial, checked = import_store.import_sheet(
        ledger, sheet, campaign="serial", region="US", default_region="US", parallel=False
    )
    handed, result = import_store.import_sheet(
        ledger, sheet, campaign="parallel", region="US", default_region="US", parallel=True
    )
    assert serial.new > 300 and serial.duplicates > 20 and serial.rejected > 30
    assert serial.dnc == 1
    assert handed == serial.__class__(**{**vars_of(serial), "campaign": "parallel"})
    assert result.to_json() == checked.to_json()
    one, other = stored(any_ledger_url, "serial"), stored(any_ledger_url, "parallel")
    assert one == other
    rows = [contact[8] for contact in other["contacts"]]
    assert rows == sorted(rows)  # written in sheet order: ids follow the rows
    again, _ = import_store.import_sheet(
        ledger, sheet, campaign="parallel", region="US", default_region="US", parallel=True
    )
    assert (again.new, again.already_present) == (0, serial.new)
    assert stored(any_ledger_url, "parallel") == other
    assert writer_processes() == []


def vars_of(summary: import_store.ImportSummary) -> dict[str, Any]:
    return {name: getattr(summary, name) for name in summary.__dataclass_fields__}


def test_a_writer_that_dies_is_a_clear_error_and_stores_nothing(
    any_ledger_url: str, tmp_path: Path
) -> None:
    ledger = open_ledger(any_ledger_url)
    sheet = read_sheet(sheet_file(tmp_path / "big.csv", 400))
    killed: list[int] = []

    def kill_the_writer(done: int, _total: int) -> None:
        if done >= 200 and not killed:
            deadline = time.monotonic() + 10
            while not (found := writer_processes()) and time.monotonic() < deadline:
                time.sleep(0.05)
            killed.extend(found)
            os.kill(found[0], signal.SIGKILL)

    started = time.monotonic()
    with pytest.raises(LedgerError) as error:
        import_store.import_sheet(
            ledger,
            sheet,
            campaign="killed",
            region="US",
            default_region="US",
            parallel=True,
            progress=kill_the_writer,
        )
    assert killed and time.monotonic() - started < 30
    assert str(error.value) == (
        "the import's writer process was killed (SIGKILL) before it finished; nothing was imported"
    )
    assert import_store.campaign_region(ledger, "killed") is None  # not even the campaign
    with ledger.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM contacts")).scalar() == 0
    assert writer_processes() == []
    summary, _ = import_store.import_sheet(  # and the ledger takes the next import
        ledger, sheet, campaign="killed", region="US", default_region="US", parallel=True
    )
    assert summary.new > 300


def test_a_sheet_failing_midway_stops_the_writer_and_stores_nothing(
    any_ledger_url: str, tmp_path: Path
) -> None:
    ledger = open_ledger(any_ledger_url)
    sheet = read_sheet(sheet_file(tmp_path / "big.csv", 400))

    def fail_late(done: int, _total: int) -> None:
        if done >= 300:
            raise RuntimeError("the checking failed")

    with pytest.raises(RuntimeError, match="the checking failed"):
        import_store.import_sheet(
            ledger,
            sheet,
            campaign="halfway",
            region="US",
            default_region="US",
            parallel=True,
            progress=fail_late,
        )
    assert writer_processes() == []
    assert import_store.campaign_region(ledger, "halfway") is None
    with ledger.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM contacts")).scalar() == 0


def test_concurrent_parallel_imports_of_overlapping_sheets(
    pg_ledger_url: str, tmp_path: Path
) -> None:
    """Two writer processes COPY the same numbers into one campaign at once: neither
    fails, and each number is stored once."""
    ledger = open_ledger(pg_ledger_url)
    sheets = [read_sheet(sheet_file(tmp_path / f"{name}.csv", 400)) for name in ("a", "b")]
    summaries: list[import_store.ImportSummary] = []
    errors: list[BaseException] = []

    def run(sheet: Any) -> None:
        try:
            summaries.append(
                import_store.import_sheet(
                    ledger, sheet, campaign="both", region="US", default_region="US", parallel=True
                )[0]
            )
        except BaseException as exc:  # the test reports what the other import hit
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(sheet,)) for sheet in sheets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors and len(summaries) == 2
    accepted = summaries[0].new + summaries[0].already_present  # the sheets are the same
    assert accepted > 300
    contacts = stored(pg_ledger_url, "both")["contacts"]
    assert len(contacts) == len({contact[0] for contact in contacts}) == accepted
    assert writer_processes() == []


def test_dialer_import_of_a_big_sheet_goes_through_the_writer(
    sqlite_ledger_url: str, tmp_path: Path
) -> None:
    """`dialer import` as users run it, on a sheet big enough for the writer process."""
    rows = import_store.PARALLEL_ROWS + 10
    path = tmp_path / "big.csv"
    lines = ["Name,Phone"] + [
        f"C{i},+1 212 7{i // 10_000:02d} {i % 10_000:04d}" for i in range(rows)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dialer = Path(sys.executable).parent / "dialer"
    env = {**os.environ, "DIALER_DATABASE_URL": sqlite_ledger_url, "DIALER_LOG_LEVEL": "WARNING"}
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with (
        out.open("w") as stdout_file,
        err.open("w") as stderr_file,
        subprocess.Popen(  # output to files: an unread pipe could fill and stall it
            [str(dialer), "import", str(path), "--campaign", "big", "--region", "US"],
            stdout=stdout_file,
            stderr=stderr_file,
            env=env,
        ) as command,
    ):
        seen = False
        deadline = time.monotonic() + 120
        while command.poll() is None and time.monotonic() < deadline:
            seen = seen or bool(writer_processes(command.pid))
            time.sleep(0.05)
        command.wait(10)
    stdout, stderr = out.read_text(), err.read_text()
    assert command.returncode == 0, stderr
    assert seen, "no writer process was started"
    assert f"rows {rows}  new {rows}  already in campaign 0" in stdout
    assert stored(sqlite_ledger_url, "big")["contacts"][-1][8] == rows + 1  # the last row
