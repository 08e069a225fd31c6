"""Calling hours, checked in each contact's local time zone(s).

A window is a start and an end time of day plus the weekdays it applies to, read
in local time. A contact with several time zones (a number whose region spans
zones) may be called only when the window is open in every one of them. All
functions take the current time as an argument, so callers inject the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60
#: The legal envelope (US TCPA-style): no calls before 08:00 or after 21:00 local.
LEGAL_EARLIEST = 8 * 60
LEGAL_LATEST = 21 * 60
#: a year and a week: every weekday of every DST period of a year is looked at
YEAR_HORIZON_DAYS = 371


class WindowError(ValueError):
    """A calling-hours setting is malformed or outside the legal limits."""


def parse_clock(text: str, *, allow_midnight_end: bool = False) -> int:
    """`"HH:MM"` -> minutes after midnight; `"24:00"` only as an end of day."""
    try:
        hours_text, minutes_text = text.strip().split(":")
        hours, minutes = int(hours_text), int(minutes_text)
    except ValueError:
        raise WindowError(f"{text!r} is not a time of day (HH:MM)") from None
    if allow_midnight_end and (hours, minutes) == (24, 0):
        return MINUTES_PER_DAY
    if not (0 <= hours < 24 and 0 <= minutes < 60):
        raise WindowError(f"{text!r} is not a time of day (HH:MM)")
    return hours * 60 + minutes


def format_clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def parse_days(value: str | Iterable[str]) -> frozenset[int]:
    """`"all"`, `"weekdays"`, `"mon-sat"` or a list such as `["mon", "wed"]` -> weekday numbers."""
    items = [value] if isinstance(value, str) else list(value)
    days: set[int] = set()
    for item in items:
        word = str(item).strip().lower()
        if word == "all":
            days.update(range(7))
        elif word == "weekdays":
            days.update(range(5))
        elif "-" in word:
            first, _, last = word.partition("-")
            if first[:3] not in WEEKDAYS or last[:3] not in WEEKDAYS:
                raise WindowError(f"{item!r} is not a day range such as mon-fri")
            start, end = WEEKDAYS.index(first[:3]), WEEKDAYS.index(last[:3])
            span = range(start, end + 1) if start <= end else [*range(start, 7), *range(end + 1)]
            days.update(span)
        elif word[:3] in WEEKDAYS:
            days.add(WEEKDAYS.index(word[:3]))
        else:
            raise WindowError(f"{item!r} is not a day of the week (mon..sun, all, weekdays)")
    if not days:
        raise WindowError("no days given")
    return frozenset(days)


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """An IANA zone by name, with a one-line error for a bad name."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise WindowError(
            f"unknown time zone {name!r} (use an IANA name such as Europe/Paris)"
        ) from None


@dataclass(frozen=True)
class CallingWindow:
    """Local calling hours: `[start, end)` minutes after midnight on the given weekdays."""

    start: int = 9 * 60
    end: int = 20 * 60
    days: frozenset[int] = field(default_factory=lambda: frozenset(range(6)))
    fallback_zone: str = "UTC"
    override_legal_limits: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end <= MINUTES_PER_DAY:
            raise WindowError(
                f"start {format_clock(self.start)} must be before end {format_clock(self.end)}"
            )
        if not self.override_legal_limits and (
            self.start < LEGAL_EARLIEST or self.end > LEGAL_LATEST
        ):
            raise WindowError(
                f"{format_clock(self.start)}-{format_clock(self.end)} is outside the legal "
                f"{format_clock(LEGAL_EARLIEST)}-{format_clock(LEGAL_LATEST)} local window; "
                "set override_legal_limits: true only if you may call outside it"
            )
        zone(self.fallback_zone)

    def zones_for(self, zones: Sequence[str] | None) -> list[ZoneInfo]:
        """The contact's zones, or the campaign's fallback zone when it has none."""
        names = [name for name in (zones or []) if name] or [self.fallback_zone]
        return [zone(name) for name in names]

    def _open_in(self, tz: ZoneInfo, now: datetime) -> bool:
        local = now.astimezone(tz)
        minute = local.hour * 60 + local.minute
        return local.weekday() in self.days and self.start <= minute < self.end

    def is_open(self, zones: Sequence[str] | None, now: datetime) -> bool:
        """True when `now` (aware) falls inside the window in every one of the contact's zones."""
        _require_aware(now)
        return all(self._open_in(tz, now) for tz in self.zones_for(zones))

    def next_open(
        self, zones: Sequence[str] | None, now: datetime, horizon_days: int = 8
    ) -> datetime | None:
        """The earliest moment at or after `now` when the window is open in every zone.

        Openness can only begin at `now` or at some zone's local window start, so those
        are the only candidates to test. None when no such moment exists within the
        horizon (the zones' windows never overlap).
        """
        _require_aware(now)
        tzs = self.zones_for(zones)
        if all(self._open_in(tz, now) for tz in tzs):
            return now
        candidates: set[datetime] = set()
        for tz in tzs:
            local_today = now.astimezone(tz).date()
            for offset in range(-1, horizon_days + 1):
                day = local_today + timedelta(days=offset)
                if day.weekday() in self.days:
                    candidates.add(_local_to_utc(day, self.start, tz))
        for candidate in sorted(c for c in candidates if c > now):
            if all(self._open_in(tz, candidate) for tz in tzs):
                return candidate
        return None

    def next_open_ever(self, zones: Sequence[str] | None, now: datetime) -> datetime | None:
        """`next_open`, looking up to a year ahead when the coming week has no common moment.

        Zones whose offsets drift apart with DST may overlap only in some weeks of the
        year; None means the window never opens in all of them at once.
        """
        return self.next_open(zones, now) or self.next_open(
            zones, now, horizon_days=YEAR_HORIZON_DAYS
        )

    def next_day_start(self, zones: Sequence[str] | None, now: datetime) -> datetime:
        """The window's start on a later local calendar day than `now` (for "retry next day")."""
        _require_aware(now)
        tz = self.zones_for(zones)[0]
        tomorrow = now.astimezone(tz).date() + timedelta(days=1)
        start = _local_to_utc(tomorrow, self.start, tz)
        return self.next_open(zones, start) or start

    def describe(self) -> str:
        names = ",".join(WEEKDAYS[d] for d in sorted(self.days))
        return f"{format_clock(self.start)}-{format_clock(self.end)} {names}"


def _local_to_utc(day: date, minutes: int, tz: ZoneInfo) -> datetime:
    """Local wall time on `day` -> UTC.

    A wall time skipped by a DST jump resolves with the pre-jump offset (fold=0),
    which lands just after the gap: the window then opens when clocks allow.
    """
    return datetime.combine(day, time(minutes // 60, minutes % 60), tzinfo=tz).astimezone(UTC)


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("calling-hours checks need an aware datetime")
