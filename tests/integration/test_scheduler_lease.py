"""The per-campaign run lock: one run at a time, across processes, with stale-lease takeover."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from campaign.store import open_ledger
from campaign.store import schedules as schedule_store
from campaign.store.models import CampaignRun, utcnow

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

# One contender: wait for the common start time, try the lock, hold it, report.
CONTENDER = """
import json, sys, time
from datetime import timedelta
from campaign.store import open_ledger
from campaign.store import schedules as schedule_store
url, owner = sys.argv[1], sys.argv[2]
start_at, hold, ttl = (float(arg) for arg in sys.argv[3:6])
ledger = open_ledger(url, migrate=False)
with ledger.engine.connect():
    pass  # connect before the race, so the race is about the lock
time.sleep(max(0.0, start_at - time.time()))
ttl = timedelta(seconds=ttl)
lease = schedule_store.acquire_run(ledger, "nightly", owner=owner, trigger="schedule", ttl=ttl)
print(json.dumps({"owner": owner, "run_id": lease.run_id if lease else None}), flush=True)
if lease is not None:
    time.sleep(hold)
    schedule_store.finish_run(ledger, lease, "done", "held")
"""


def contender(
    url: str, owner: str, start_at: float, hold: float, ttl: float
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CONTENDER, url, owner, str(start_at), str(hold), str(ttl)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def outcome(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


@pytest.mark.postgres
def test_one_winner_among_processes_racing_on_postgres(pg_ledger_url: str) -> None:
    ledger = open_ledger(pg_ledger_url)
    start_at = time.time() + 3.0  # every process is up and connected by then
    procs = [contender(pg_ledger_url, f"p{i}", start_at, 2.0, 60) for i in range(4)]
    results = [outcome(p) for p in procs]
    winners = [r for r in results if r["run_id"] is not None]
    assert len(winners) == 1, results
    with ledger.session() as s:
        runs = s.scalars(select(CampaignRun)).all()
    assert [(r.owner, r.status) for r in runs] == [(winners[0]["owner"], "done")]


def test_one_winner_among_processes_racing_on_sqlite(sqlite_ledger_url: str) -> None:
    open_ledger(sqlite_ledger_url)
    start_at = time.time() + 3.0
    procs = [contender(sqlite_ledger_url, f"p{i}", start_at, 2.0, 60) for i in range(3)]
    results = [outcome(p) for p in procs]
    assert len([r for r in results if r["run_id"] is not None]) == 1, results


@pytest.mark.postgres
@pytest.mark.timeout(60)  # bounds the readline below
def test_a_crashed_owners_lease_is_taken_over_once_expired(pg_ledger_url: str) -> None:
    ledger = open_ledger(pg_ledger_url)
    crashed = contender(pg_ledger_url, "crashed", time.time(), 600, 2.0)
    assert crashed.stdout is not None
    first = json.loads(crashed.stdout.readline())  # bounded by the contender's own start
    assert first["run_id"] is not None
    crashed.send_signal(signal.SIGKILL)
    crashed.wait(timeout=10)

    # Still within its time to live: nobody may take it.
    assert (
        schedule_store.acquire_run(
            ledger, "nightly", owner="b", trigger="schedule", ttl=timedelta(seconds=60)
        )
        is None
    )
    deadline = time.monotonic() + 10
    lease = None
    while lease is None and time.monotonic() < deadline:
        time.sleep(0.25)
        lease = schedule_store.acquire_run(
            ledger, "nightly", owner="b", trigger="schedule", ttl=timedelta(seconds=60)
        )
    assert lease is not None
    with ledger.session() as s:
        old = s.get(CampaignRun, first["run_id"])
        assert old is not None
        assert old.status == "abandoned"
        assert old.finished_at is not None


def test_renewing_keeps_the_lease_and_a_lost_lease_cannot_renew(any_ledger_url: str) -> None:
    ledger = open_ledger(any_ledger_url)
    ttl = timedelta(seconds=30)
    a = schedule_store.acquire_run(ledger, "nightly", owner="a", trigger="schedule", ttl=ttl)
    assert a is not None
    renewed = schedule_store.renew_run(ledger, a, ttl)
    assert renewed is not None
    assert renewed.expires_at >= a.expires_at
    # `b` comes along after a's lease would have expired (a hung past its time to live).
    later = utcnow() + timedelta(minutes=5)
    b = schedule_store.acquire_run(
        ledger, "nightly", owner="b", trigger="schedule", ttl=ttl, now=later
    )
    assert b is not None
    assert schedule_store.renew_run(ledger, a, ttl) is None
    assert schedule_store.finish_run(ledger, a, "done", "too late") is False
    assert schedule_store.open_run(ledger, "nightly") is not None
    assert schedule_store.finish_run(ledger, b, "done", "ok") is True
    assert schedule_store.open_run(ledger, "nightly") is None


def test_other_campaigns_are_not_blocked(any_ledger_url: str) -> None:
    ledger = open_ledger(any_ledger_url)
    ttl = timedelta(seconds=30)
    assert schedule_store.acquire_run(ledger, "a", owner="x", trigger="manual", ttl=ttl) is not None
    assert schedule_store.acquire_run(ledger, "b", owner="x", trigger="manual", ttl=ttl) is not None
    assert schedule_store.acquire_run(ledger, "a", owner="y", trigger="manual", ttl=ttl) is None


def test_closed_rows_never_hold_the_lock(any_ledger_url: str) -> None:
    ledger = open_ledger(any_ledger_url)
    for status in ("skipped", "missed"):
        schedule_store.record_run(
            ledger, "nightly", owner="x", trigger="schedule", status=status, summary=status
        )
    assert schedule_store.open_run(ledger, "nightly") is None
    lease = schedule_store.acquire_run(
        ledger, "nightly", owner="x", trigger="schedule", ttl=timedelta(seconds=30)
    )
    assert lease is not None
    with pytest.raises(ValueError, match="unknown run status"):
        schedule_store.finish_run(ledger, lease, "great", "")
