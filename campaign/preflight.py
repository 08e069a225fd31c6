"""`dialer doctor`: is everything a campaign needs in place? One check per line.

Checks, in order: the environment variables (names only, never values); LiveKit
answers and takes the key and secret; the outbound SIP trunk exists (its address
and numbers); an agent worker with the campaign's agent name takes a test
dispatch (a `DialRequest` with `probe=True` into a throwaway room, deleted
afterwards); the ledger is reachable and migrated (the doctor never migrates);
and, given a campaign file, that it and its sheets validate and where its calling
hours stand now in the contacts' time zones. A check that cannot run because an
earlier one failed is skipped, saying which.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from campaign.campaign_file import CampaignConfig, CampaignFileError, load_campaign
from campaign.config import Settings, get_settings
from campaign.contacts import SheetError, read_sheet, validate_sheet
from campaign.contract import DialRequest
from campaign.store import Ledger, LedgerError, utcnow
from campaign.telephony import (
    RetrySettings,
    Telephony,
    TelephonyError,
    TrunkInfo,
    refused_credentials,
)

#: the longest the agent gets to join the test dispatch
AGENT_PROBE_TIMEOUT_S = 20.0
#: zones listed by the calling-hours line before "..."
ZONES_SHOWN = 3
#: the doctor answers quickly: short requests, one retry
DOCTOR_RETRY = RetrySettings(attempts=2, initial_wait=0.25, max_wait=1.0)
DOCTOR_REQUEST_TIMEOUT_S = 5.0


class Status(StrEnum):
    PASS = "pass"  #: in place
    WARN = "warn"  #: works, but worth knowing (does not fail the doctor)
    FAIL = "fail"  #: a campaign would not run; `fix` says what to do
    SKIP = "skip"  #: not checked, because of an earlier failure or a missing input


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass
class DoctorReport:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(check.status is not Status.FAIL for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(check) for check in self.checks]}


# --------------------------------------------------------------------------- environment

#: what the dialer needs set (SIP_OUTBOUND_TRUNK_ID only when the campaign has no trunk_id)
REQUIRED = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET", "SIP_OUTBOUND_TRUNK_ID")
#: set or not, these have working defaults
OPTIONAL = ("DIALER_DATABASE_URL", "AGENT_NAME")


def check_environment(
    environ: dict[str, str], *, trunk_in_campaign: bool, default_url: str
) -> Check:
    """Which variables are set, by name; the values are never read into the message."""
    required = [n for n in REQUIRED if not (n == "SIP_OUTBOUND_TRUNK_ID" and trunk_in_campaign)]
    missing = [n for n in required if not environ.get(n)]
    defaults = [n for n in OPTIONAL if not environ.get(n)]
    notes = f"; defaults used for {', '.join(defaults)}" if defaults else ""
    if missing == ["LIVEKIT_URL"]:
        return Check(
            "environment",
            Status.WARN,
            f"LIVEKIT_URL is not set; using {default_url}{notes}",
            "set LIVEKIT_URL in .env unless LiveKit runs on this machine",
        )
    missing = [n for n in missing if n != "LIVEKIT_URL"]
    if missing:
        return Check(
            "environment",
            Status.FAIL,
            f"missing: {', '.join(missing)}",
            "set them in .env (see .env.example) or the environment",
        )
    shown = [n for n in required if environ.get(n)]
    return Check("environment", Status.PASS, f"{', '.join(shown)} set{notes}")


# --------------------------------------------------------------------------- LiveKit


async def check_livekit(tel: Telephony, url: str) -> Check:
    try:
        rooms = await tel.check_access()
    except TelephonyError as exc:
        if refused_credentials(exc):
            fix = "set LIVEKIT_API_KEY and LIVEKIT_API_SECRET to a key pair of this server"
        else:
            fix = "start LiveKit, or set LIVEKIT_URL to where it runs"
        return Check("livekit", Status.FAIL, str(exc), fix)
    return Check("livekit", Status.PASS, f"{url} answers; key and secret accepted ({rooms} rooms)")


def describe_trunk(trunk: TrunkInfo) -> str:
    numbers = ", ".join(trunk.numbers) or "none (set caller_id in the campaign)"
    name = f" ({trunk.name})" if trunk.name else ""
    return f"{trunk.trunk_id}{name}: {trunk.address} over {trunk.transport}; numbers {numbers}"


async def check_trunk(tel: Telephony, trunk_id: str) -> Check:
    if not trunk_id:
        return Check(
            "sip trunk",
            Status.FAIL,
            "no outbound trunk configured",
            "set SIP_OUTBOUND_TRUNK_ID, or trunk_id in the campaign file",
        )
    try:
        trunks = await tel.outbound_trunks()
    except TelephonyError as exc:
        return Check("sip trunk", Status.FAIL, str(exc), "check that LiveKit runs its SIP service")
    found = next((t for t in trunks if t.trunk_id == trunk_id), None)
    if found is not None:
        return Check("sip trunk", Status.PASS, describe_trunk(found))
    known = ", ".join(f"{t.trunk_id} ({t.address})" for t in trunks) or "none"
    return Check(
        "sip trunk",
        Status.FAIL,
        f"no outbound trunk {trunk_id} on this server; it has: {known}",
        "set SIP_OUTBOUND_TRUNK_ID (or trunk_id in the campaign file) to one of these,"
        " or create the trunk (docs/devstack.md)",
    )


async def check_agent(tel: Telephony, agent_name: str, timeout: float) -> Check:
    """A probe dispatch into a throwaway room: the agent joins, is seen, the room goes."""
    room = f"doctor-probe-{uuid.uuid4().hex[:10]}"
    probe = DialRequest(
        campaign="doctor", contact_id=0, attempt_id=0, phone_masked="", is_test=True, probe=True
    )
    started = time.monotonic()
    try:
        joined = await tel.probe_agent(room, agent_name, probe.model_dump_json(), timeout)
    except TelephonyError as exc:
        return Check("agent", Status.FAIL, str(exc), "check the LiveKit server's log")
    if joined:
        took = time.monotonic() - started
        return Check(
            "agent",
            Status.PASS,
            f"agent {agent_name!r} took a test dispatch and joined in {took:.1f} s",
        )
    return Check(
        "agent",
        Status.FAIL,
        f"no agent {agent_name!r} joined a test dispatch within {timeout:.0f} s",
        f"start the worker (`python -m agent start`) with AGENT_NAME={agent_name},"
        " or fix agent_name in the campaign file; see the worker's log",
    )


# --------------------------------------------------------------------------- ledger


def check_ledger(url: str) -> Check:
    """Reachable and at the newest migration; nothing is created or migrated."""
    fix_migrate = "run any other dialer command (e.g. `dialer campaigns`): it migrates"
    try:
        parsed = make_url(url)
    except ArgumentError:
        return Check("ledger", Status.FAIL, "DIALER_DATABASE_URL is not a database URL", "")
    safe = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database).expanduser()
        if not path.exists():
            # not a fault: the first `dialer import` or `dialer run` creates and migrates it
            return Check(
                "ledger",
                Status.WARN,
                f"no ledger file at {path} yet",
                "none needed: the first `dialer import` or `dialer run` creates it",
            )
    try:
        ledger = Ledger(url)
    except LedgerError as exc:
        return Check("ledger", Status.FAIL, str(exc), "fix DIALER_DATABASE_URL")
    try:
        current = ledger.is_current()
    except SQLAlchemyError as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
        return Check(
            "ledger",
            Status.FAIL,
            f"cannot reach the ledger at {safe}: {reason}",
            "start the database or fix DIALER_DATABASE_URL",
        )
    finally:
        ledger.dispose()
    if not current:
        return Check(
            "ledger",
            Status.FAIL,
            f"{safe} is reachable but not migrated to the newest schema",
            fix_migrate,
        )
    return Check("ledger", Status.PASS, f"{safe} is reachable and migrated")


# --------------------------------------------------------------------------- campaign


@dataclass(frozen=True)
class SheetSummary:
    """The campaign's sheets, checked: counts and each dialable contact's zones."""

    rows: int
    dialable: int
    rejected: int
    zones: Counter[tuple[str, ...]]


def check_campaign(config: CampaignConfig, path: Path) -> tuple[Check, SheetSummary | None]:
    """Every sheet read and checked the way `dialer run` imports it."""
    zones: Counter[tuple[str, ...]] = Counter()
    rows = dialable = rejected = 0
    parts = []
    for sheet_path in config.contacts:
        try:
            result = validate_sheet(read_sheet(sheet_path), region=config.region)
        except (SheetError, OSError) as exc:
            return Check(
                "campaign",
                Status.FAIL,
                f"{path}: cannot read {sheet_path}: {exc}",
                "fix the sheet path (relative to the campaign file) or the sheet",
            ), None
        for contact in result.accepted:
            zones[tuple(contact.timezones)] += 1
        rows += result.rows
        dialable += len(result.accepted)
        rejected += len(result.rejected) + len(result.duplicates)
        parts.append(f"{sheet_path.name} {len(result.accepted)} of {result.rows} rows dialable")
    summary = SheetSummary(rows, dialable, rejected, zones)
    detail = f"{path} is valid; " + ", ".join(parts)
    if dialable == 0:
        return Check(
            "campaign",
            Status.FAIL,
            detail,
            "the sheets hold no dialable number: `dialer check SHEET` shows why",
        ), summary
    if rejected:
        return Check(
            "campaign", Status.PASS, f"{detail} ({rejected} rejected: `dialer check SHEET`)"
        ), summary
    return Check("campaign", Status.PASS, detail), summary


def check_hours(config: CampaignConfig, sheets: SheetSummary, now: datetime) -> Check:
    """Where the calling hours stand now in the contacts' zones."""
    window = config.window
    open_now = sum(n for zones, n in sheets.zones.items() if window.is_open(zones, now))
    seen: dict[str, str] = {}
    for zones, _ in sheets.zones.most_common():
        for tz in window.zones_for(zones):
            seen.setdefault(tz.key, f"{tz.key} {now.astimezone(tz):%a %H:%M}")
    local = ", ".join(list(seen.values())[:ZONES_SHOWN])
    if len(seen) > ZONES_SHOWN:
        local += f" and {len(seen) - ZONES_SHOWN} more zones"
    detail = (
        f"{window.describe()} local: open now for {open_now} of {sheets.dialable} contacts"
        f" ({local})"
    )
    if open_now:
        return Check("calling hours", Status.PASS, detail)
    opens = [window.next_open(list(zones), now) for zones in sheets.zones]
    first = min((t for t in opens if t is not None), default=None)
    when = f"; first opens {first:%Y-%m-%d %H:%M} UTC" if first else "; never within a week"
    return Check(
        "calling hours",
        Status.WARN,
        detail + when,
        "`dialer run` waits for the window; change calling_hours to call sooner",
    )


