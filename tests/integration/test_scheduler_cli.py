"""`dialer schedule add|list|remove|run-now` and `dialer scheduler`, as a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from campaign.store import open_ledger
from campaign.store import schedules as schedule_store
from tests.campaigns import FINISHED_CAMPAIGN_YAML

pytestmark = pytest.mark.integration


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    (campaigns / "nightly.yaml").write_text(FINISHED_CAMPAIGN_YAML)
    (campaigns / "nightly.csv").write_text("Name,Phone\nAda,+1 212-736-0101\n")
    return tmp_path


def environment(workdir: Path, url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DIALER_DATABASE_URL": url,
        "DIALER_REPORTS_DIR": str(workdir / "metrics_reports"),
        "LIVEKIT_API_KEY": "devkey",
        "LIVEKIT_API_SECRET": "not-used-by-this-test",
        "COLUMNS": "300",  # no wrapped log lines
    }


def dialer(workdir: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "campaign", *args],
        cwd=workdir,
        env=environment(workdir, url),
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_for_text(path: Path, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.1)
    pytest.fail(f"{text!r} not in {path} within {timeout} s:\n{content}")


def test_schedule_commands(workdir: Path, sqlite_ledger_url: str) -> None:
    added = dialer(
        workdir, sqlite_ledger_url, "schedule", "add", "nightly",
        "--cron", "0 19 * * 1-5", "--tz", "America/New_York", "--grace", "30",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "Schedule 1 added: campaign nightly, '0 19 * * 1-5' in America/New_York" in added.stdout

    listed = dialer(workdir, sqlite_ledger_url, "schedule", "list")
    assert listed.returncode == 0, listed.stderr
    assert "nightly" in listed.stdout
    assert "30 min" in listed.stdout

    bad = dialer(
        workdir,
        sqlite_ledger_url,
        "schedule",
        "add",
        "nightly",
        "--cron",
        "0 19 * *",
        "--tz",
        "UTC",
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("error: invalid cron expression '0 19 * *'")
    assert "Traceback" not in bad.stderr
    unknown = dialer(
        workdir,
        sqlite_ledger_url,
        "schedule",
        "add",
        "weekly",
        "--cron",
        "0 9 * * 1",
        "--tz",
        "UTC",
    )
    assert unknown.returncode == 1
    assert "no such campaign file" in unknown.stderr

    ran = dialer(workdir, sqlite_ledger_url, "schedule", "run-now", "nightly")
    assert ran.returncode == 0, ran.stderr
    assert "campaign nightly: done" in ran.stdout
    assert len(list((workdir / "metrics_reports").glob("nightly-*.xlsx"))) == 1

    removed = dialer(workdir, sqlite_ledger_url, "schedule", "remove", "1")
    assert removed.returncode == 0, removed.stderr
    assert "No schedules" in dialer(workdir, sqlite_ledger_url, "schedule", "list").stdout
    again = dialer(workdir, sqlite_ledger_url, "schedule", "remove", "1")
    assert again.returncode == 1
    assert "no schedule with id 1" in again.stderr


def test_scheduler_sees_new_schedules_and_exits_0_on_sigterm(
    workdir: Path, sqlite_ledger_url: str
) -> None:
    log = workdir / "scheduler.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "campaign", "scheduler"],
            cwd=workdir,
            env=environment(workdir, sqlite_ledger_url),
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    try:
        wait_for_text(log, "0 schedule(s) on")
        added = dialer(
            workdir, sqlite_ledger_url, "schedule", "add", "nightly",
            "--cron", "* * * * *", "--tz", "UTC",
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        # The running scheduler picks the new schedule up (within its 30 s poll) and fires
        # it at the next minute.
        wait_for_text(log, "campaign nightly: done", timeout=100)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    output = log.read_text()
    assert "received SIGTERM" in output
    assert "stopped" in output
    assert "Traceback" not in output
    runs = schedule_store.recent_runs(open_ledger(sqlite_ledger_url), "nightly")
    assert runs
    assert {(run.trigger, run.status) for run in runs} == {("schedule", "done")}
