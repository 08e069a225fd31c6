"""What the pages and the API both do, each step a call to the function the CLI calls.

Imports go through `validate_sheet` and `import_contacts` (as `dialer import`), control
through `runner.control` (as `dialer pause|resume|cancel`), status through
`runner.status`, workbooks through `write_report`, test calls through
`call.place_test_call` (as `dialer call`), the doctor through `preflight.run_checks`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVarTuple, Unpack

from campaign import preflight, runner
from campaign.call import CallError, check_number, place_test_call, resolve_config
from campaign.campaign_file import CampaignConfig
from campaign.config import Settings
from campaign.contacts import (
    Reason,
    Sheet,
    SheetResult,
    check_region,
    normalise_number,
    validate_sheet,
)
from campaign.errors import UserError
from campaign.report import write_report
from campaign.scheduler import CampaignScheduler
from campaign.store import Ledger, dialing, utcnow
from campaign.store import desk as desk_store
from campaign.store import imports as import_store
from campaign.store.imports import ImportSummary
from campaign.telephony import mask_number
from campaign.web import forms

logger = logging.getLogger(__name__)


class DeskError(ValueError):
    """What the desk cannot do, in one line (shown to the user; status 400, 404 or 409)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Desk:
    """What every route needs: the ledger, the settings and the schedules' service."""

    ledger: Ledger
    settings: Settings
    scheduler: CampaignScheduler

    @property
    def max_upload_bytes(self) -> int:
        return int(self.settings.desk_max_upload_mb * 1_000_000)


# --------------------------------------------------------------------------- campaigns


def save_campaign(desk: Desk, data: dict[str, Any], *, create: bool) -> CampaignConfig:
    """Validate campaign settings (form, JSON or YAML) and store them on the campaign row."""
    config = forms.validate(data)
    exists = desk_store.stored_config(desk.ledger, config.name) is not None
    if create and exists:
        raise DeskError(f"a campaign named {config.name!r} already exists", 409)
    dialing.ensure_campaign(
        desk.ledger, config.name, region=config.region, config=forms.stored(config)
    )
    logger.info("campaign %s %s from the desk", config.name, "created" if create else "updated")
    return config


def campaign_config(desk: Desk, name: str) -> CampaignConfig:
    """The campaign's stored settings, validated (as `dialer call --campaign` reads them)."""
    try:
        return resolve_config(desk.ledger, campaign=name, config_file=None)
    except CallError as exc:
        raise DeskError(str(exc), 404 if not exists(desk, name) else 409) from None


def exists(desk: Desk, name: str) -> bool:
    return desk_store.stored_config(desk.ledger, name) is not None


def require_campaign(desk: Desk, name: str) -> int:
    try:
        return dialing.campaign_id(desk.ledger, name)
    except dialing.CampaignNotFound as exc:
        raise DeskError(str(exc), 404) from None


def check_sheet(desk: Desk, sheet: Sheet, *, region: str, phone_column: str | None) -> SheetResult:
    """`dialer check` against the do-not-call list, as an import would see it."""
    with desk.ledger.session() as session:
        dnc = import_store.dnc_set(session)
    return validate_sheet(
        sheet, region=check_region(region), phone_column=phone_column or None, dnc=dnc
    )


def import_into(
    desk: Desk, name: str, sheet: Sheet, *, phone_column: str | None
) -> tuple[ImportSummary, SheetResult]:
    """`dialer import` of a sheet into a stored campaign (idempotent: keyed on E.164)."""
    config = campaign_config(desk, name)
    result = check_sheet(desk, sheet, region=config.region, phone_column=phone_column)
    summary = import_store.import_contacts(desk.ledger, name, result, sheet.source)
    return summary, result


def control(desk: Desk, name: str, action: str) -> str:
    require_campaign(desk, name)
    message = runner.control(desk.ledger, name, action)
    if action == "cancel":
        desk_store.withdraw_requests(desk.ledger, name, "withdrawn: the campaign was cancelled")
    return message


