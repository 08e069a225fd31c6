"""Plain data for the pages and the API: a campaign's line, its status, times in two zones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from campaign import runner
from campaign.outcomes import FINAL_CONTACT_STATUSES, Outcome
from campaign.store import Ledger, schedules
from campaign.store import desk as desk_store
from campaign.store import imports as import_store
from campaign.store.dialing import CampaignSummary


@dataclass(frozen=True)
class CampaignLine:
    """One campaign as the campaigns page and `GET /api/campaigns` show it."""

    name: str
    status: str
    contacts: int
    done: int
    answered: int
    dials: int
    in_flight: int
    remaining: int
    next_due: datetime | None
    running: bool
    requested: bool

    @property
    def progress(self) -> float:
        return self.done / self.contacts if self.contacts else 0.0

    @property
    def answer_rate(self) -> float | None:
        return self.answered / self.dials if self.dials else None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "contacts": self.contacts,
            "done": self.done,
            "progress": round(self.progress, 4),
            "answered": self.answered,
            "dials": self.dials,
            "answer_rate": None if self.answer_rate is None else round(self.answer_rate, 4),
            "in_flight": self.in_flight,
            "remaining": self.remaining,
            "next_due": iso(self.next_due),
            "running": self.running,
            "start_requested": self.requested,
        }


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def line_of(summary: CampaignSummary, *, running: bool, requested: bool) -> CampaignLine:
    contacts = sum(summary.contacts.values())
    done = sum(n for status, n in summary.contacts.items() if status in FINAL_CONTACT_STATUSES)
    return CampaignLine(
        name=summary.name,
        status=summary.status,
        contacts=contacts,
        done=done,
        answered=summary.outcomes.get(Outcome.ANSWERED.value, 0),
        dials=summary.dials,
        in_flight=summary.in_flight,
        remaining=summary.remaining,
        next_due=summary.next_attempt_at,
        running=running,
        requested=requested,
    )


def campaign_line(ledger: Ledger, name: str) -> CampaignLine:
    summary = runner.status(ledger, name)
    requests = desk_store.requests_of(ledger, name, limit=1)
    requested = bool(requests and requests[0].status == "pending")
    return line_of(
        summary, running=schedules.open_run(ledger, name) is not None, requested=requested
    )


def campaign_lines(ledger: Ledger) -> list[CampaignLine]:
    with ledger.session() as session:
        names = [count.name for count in import_store.campaign_counts(session)]
    return [campaign_line(ledger, name) for name in names]


def status_json(summary: CampaignSummary, line: CampaignLine) -> dict[str, Any]:
    """`GET /api/campaigns/NAME/status`: `dialer status` as JSON, plus the desk's figures."""
    return {
        **line.to_json(),
        "contacts_by_status": dict(summary.contacts),
        "outcomes": dict(summary.outcomes),
        "attempts": summary.attempts,
        "remaining": summary.remaining,
        "first_dial_at": iso(summary.first_dial_at),
        "last_dial_at": iso(summary.last_dial_at),
    }


def zone_of(names: list[str], fallback: str) -> ZoneInfo | None:
    for name in [*names, fallback]:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return None


def local_time(moment: datetime | None, zones: list[str], fallback: str) -> str:
    """`14:05 (America/New_York)`: the contact's own clock at that moment."""
    if moment is None:
        return ""
    zone = zone_of(zones, fallback)
    if zone is None:
        return ""
    return f"{moment.astimezone(zone):%H:%M} {zone.key}"
