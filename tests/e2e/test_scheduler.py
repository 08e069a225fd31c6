"""A schedule added with `dialer schedule add` fires in `dialer scheduler`, runs the campaign
against the devstack with the real agent worker and leaves its workbook in `metrics_reports/`.

The SIGTERM test names an agent no worker registers, so each attempt waits for an agent
that never comes (and is then not dialed, `agent_unavailable`): a run with attempts in
flight whose length the test controls. They finish, are recorded, and the process exits 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from campaign.store import Attempt, open_ledger
from campaign.store import schedules as schedule_store
from devstack import phones
from devstack.phones import Behaviour
from tests.campaigns import ALL_HOURS
from tests.e2e.agent_worker import start_agent_worker

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def write_campaign(workdir: Path, agent: str, *, agent_join_timeout: str) -> Path:
    campaigns = workdir / "campaigns"
    campaigns.mkdir(exist_ok=True)
    doc = {
        "name": "nightly",
        "contacts": "nightly.csv",
        "region": "US",
        "agent_name": agent,
        "max_concurrent_calls": 2,
        "calling_hours": ALL_HOURS,
        "time_zone": "America/New_York",
        "agent_join_timeout": agent_join_timeout,
        "retry": {"busy": "never"},
    }
    (campaigns / "nightly.yaml").write_text(yaml.safe_dump(doc))
    (campaigns / "nightly.csv").write_text(
        "Name,Phone\n"
        f"Busy Bee,{phones.NUMBERS[Behaviour.BUSY]}\n"
        f"Dee Clines,{phones.NUMBERS[Behaviour.DECLINES]}\n"
    )
    return workdir


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def environment(workdir: Path, devstack_env: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        **devstack_env,
        "DIALER_DATABASE_URL": f"sqlite:///{workdir / 'ledger.db'}",
        "DIALER_REPORTS_DIR": str(workdir / "metrics_reports"),
        "COLUMNS": "300",
    }


def start_scheduler(workdir: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    add = subprocess.run(
        [sys.executable, "-m", "campaign", "schedule", "add", "nightly",
         "--cron", "* * * * *", "--tz", "UTC"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert add.returncode == 0, add.stderr
    sink = (workdir / "scheduler.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "campaign", "scheduler"],
        cwd=workdir, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def attempts(workdir: Path) -> list[Attempt]:
    ledger = open_ledger(f"sqlite:///{workdir / 'ledger.db'}")
    try:
        with ledger.session() as s:
            return list(s.scalars(select(Attempt).order_by(Attempt.id)))
    finally:
        ledger.dispose()


def test_a_scheduled_run_fires_dials_through_livekit_and_writes_the_workbook(
    workdir: Path, devstack_env: dict[str, str]
) -> None:
    env = environment(workdir, devstack_env)
    with start_agent_worker(database_url=env["DIALER_DATABASE_URL"], env=devstack_env) as worker:
        write_campaign(workdir, worker.agent_name, agent_join_timeout="30s")
        proc = start_scheduler(workdir, env)
        log = workdir / "scheduler.log"
        deadline = time.monotonic() + 150  # the next minute, plus the run
        while "campaign nightly: done" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert stop(proc) == 0, log.read_text()

    made = attempts(workdir)[:2]
    assert len(made) == 2
    # the agent joined each room, so the phones were really dialed and answered as they do
    assert sorted(a.outcome or "" for a in made) == ["busy", "declined"]
    assert sorted(a.sip_status_code or 0 for a in made) == [486, 603]
    assert all(a.room_name.startswith("nightly-") for a in made)
    assert all(a.status == "done" and a.ended_at is not None for a in made)
    assert len(list((workdir / "metrics_reports").glob("nightly-*.xlsx"))) == 1
    ledger = open_ledger(f"sqlite:///{workdir / 'ledger.db'}")
    # the first (a second may start at SIGTERM)
    run = schedule_store.recent_runs(ledger, "nightly")[-1]
    assert (run.trigger, run.status) == ("schedule", "done")
    assert run.summary is not None
    assert "2 new contact(s)" in run.summary


def test_sigterm_lets_attempts_in_flight_finish_and_exits_0(
    workdir: Path, devstack_env: dict[str, str]
) -> None:
    write_campaign(workdir, f"sched-e2e-{uuid.uuid4().hex[:8]}", agent_join_timeout="4s")
    proc = start_scheduler(workdir, environment(workdir, devstack_env))
    log = workdir / "scheduler.log"
    deadline = time.monotonic() + 90
    while not any(a.status != "done" for a in attempts(workdir)):  # an attempt in flight
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    assert stop(proc) == 0, log.read_text()

    made = attempts(workdir)
    assert made
    assert all(a.status == "done" and a.outcome == "agent_unavailable" for a in made)
    output = log.read_text()
    assert "received SIGTERM" in output
    assert "draining" in output
    ledger = open_ledger(f"sqlite:///{workdir / 'ledger.db'}")
    (run,) = schedule_store.recent_runs(ledger, "nightly")
    assert run.status == "interrupted", run.summary
    assert list((workdir / "metrics_reports").glob("nightly-*.xlsx"))