def start(desk: Desk, name: str, user: str) -> tuple[desk_store.RequestView, bool]:
    """Ask a runner to dial the campaign now (a paused campaign is resumed first)."""
    require_campaign(desk, name)
    campaign_config(desk, name)  # refuse a campaign whose settings cannot run
    summary = runner.status(desk.ledger, name)
    if summary.status == "cancelled":
        raise DeskError(f"campaign {name} is cancelled; resume it first", 409)
    if summary.remaining == 0:
        raise DeskError(f"campaign {name} has no contact left to call; add a sheet first", 409)
    if summary.status == "paused":
        runner.control(desk.ledger, name, "resume")
    return desk_store.request_run(desk.ledger, name, user)


# --------------------------------------------------------------------------- workbook


def write_workbook(desk: Desk, name: str) -> Path:
    """The campaign workbook, written now from the ledger into a fresh temporary folder
    (any replica can serve it; the caller deletes the folder)."""
    require_campaign(desk, name)
    folder = Path(tempfile.mkdtemp(prefix="desk-workbook-"))
    try:
        return write_report(desk.ledger, name, folder / "workbook.xlsx")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- test calls


_Ts = TypeVarTuple("_Ts")


class _ThreadLoop(asyncio.SelectorEventLoop):
    """An event loop for a worker thread: signals belong to the main thread (uvicorn's).

    `place_test_call` binds Ctrl-C to "hang up" for the terminal; on the desk there is
    no terminal, and `add_signal_handler` would fail outside the main thread.
    """

    def add_signal_handler(
        self, sig: int, callback: Callable[[Unpack[_Ts]], object], *args: *_Ts
    ) -> None:
        return None

    def remove_signal_handler(self, sig: int) -> bool:
        return False


@dataclass(frozen=True)
class TestCall:
    masked: str
    started_at: datetime


def test_call(desk: Desk, name: str, number: str, callee: str | None) -> TestCall:
    """`dialer call NUMBER --campaign NAME`: checked now, placed in the background.

    The attempt shows on the campaign page (a test attempt) as it goes.
    """
    config = campaign_config(desk, name)
    try:
        prepared = runner.prepare(config, desk.settings)
        e164, _ext, _zones = check_number(desk.ledger, prepared, number, utcnow())
    except UserError as exc:
        raise DeskError(str(exc)) from None

    def place() -> None:
        try:
            with asyncio.Runner(loop_factory=_ThreadLoop) as runner:
                report = runner.run(
                    place_test_call(config, desk.ledger, desk.settings, number, name=callee)
                )
            logger.info("test call to %s: %s", report.masked, report.result.outcome)
        except Exception:
            logger.exception("test call to %s failed", mask_number(e164))

    threading.Thread(target=place, name=f"test-call-{name}", daemon=True).start()
    return TestCall(mask_number(e164), utcnow())


# --------------------------------------------------------------------------- do-not-call


def parse_numbers(text: str, region: str) -> list[str]:
    """Numbers typed by a user (commas, spaces or lines) as E.164; a bad one is refused."""
    items = [item for item in text.replace(",", "\n").splitlines() if item.strip()]
    if not items:
        raise DeskError("give at least one number")
    region_code = check_region(region)
    numbers: list[str] = []
    for item in items:
        parsed = normalise_number(item.strip(), region_code)
        if parsed.e164 is None or parsed.reason is Reason.INVALID:  # as `dialer dnc add`
            raise DeskError(f"not a valid phone number: {item.strip()!r}")
        numbers.append(parsed.e164)
    return numbers


# --------------------------------------------------------------------------- doctor


def doctor(desk: Desk) -> preflight.DoctorReport:
    """`dialer doctor`'s checks, with this process's settings."""
    return asyncio.run(
        preflight.run_checks(desk.settings, dict(os.environ), database_url=desk.ledger.url)
    )
