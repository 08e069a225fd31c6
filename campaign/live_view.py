"""Rich renderings for `dialer run` (the live view) and `dialer status`."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from campaign.store.dialing import CampaignSummary


def _when(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    delta = (moment - now).total_seconds()
    local = moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    if delta <= 0:
        return f"{local} (now)"
    return f"{local} (in {_span(delta)})"


def _span(seconds: float) -> str:
    whole = round(seconds)
    if whole < 90:
        return f"{whole}s"
    if whole < 5400:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "-"


def status_table(summary: CampaignSummary, *, now: datetime | None = None) -> Table:
    """`dialer status NAME`: where the campaign stands, from the ledger alone."""
    now = now or datetime.now(UTC)
    table = Table(title=f"campaign {summary.name}", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("status", summary.status)
    table.add_row("contacts", _counts(summary.contacts))
    table.add_row("remaining", str(summary.remaining))
    table.add_row("attempts", f"{summary.attempts} ({summary.dials} dialed)")
    table.add_row("outcomes", _counts(summary.outcomes))
    table.add_row("in flight", str(summary.in_flight))
    table.add_row("next due", _when(summary.next_attempt_at, now))
    for line in summary.dialers:
        table.add_row("dialer", line)
    if summary.first_dial_at and summary.last_dial_at and summary.dials > 1:
        span = (summary.last_dial_at - summary.first_dial_at).total_seconds()
        if span > 0:
            table.add_row("dial rate", f"{(summary.dials - 1) / span:.2f} calls/s overall")
    return table


def live_view(
    summary: CampaignSummary,
    *,
    state: str,
    calls: list[tuple[str, str, float]],
    cap: int,
    configured_cps: float,
    achieved_cps: float,
    next_due: datetime | None,
    now: datetime,
) -> RenderableType:
    """`dialer run`'s screen: calls in flight, outcomes, rate, next due time, ETA.

    `calls` is (masked number, phase, monotonic start) per call in flight.
    """
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    head.add_row("campaign", f"{summary.name} ({summary.status}) - {state}")
    head.add_row("in flight", f"{summary.in_flight} / {cap} (this process {len(calls)})")
    head.add_row("outcomes", _counts(summary.outcomes))
    head.add_row("contacts", _counts(summary.contacts))
    head.add_row("rate", f"{achieved_cps:.2f} calls/s achieved, {configured_cps:g} configured")
    head.add_row("next due", _when(next_due or summary.next_attempt_at, now))
    head.add_row("ETA", _eta(summary, achieved_cps))
    table = Table(show_edge=False, expand=False)
    table.add_column("number")
    table.add_column("phase")
    table.add_column("for", justify="right")
    clock = time.monotonic()
    for masked, phase, since in sorted(calls, key=lambda c: c[2]):
        table.add_row(masked, phase, _span(clock - since))
    parts: list[RenderableType] = [head]
    if calls:
        parts.append(table)
    else:
        parts.append(Text("no calls in flight", style="dim"))
    return Group(*parts)


def _eta(summary: CampaignSummary, achieved_cps: float) -> str:
    """Remaining contacts at the achieved rate: a floor (retries and waits add to it)."""
    if summary.remaining == 0:
        return "done"
    if achieved_cps <= 0:
        return "-"
    seconds = summary.remaining / achieved_cps
    finish = datetime.now(UTC) + timedelta(seconds=seconds)
    return f"~{_span(seconds)} ({finish.astimezone().strftime('%H:%M')}) for first attempts"
