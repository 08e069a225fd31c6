"""Running a campaign: `dialer run`, the scheduler's and the desk's runs, control, status.

Everything between a command (or the scheduler, or the web desk) and the engine in
`campaign.dialer`: settings and sheets in, the telephony built, signals, the Rich
live view, the workbook out. The engine itself knows nothing of these.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from rich.console import Console, RenderableType
from rich.live import Live

from campaign.campaign_file import CampaignConfig, load_campaign
from campaign.config import Settings, get_settings
from campaign.contacts import SheetError, read_sheet
from campaign.dialer import Clock, Dialer, DialerError, LiveStats, RunOptions
from campaign.live_view import live_view
from campaign.outcomes import CampaignStatus
from campaign.report import ReportError, write_report
from campaign.retry import parse_duration
from campaign.store import Ledger, leases, open_ledger, utcnow
from campaign.store import dialing as store
from campaign.store.imports import import_sheet
from campaign.telephony import Telephony

logger = logging.getLogger(__name__)


@dataclass
class RunReport:
    """What `dialer run` did."""

    stats: LiveStats
    summary: store.CampaignSummary
    imported: int
    workbook: Path | None  #: None when writing it failed (logged; `dialer report` retries)


def prepare(config: CampaignConfig, settings: Settings) -> CampaignConfig:
    """The campaign with trunk and agent filled from the environment, checked for use."""
    settings.require("livekit_api_key", "livekit_api_secret")
    return config.with_defaults(
        trunk_id=settings.sip_outbound_trunk_id, agent_name=settings.agent_name
    )


def import_sheets(ledger: Ledger, config: CampaignConfig) -> int:
    """Import the campaign's sheets; idempotent, so only new numbers are added.

    Returns how many contacts are new. A sheet that cannot be read is a `DialerError`.
    """
    added = 0
    for path in config.contacts:
        try:
            sheet = read_sheet(path)
        except (SheetError, OSError) as exc:
            raise DialerError(f"campaign {config.name}: cannot read {path}: {exc}") from None
        summary, _ = import_sheet(
            ledger, sheet, campaign=config.name, region=config.region, default_region=config.region
        )
        added += summary.new
    return added


async def run_campaign(
    config: CampaignConfig,
    ledger: Ledger,
    settings: Settings,
    *,
    options: RunOptions | None = None,
    console: Console | None = None,
    clock: Clock = utcnow,
) -> RunReport:
    """`dialer run`: import if needed, dial with a live view, then write the workbook.

    Ctrl-C drains (no new claims; calls in flight finish and are recorded); a second
    Ctrl-C hangs up the calls in flight. SIGTERM drains.
    """
    config = prepare(config, settings)
    imported = import_sheets(ledger, config)
    if store.contact_count(ledger, store.campaign_id(ledger, config.name)) == 0:
        raise DialerError(f"campaign {config.name}: its sheets hold no dialable contact")
    async with Telephony.from_settings(settings) as tel:
        dialer = Dialer(ledger, config, tel, options=options, clock=clock)
        loop = asyncio.get_running_loop()
        interrupts = [0]

        def on_interrupt() -> None:
            interrupts[0] += 1
            if interrupts[0] == 1:
                dialer.drain()
            else:
                dialer.hang_up_all()

        loop.add_signal_handler(signal.SIGINT, on_interrupt)
        loop.add_signal_handler(signal.SIGTERM, dialer.drain)
        try:
            with Live(console=console, refresh_per_second=2, transient=False) as live:
                screen = asyncio.ensure_future(_refresh(live, dialer))
                try:
                    stats = await dialer.run()
                finally:
                    screen.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await screen
                    if dialer.campaign_id:
                        live.update(await asyncio.to_thread(_render, dialer))
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
    try:
        workbook: Path | None = write_report(ledger, config.name)
    except ReportError as exc:
        # the calls are recorded; a workbook can be written later with `dialer report`
        logger.error("campaign %s: no workbook: %s", config.name, exc)
        workbook = None
    return RunReport(stats, store.summary(ledger, config.name), imported, workbook)


def _render(dialer: Dialer) -> RenderableType:
    summary = status(dialer.ledger, dialer.config.name)
    stats = dialer.stats
    return live_view(
        summary,
        state=stats.state if not stats.stop_reason else f"{stats.state}: {stats.stop_reason}",
        calls=[(c.masked, c.phase, c.since) for c in stats.calls.values()],
        cap=dialer.config.max_concurrent_calls,
        configured_cps=dialer.config.calls_per_second,
        achieved_cps=stats.achieved_cps(),
        next_due=stats.next_due,
        now=dialer.clock(),
    )


async def _refresh(live: Live, dialer: Dialer) -> None:
    while True:
        if dialer.campaign_id:
            with contextlib.suppress(Exception):  # a ledger blip skips one frame
                live.update(await asyncio.to_thread(_render, dialer))
        await asyncio.sleep(1.0)


#: A scheduled run waits this long at most for the next retry that falls inside the
#: calling hours (a no-answer retry 2 h later the same evening is placed in this run;
#: one that the window pushes to tomorrow ends the run and waits for the next one).
SCHEDULED_MAX_WAIT_S = 6 * 3600.0


def dial_campaign(config: CampaignConfig, ledger: Ledger, stop: threading.Event) -> str:
    """The scheduler's (and the desk's) dialer: run until nothing more is dialable
    tonight, or `stop` is set.

    Runs its own event loop in the calling thread; returns the run's summary line.
    """
    settings = get_settings()
    config = prepare(config, settings)

    async def main() -> str:
        async with Telephony.from_settings(settings) as tel:
            options = RunOptions(max_wait=SCHEDULED_MAX_WAIT_S)
            dialer = Dialer(ledger, config, tel, options=options)

            async def watch_stop() -> None:
                while not stop.is_set():
                    await asyncio.sleep(0.5)
                dialer.drain()

            watcher = asyncio.ensure_future(watch_stop())
            try:
                stats = await dialer.run()
            finally:
                watcher.cancel()
            return stats.summary_line(config.name)

    return asyncio.run(main())


def control(ledger: Ledger, name: str, action: str) -> str:
    """`dialer pause|resume|cancel NAME` through the ledger; returns a one-line message.

    A running `dialer run` sees the change within a second: pause stops new claims
    (calls in flight finish), resume claims again, cancel hangs up and closes the
    campaign's waiting contacts; resume after a cancel reopens exactly those.
    """
    target = {
        "pause": CampaignStatus.PAUSED,
        "resume": CampaignStatus.ACTIVE,
        "cancel": CampaignStatus.CANCELLED,
    }[action]
    change = store.change_campaign_status(ledger, name, target)
    if change.previous == target:
        return f"campaign {name} is already {target.value}"
    done = f"campaign {name}: {change.previous} -> {target.value}"
    if change.closed:
        done += f"; {change.closed} waiting contact(s) closed as cancelled"
    if change.reopened:
        done += f"; {change.reopened} cancelled contact(s) due again"
    return done


def status(ledger: Ledger, name: str) -> store.CampaignSummary:
    """`dialer status NAME`, from the ledger alone (with what each live dialer is doing)."""
    summary = store.summary(ledger, name)
    summary.dialers = leases.dialer_states(ledger, name)
    return summary


def parse_until(text: str, now: datetime) -> datetime:
    """`--until`: `HH:MM` (the next such local time) or an ISO date-time (local if naive)."""
    text = text.strip()
    try:
        if len(text) <= 5 and ":" in text:
            hours, minutes = (int(part) for part in text.split(":"))
            local = now.astimezone()
            moment = local.replace(hour=hours, minute=minutes, second=0, microsecond=0)
            return moment if moment > local else moment + timedelta(days=1)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise DialerError(f"--until {text!r}: use HH:MM or an ISO date-time") from None
    return moment if moment.tzinfo else moment.astimezone()


def run_file(
    path: Path,
    *,
    db: str | None = None,
    until: str | None = None,
    max_attempts: int | None = None,
    max_wait: str = "15m",
    console: Console | None = None,
) -> RunReport:
    """`dialer run campaigns/x.yaml`: everything between the command line and the engine."""
    settings = get_settings()
    config = load_campaign(path)
    try:
        wait = parse_duration(max_wait)
    except ValueError as exc:
        raise DialerError(f"--max-wait: {exc}") from None
    options = RunOptions(
        until=parse_until(until, utcnow()) if until else None,
        max_attempts=max_attempts,
        max_wait=wait,
    )
    ledger = open_ledger(db or settings.database_url)
    try:
        return asyncio.run(run_campaign(config, ledger, settings, options=options, console=console))
    finally:
        ledger.dispose()