# --------------------------------------------------------------------------- all of it


async def run_checks(
    settings: Settings,
    environ: dict[str, str],
    *,
    campaign_file: Path | None = None,
    database_url: str | None = None,
    agent_timeout: float = AGENT_PROBE_TIMEOUT_S,
    now: datetime | None = None,
) -> DoctorReport:
    """Every check, in order; failures do not stop the later checks that can still run."""
    checks: list[Check] = []
    config: CampaignConfig | None = None
    campaign_check: Check | None = None
    if campaign_file is not None:
        try:
            config = load_campaign(campaign_file)
        except CampaignFileError as exc:
            campaign_check = Check("campaign", Status.FAIL, str(exc), "fix the campaign file")
    trunk_id = (config.trunk_id if config else None) or settings.sip_outbound_trunk_id
    agent_name = (config.agent_name if config else None) or settings.agent_name

    checks.append(
        check_environment(
            environ,
            trunk_in_campaign=bool(config and config.trunk_id),
            default_url=settings.livekit_url,
        )
    )
    secret = settings.livekit_api_secret.get_secret_value()
    if not (settings.livekit_api_key and secret):
        reason = "skipped: LIVEKIT_API_KEY and LIVEKIT_API_SECRET are needed"
        checks += [Check(n, Status.SKIP, reason) for n in ("livekit", "sip trunk", "agent")]
    else:
        async with Telephony.from_settings(
            settings,
            retry=DOCTOR_RETRY,
            request_timeout=DOCTOR_REQUEST_TIMEOUT_S,
        ) as tel:
            livekit = await check_livekit(tel, settings.livekit_http_url)
            checks.append(livekit)
            if livekit.status is Status.FAIL:
                reason = "skipped: LiveKit did not accept the API request"
                checks += [Check(n, Status.SKIP, reason) for n in ("sip trunk", "agent")]
            else:
                checks.append(await check_trunk(tel, trunk_id))
                checks.append(await check_agent(tel, agent_name, agent_timeout))
    checks.append(check_ledger(database_url or settings.database_url))

    if campaign_file is None:
        reason = "skipped: no campaign file given (`dialer doctor campaigns/x.yaml`)"
        checks += [Check(n, Status.SKIP, reason) for n in ("campaign", "calling hours")]
    elif config is None:
        assert campaign_check is not None  # load_campaign failed
        checks += [campaign_check, Check("calling hours", Status.SKIP, "skipped: no campaign")]
    else:
        campaign, sheets = await asyncio.to_thread(check_campaign, config, campaign_file)
        checks.append(campaign)
        if sheets is None or not sheets.dialable:
            checks.append(Check("calling hours", Status.SKIP, "skipped: no dialable contact"))
        else:
            checks.append(check_hours(config, sheets, now or utcnow()))
    return DoctorReport(checks)


def doctor(campaign_file: Path | None = None, *, db: str | None = None) -> DoctorReport:
    """`dialer doctor [campaigns/x.yaml]`, from the process's settings and environment."""
    return asyncio.run(
        run_checks(get_settings(), dict(os.environ), campaign_file=campaign_file, database_url=db)
    )
