"""The runner in `dialer serve`: a start pressed on the desk is taken by exactly one of
several replicas on one PostgreSQL ledger, and runs under the campaign's run lock.

The runs are real (the engine runs the stored campaign from the ledger); the campaign's
`end_at` is in the past, so the engine stops before its first dial and needs no LiveKit
(the e2e test `tests/e2e/test_desk.py` dials for real).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from campaign.config import get_settings
from campaign.runner import dial_campaign
from campaign.scheduler import CampaignScheduler
from campaign.store import desk as desk_store
from campaign.store import open_ledger
from campaign.store.models import CampaignRun, RunRequest
from campaign.web import actions, forms
from campaign.web.actions import Desk
from campaign.web.sheets import rows_sheet

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture(autouse=True)
def trunk(livekit_settings: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shared LiveKit settings, and a default trunk."""
    monkeypatch.setenv("SIP_OUTBOUND_TRUNK_ID", "ST_test")


def replica(url: str, tmp_path: Path, n: int) -> CampaignScheduler:
    return CampaignScheduler(
        open_ledger(url),
        campaigns_dir=tmp_path / "campaigns",  # empty: the campaign lives in the ledger only
        reports_dir=tmp_path / f"reports-{n}",
        dialer=dial_campaign,
        request_poll_seconds=0.2,
    )


def test_one_start_is_run_once_by_one_of_two_replicas(pg_ledger_url: str, tmp_path: Path) -> None:
    replicas = [replica(pg_ledger_url, tmp_path, n) for n in (1, 2)]
    desk = Desk(replicas[0].ledger, get_settings(), replicas[0])
    actions.save_campaign(
        desk,
        {"name": "desk-made", "agent_name": "a", "end_at": "2020-01-01T00:00:00Z",
         "calling_hours": {"start": "00:00", "end": "24:00", "days": "all",
                           "override_legal_limits": True}},
        create=True,
    )  # fmt: skip
    sheet = rows_sheet([{"Name": "Ada", "Phone": "+12127360101"}], "crm")
    actions.import_into(desk, "desk-made", sheet, phone_column=None)
    request, new = actions.start(desk, "desk-made", "olga")
    assert new

    threads = [threading.Thread(target=r.serve_requests) for r in replicas]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while desk_store.requests_of(desk.ledger, "desk-made")[0].status in ("pending", "taken"):
            assert time.monotonic() < deadline, "the request was not run"
            time.sleep(0.1)
    finally:
        for r in replicas:
            r.stop.set()
        for thread in threads:
            thread.join(timeout=30)

    with desk.ledger.session() as s:
        (row,) = s.scalars(select(RunRequest)).all()
        runs = s.scalars(select(CampaignRun).where(CampaignRun.campaign == "desk-made")).all()
    assert row.id == request.id
    assert row.status == "done", row.summary
    assert row.taken_by in {r.owner for r in replicas}
    assert len(runs) == 1  # run once, by one replica
    assert (runs[0].trigger, runs[0].status, runs[0].owner) == ("desk", "done", row.taken_by)
    assert "dialer: " in (row.summary or "")  # the engine ran the stored campaign
    assert forms.DESK_CONTACTS not in (row.summary or "")  # no sheet was read from a path
    for r in replicas:
        r.ledger.dispose()


def test_a_start_while_another_run_holds_the_lock_is_skipped(
    pg_ledger_url: str, tmp_path: Path
) -> None:
    from datetime import timedelta

    from campaign.store import schedules

    runner = replica(pg_ledger_url, tmp_path, 1)
    desk = Desk(runner.ledger, get_settings(), runner)
    actions.save_campaign(desk, {"name": "busy", "agent_name": "a"}, create=True)
    actions.import_into(
        desk, "busy", rows_sheet([{"Phone": "+12127360101"}], "crm"), phone_column=None
    )
    lease = schedules.acquire_run(
        runner.ledger, "busy", owner="elsewhere", trigger="schedule", ttl=timedelta(minutes=5)
    )
    assert lease is not None
    request, _ = actions.start(desk, "busy", "olga")
    taken = desk_store.take_request(runner.ledger, runner.owner)
    assert taken is not None and taken.id == request.id
    result = runner.run_request(taken)
    assert result.status == "skipped"
    (row,) = desk_store.requests_of(runner.ledger, "busy")
    assert row.status == "skipped"
    assert "elsewhere" in (row.summary or "")
    runner.ledger.dispose()


def test_a_start_taken_by_a_runner_that_died_is_not_waited_for(
    pg_ledger_url: str, tmp_path: Path
) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from campaign.store import utcnow

    runner = replica(pg_ledger_url, tmp_path, 1)
    desk = Desk(runner.ledger, get_settings(), runner)
    actions.save_campaign(desk, {"name": "orphan", "agent_name": "a"}, create=True)
    actions.import_into(
        desk, "orphan", rows_sheet([{"Phone": "+12127360101"}], "crm"), phone_column=None
    )
    first, _ = actions.start(desk, "orphan", "olga")
    taken = desk_store.take_request(runner.ledger, "dead-host:1:abc")  # then the host dies
    assert taken is not None and taken.id == first.id

    again, new = actions.start(desk, "orphan", "olga")
    assert (again.id, new) == (first.id, False)  # just taken: its run may be starting

    with runner.ledger.session() as s:  # long ago, and no run lock was ever taken
        s.execute(
            update(RunRequest).values(taken_at=utcnow() - desk_store.TAKEN_TTL - timedelta(1))
        )
    fresh, new = actions.start(desk, "orphan", "olga")
    assert new and fresh.id != first.id
    (old,) = [r for r in desk_store.requests_of(runner.ledger, "orphan") if r.id == first.id]
    assert old.status == "lost"
    assert "dead-host" in (old.summary or "")
    runner.ledger.dispose()
