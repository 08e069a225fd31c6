"""`dialer call NUMBER`: one test call, placed exactly the way a campaign places its calls.

The number goes through the sheet's number policy and the do-not-call list, the
campaign's calling hours are checked in the number's time zones, and then the
engine's own one-call path (`Dialer.call_once`) creates the room, dispatches the
agent, dials and finalises the attempt. The attempt and its contact are test rows:
kept out of the campaign's counts, never claimed by a run. Progress is reported
through a callback as it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from campaign.campaign_file import CampaignConfig, load_campaign
from campaign.config import Settings, get_settings
from campaign.contacts import normalise_number
from campaign.dialer import Clock, Dialer, RunOptions
from campaign.errors import UserError, validation_problems
from campaign.runner import prepare
from campaign.store import Ledger, open_ledger, test_calls, utcnow
from campaign.store import desk as desk_store
from campaign.store import dialing as store
from campaign.telephony import Participant, Telephony, TelephonyError, mask_number

logger = logging.getLogger(__name__)

#: the campaign test calls go to when neither --campaign nor --config is given
DEFAULT_CAMPAIGN = "test-calls"
#: how often the room is looked at for the live progress
POLL_S = 0.25

#: (seconds since the call started, what happened)
OnEvent = Callable[[float, str], None]


class CallError(UserError):
    """The test call cannot be placed; the message says why in one line."""


@dataclass(frozen=True)
class CallReport:
    """What `dialer call` prints at the end."""

    campaign: str
    masked: str
    result: test_calls.CallResult

    def lines(self) -> list[str]:
        """Outcome, disposition, duration and latency figures, one fact per line."""
        r = self.result
        sip = ""
        if r.sip_status_code:
            sip = f" (SIP {r.sip_status_code}" + (f" {r.sip_status})" if r.sip_status else ")")
        lines = [
            f"outcome      {r.outcome}{sip}" + (f": {r.error}" if r.error else ""),
            f"disposition  {r.disposition or '-'}"
            + (f"  (answering machine detection: {r.amd_result})" if r.amd_result else ""),
            f"duration     {_seconds(r.duration)} connected"
            + (f", ended by {r.end_reason}" if r.end_reason else ""),
        ]
        setup = []
        if r.dial_started_at is not None:
            ready = _between(r.claimed_at, r.dial_started_at)
            setup.append(f"room and agent ready in {_seconds(ready)}")
        if r.dial_started_at is not None and r.answered_at is not None:
            setup.append(f"answered after {_seconds(_between(r.dial_started_at, r.answered_at))}")
        if r.first_word_latency is not None:
            setup.append(f"first words {_seconds(r.first_word_latency)} after the answer")
        if setup:
            lines.append("latency      " + "; ".join(setup))
        for name, values in _turn_figures(r.turns):
            lines.append(f"  {name:<21}{_spread(values)}")
        lines.append(
            f"ledger       test attempt {r.attempt_id} of campaign {self.campaign}"
            f" (room {r.room_name})"
        )
        return lines


def _between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _turn_figures(turns: list[test_calls.TurnLatency]) -> list[tuple[str, list[float]]]:
    """Per-turn latency figures that were measured, by name."""
    figures = {
        "turn total": [t.total_latency for t in turns],
        "end of turn delay": [t.end_of_turn_delay for t in turns],
        "transcription delay": [t.transcription_delay for t in turns],
        "LLM first token": [t.llm_ttft for t in turns],
        "TTS first byte": [t.tts_ttfb for t in turns],
    }
    return [
        (name, [v for v in values if v is not None])
        for name, values in figures.items()
        if any(v is not None for v in values)
    ]


def _spread(values: list[float]) -> str:
    mean = sum(values) / len(values)
    return f"mean {mean:.2f} s, max {max(values):.2f} s over {len(values)} turn(s)"


def parse_variables(items: list[str]) -> dict[str, str]:
    """`--var key=value` options -> a dict; a malformed one is a `CallError`."""
    variables: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CallError(f"--var {item!r}: use key=value")
        variables[key.strip()] = value
    return variables


def default_config() -> CampaignConfig:
    """The campaign defaults, for a test call outside any campaign (no sheet: `-`)."""
    return CampaignConfig(name=DEFAULT_CAMPAIGN, contacts=[Path("-")], is_test=True)


def resolve_config(
    ledger: Ledger, *, campaign: str | None, config_file: Path | None
) -> CampaignConfig:
    """The campaign a test call follows: a stored campaign, a campaign file, or defaults."""
    if campaign and config_file:
        raise CallError("give --campaign or --config, not both")
    if config_file is not None:
        return load_campaign(config_file)
    if campaign is None:
        return default_config()
    stored = desk_store.stored_config(ledger, campaign)
    if stored is None:
        raise store.CampaignNotFound(f"no campaign named {campaign!r} in the ledger")
    if not stored:
        raise CallError(
            f"campaign {campaign} has no stored campaign file yet (`dialer run` stores it);"
            f" use --config campaigns/{campaign}.yaml"
        )
    try:
        return CampaignConfig.model_validate(stored)
    except ValidationError as exc:
        _, first = validation_problems(exc)[0]
        raise CallError(
            f"campaign {campaign}: its stored campaign file does not validate ({first});"
            " use --config"
        ) from None


def check_number(
    ledger: Ledger, config: CampaignConfig, number: str, now: datetime
) -> tuple[str, str | None, list[str]]:
    """The number as a sheet row would be taken: (E.164, extension, time zones).

    Invalid, not dialable, on the do-not-call list, or outside calling hours: `CallError`.
    """
    parsed = normalise_number(number, config.region)
    if parsed.reason is not None or parsed.e164 is None:
        reason = parsed.reason.value if parsed.reason else "unparseable"
        kind = f" ({parsed.number_type})" if parsed.number_type else ""
        raise CallError(
            f"{number!r} is not dialable: {reason}{kind} (region {config.region};"
            " give the number with + and its country code)"
        )
    masked = mask_number(parsed.e164)
    if store.on_dnc_list(ledger, parsed.e164):
        raise CallError(f"{masked} is on the do-not-call list (`dialer dnc list`)")
    zones = list(parsed.timezones)
    window = config.window
    if not window.is_open(zones, now):
        opens = window.next_open(zones, now)
        places = ", ".join(
            f"{tz.key} {now.astimezone(tz):%a %H:%M}" for tz in window.zones_for(zones)
        )
        when = f"; they open at {opens:%Y-%m-%d %H:%M} UTC" if opens else ""
        raise CallError(
            f"calling hours ({window.describe()}) are closed for {masked} now ({places}){when}"
        )
    return parsed.e164, parsed.extension, zones


async def place_test_call(
    config: CampaignConfig,
    ledger: Ledger,
    settings: Settings,
    number: str,
    *,
    name: str | None = None,
    variables: dict[str, str] | None = None,
    on_event: OnEvent | None = None,
    clock: Clock = utcnow,
) -> CallReport:
    """Place one test call and wait for its end; progress goes to `on_event`."""
    config = prepare(config, settings)
    e164, extension, zones = check_number(ledger, config, number, clock())
    campaign_id, _ = store.ensure_campaign(
        ledger, config.name, region=config.region, config=config.model_dump(mode="json")
    )
    started = time.monotonic()

    def emit(text: str) -> None:
        if on_event is not None:
            on_event(time.monotonic() - started, text)

    async with Telephony.from_settings(settings) as tel:
        # LiveKit unreachable or refusing the key: one line naming the URL, nothing written.
        await tel.check_access()
        dialer = Dialer(ledger, config, tel, options=RunOptions(), clock=clock)
        async with dialer.leased():
            claimed = test_calls.start_test_call(
                ledger,
                campaign_id,
                campaign_name=config.name,
                e164=e164,
                raw=number,
                extension=extension,
                name=name,
                variables=variables or {},
                timezones=zones,
                dialer_id=dialer.options.dialer_id,
                now=clock(),
            )
            loop = asyncio.get_running_loop()
            # Ctrl-C hangs up: the engine deletes the room and records the attempt as cancelled.
            loop.add_signal_handler(signal.SIGINT, dialer.hang_up_all)
            follower = asyncio.ensure_future(_follow(tel, dialer, claimed, emit))
            try:
                await dialer.call_once(claimed)
            finally:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
                loop.remove_signal_handler(signal.SIGINT)
    result = test_calls.call_result(ledger, claimed.attempt_id)
    if result.sip_status_code:
        emit(f"SIP {result.sip_status_code} {result.sip_status or ''}".rstrip())
    emit(f"ended: {result.outcome}")
    return CallReport(config.name, mask_number(e164), result)


#: the engine's phase -> what the caller is told
_PHASES = {
    "creating room": "creating the room",
    "waiting for agent": "waiting for the agent",
    "ringing": "dialing",
    "in call": "answered",
}
#: steps that must have happened before a state
_BEFORE = {"ringing": ("dialing",), "answered": ("dialing",)}
#: the callee's `sip.callStatus` while the dial is pending
_CALL_STATUSES = {"ringing": "ringing", "active": "answered"}


async def _follow(
    tel: Telephony, dialer: Dialer, claimed: store.Claimed, emit: Callable[[str], None]
) -> None:
    """Report each change of the call's state: the engine's phase, then what the room shows."""
    seen: list[str] = []
    while True:
        view = dialer.stats.calls.get(claimed.attempt_id)
        if view is not None:
            state = _PHASES.get(view.phase, view.phase)
            if view.phase in ("ringing", "in call"):
                state = _room_state(await _people(tel, claimed.room_name), state)
            for step in next_steps(seen, state):
                seen.append(step)
                emit(step)
        await asyncio.sleep(POLL_S)


def next_steps(seen: list[str], state: str) -> list[str]:
    """What to report for the `state` a look found, after the steps `seen` so far.

    Steps a look missed (a phone that answers at once is never seen dialing) come
    first; a state is not repeated; `answered` is told once (after the agent's
    states, a bare `answered` only means the agent already left).
    """
    before = ("dialing", "answered") if state.startswith("agent ") else _BEFORE.get(state, ())
    steps = [step for step in before if step not in seen]
    repeated = bool(seen) and seen[-1] == state
    if not repeated and not (state == "answered" and state in seen):
        steps.append(state)
    return steps


async def _people(tel: Telephony, room: str) -> list[Participant]:
    try:
        return await tel.participants(room) or []
    except TelephonyError as exc:
        logger.debug("cannot look into room %s: %s", room, exc)
        return []


def _room_state(people: list[Participant], state: str) -> str:
    """Ringing from the callee's SIP status; once answered, what the agent is doing."""
    callee = next((p for p in people if p.is_callee), None)
    if state == "dialing" and callee is not None:
        state = _CALL_STATUSES.get(callee.call_status, state)
    if state == "answered":
        agent = next((p for p in people if p.is_agent), None)
        if agent is not None and agent.agent_state in ("speaking", "listening", "thinking"):
            return f"agent {agent.agent_state}"
    return state


def call_number(
    number: str,
    *,
    campaign: str | None = None,
    config_file: Path | None = None,
    name: str | None = None,
    variables: list[str] | None = None,
    db: str | None = None,
    on_event: OnEvent | None = None,
) -> CallReport:
    """`dialer call`: everything between the command line and the engine."""
    settings = get_settings()
    parsed_vars = parse_variables(variables or [])
    ledger = open_ledger(db or settings.database_url)
    try:
        config = resolve_config(ledger, campaign=campaign, config_file=config_file)
        return asyncio.run(
            place_test_call(
                config,
                ledger,
                settings,
                number,
                name=name,
                variables=parsed_vars,
                on_event=on_event,
            )
        )
    finally:
        ledger.dispose()
