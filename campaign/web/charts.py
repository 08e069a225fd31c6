"""The campaign page's charts as SVG pictures, drawn on the server (no JavaScript library).

Each function returns a whole SVG document; every label is escaped.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from html import escape
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from campaign.outcomes import Outcome

WIDTH = 640
_COLOURS = {
    Outcome.ANSWERED.value: "#2e7d32",
    Outcome.VOICEMAIL.value: "#6a1b9a",
    Outcome.BUSY.value: "#ef6c00",
    Outcome.NO_ANSWER.value: "#f9a825",
    Outcome.DECLINED.value: "#c62828",
    Outcome.INVALID_NUMBER.value: "#6d4c41",
    Outcome.FAILED.value: "#b71c1c",
    Outcome.AGENT_UNAVAILABLE.value: "#546e7a",
    Outcome.DO_NOT_CALL.value: "#37474f",
    Outcome.CANCELLED.value: "#9e9e9e",
}
_BAR = "#1565c0"
_TEXT = 'font-family="sans-serif" font-size="12" fill="#222"'


def _svg(height: int, body: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}"'
        f' width="{WIDTH}" height="{height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
        f'<rect width="{WIDTH}" height="{height}" fill="#fff"/>' + "".join(body) + "</svg>"
    )


def _empty(title: str, message: str) -> str:
    return _svg(60, [f'<text x="10" y="35" {_TEXT}>{escape(message)}</text>'], title)


def outcomes_chart(outcomes: Counter[str]) -> str:
    """One horizontal bar per outcome, longest first, with its count and share."""
    title = "Attempts by outcome"
    total = sum(outcomes.values())
    if not total:
        return _empty(title, "No attempt has ended yet.")
    rows = outcomes.most_common()
    top = rows[0][1]
    left, right, row_h = 130, 90, 24
    span = WIDTH - left - right
    body: list[str] = []
    for i, (outcome, count) in enumerate(rows):
        y = 10 + i * row_h
        width = max(2, round(span * count / top))
        colour = _COLOURS.get(outcome, _BAR)
        body.append(
            f'<text x="{left - 8}" y="{y + 15}" text-anchor="end" {_TEXT}>'
            f"{escape(outcome.replace('_', ' '))}</text>"
        )
        body.append(f'<rect x="{left}" y="{y + 3}" width="{width}" height="16" fill="{colour}"/>')
        body.append(
            f'<text x="{left + width + 6}" y="{y + 15}" {_TEXT}>'
            f"{count} ({100 * count / total:.0f}%)</text>"
        )
    return _svg(20 + len(rows) * row_h, body, title)


def _local_hour(moment: datetime, zones: Sequence[str], fallback: str) -> int:
    for name in [*zones, fallback]:
        try:
            return moment.astimezone(ZoneInfo(name)).hour
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return moment.hour


def hours_chart(dials: Sequence[tuple[datetime, Sequence[str], str | None]], fallback: str) -> str:
    """Dials by hour of the day in the contact's local time; answered ones in green."""
    title = "Dials by the contact's local hour"
    if not dials:
        return _empty(title, "Nobody has been dialed yet.")
    placed: Counter[int] = Counter()
    answered: Counter[int] = Counter()
    for moment, zones, outcome in dials:
        hour = _local_hour(moment, zones, fallback)
        placed[hour] += 1
        if outcome == Outcome.ANSWERED.value:
            answered[hour] += 1
    top = max(placed.values())
    left, bottom, height = 40, 30, 200
    plot = height - bottom - 10
    step = (WIDTH - left - 10) / 24
    body = [
        f'<line x1="{left}" y1="{height - bottom}" x2="{WIDTH - 10}" y2="{height - bottom}"'
        ' stroke="#888"/>',
        f'<text x="4" y="20" {_TEXT}>{top}</text>',
    ]
    for hour in range(24):
        x = left + hour * step
        for counter, colour in ((placed, _BAR), (answered, _COLOURS["answered"])):
            h = plot * counter[hour] / top
            if h:
                body.append(
                    f'<rect x="{x + 2:.1f}" y="{height - bottom - h:.1f}"'
                    f' width="{step - 4:.1f}" height="{h:.1f}" fill="{colour}"/>'
                )
        if hour % 3 == 0:
            body.append(
                f'<text x="{x + step / 2:.1f}" y="{height - 12}" text-anchor="middle"'
                f" {_TEXT}>{hour:02d}h</text>"
            )
    body.append(
        f'<text x="{WIDTH - 10}" y="20" text-anchor="end" {_TEXT}>'
        "blue: dialed · green: answered</text>"
    )
    return _svg(height, body, title)


def latency_chart(latencies: Sequence[float]) -> str:
    """A histogram of per-turn voice latency (end of the callee's turn to the agent's voice)."""
    title = "Per-turn latency"
    if not latencies:
        return _empty(title, "No turn has been measured yet.")
    ordered = sorted(latencies)
    low, high = ordered[0], ordered[-1]
    bins = min(20, max(5, int(math.sqrt(len(ordered)))))
    width = (high - low) / bins or 0.1
    counts = [0] * bins
    for value in ordered:
        counts[min(bins - 1, int((value - low) / width))] += 1
    left, bottom, height = 40, 30, 200
    plot = height - bottom - 30
    step = (WIDTH - left - 10) / bins
    top = max(counts)
    body = [
        f'<line x1="{left}" y1="{height - bottom}" x2="{WIDTH - 10}" y2="{height - bottom}"'
        ' stroke="#888"/>'
    ]
    for i, count in enumerate(counts):
        h = plot * count / top
        x = left + i * step
        if h:
            body.append(
                f'<rect x="{x + 1:.1f}" y="{height - bottom - h:.1f}" width="{step - 2:.1f}"'
                f' height="{h:.1f}" fill="{_BAR}"/>'
            )
    median = ordered[len(ordered) // 2]
    p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
    body.append(f'<text x="{left}" y="{height - 10}" {_TEXT}>{low:.2f} s</text>')
    body.append(
        f'<text x="{WIDTH - 10}" y="{height - 10}" text-anchor="end" {_TEXT}>{high:.2f} s</text>'
    )
    body.append(
        f'<text x="{left}" y="18" {_TEXT}>{len(ordered)} turns · median {median:.2f} s'
        f" · p95 {p95:.2f} s</text>"
    )
    return _svg(height, body, title)
