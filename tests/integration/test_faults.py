"""Faults never cost a call: the real engine and a real ledger (SQLite and PostgreSQL)
against a scripted telephony that fails on cue (`tests/scripted_telephony.py`).

These faults cannot be produced on demand on the real stack: a kill at an exact step,
a listing outage in the middle of a call, half an hour of LiveKit or the agents down,
one ledger error in one write. Every test ends with the same invariants: one phone call
per dialed attempt at most, no live room deleted on an error, no contact closed
without a dial, nothing left in flight.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from agent.assistant import CallState
from agent.recorder import WRITE_ATTEMPTS, CallRecorder, replay_spool
from campaign.campaign_file import CampaignConfig, parse_campaign
from campaign.contract import DialRequest
from campaign.dialer import Dialer, PartDown, RunOptions, new_dialer_id
from campaign.outcomes import NO_CALL_RECORD, ContactStatus, Outcome
from campaign.pacing import TokenBucket
from campaign.store import Attempt, Contact, Ledger, open_ledger
from campaign.store import dialing as store
from campaign.store.aio import LedgerRetry
from campaign.store.calls import get_call_record, write_call_record
from campaign.telephony import Telephony, TelephonyError
from tests.scripted_telephony import AGENT_CLEANUP, TALK_FOR, ScriptedTelephony

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 4, 15, 0, tzinfo=UTC)  # Wednesday 10:00 in New York
#: every wait in these tests is bounded by this (seconds)
BOUND = 60.0
#: outcomes after which nobody was dialed
UNDIALED = {"agent_unavailable", "do_not_call", "cancelled"}
DIGIT = {
    "talks": "1",
    "busy": "3",
    "no_answer": "4",
    "declines": "5",
    "agent_dies": "6",
    "agent_hangs": "7",
}


class FastClock:
    """The campaign's clock, running `rate` times faster than real time."""

    def __init__(self, rate: float = 1.0) -> None:
        self.rate = rate
        self.t0 = time.monotonic()

    def __call__(self) -> datetime:
        return START + timedelta(seconds=(time.monotonic() - self.t0) * self.rate)


def campaign(name: str = "faults", **fields: Any) -> CampaignConfig:
    doc: dict[str, Any] = {
        "name": name,
        "contacts": "unused.csv",
        "trunk_id": "ST_scripted",
        "agent_name": "scripted-agent",
        "max_concurrent_calls": 3,
        "calls_per_second": 50,
        "calling_hours": {
            "start": "00:00",
            "end": "24:00",
            "days": "all",
            "override_legal_limits": True,
        },
        "ringing_timeout": "2s",
        "agent_join_timeout": "1s",
        "max_call_duration": "20s",
        "retry": {
            "max_attempts": 2,
            "busy": "never",
            "no_answer": {"delay": "1s"},
            "failed": {"delay": "1s"},
            "agent_lost": {"delay": "1s"},
            "unknown": {"delay": "1s"},
            "agent_unavailable": {"delay": "1m", "max_attempts": 5},
        },
    }
    doc.update(fields)
    return parse_campaign(doc, base_dir=Path("."), source="test")


def fast_options(**overrides: Any) -> RunOptions:
    values: dict[str, Any] = {
        "max_wait": 5.0,
        "poll_interval": 0.05,
        "watch_backoff_max": 0.2,
        "record_grace": 0.2,
        "callee_gone_grace": 0.3,
        "agent_gone_grace": 0.3,
        "agent_silent_after": 0.6,
        "heartbeat": 0.1,
        "lease_ttl": 0.8,
        "reconcile_every": 0.1,
        "probe_initial": 0.05,
        "probe_max": 0.3,
        "ledger_patience": 10.0,
        "ledger_retry": LedgerRetry(attempts=4, initial_wait=0.02, max_wait=0.1),
    }
    values.update(overrides)
    return RunOptions(**values)


def add_contacts(ledger: Ledger, config: CampaignConfig, behaviours: list[str]) -> list[str]:
    """One contact per behaviour; returns their numbers (the last digit is the behaviour)."""
    campaign_id, _ = store.ensure_campaign(ledger, config.name, region="US", config={})
    numbers = [f"+1212{i:05d}{DIGIT[b]}" for i, b in enumerate(behaviours)]
    with ledger.session() as session:
        for number in numbers:
            session.add(
                Contact(campaign_id=campaign_id, e164=number, timezones=["America/New_York"])
            )
    return numbers


def attempts(ledger: Ledger) -> list[Attempt]:
    with ledger.session() as session:
        return list(session.scalars(select(Attempt).order_by(Attempt.id)))


def contacts(ledger: Ledger) -> dict[str, Contact]:
    with ledger.session() as session:
        return {c.e164: c for c in session.scalars(select(Contact))}


def outcomes_of(ledger: Ledger, number: str) -> list[str | None]:
    with ledger.session() as session:
        return list(
            session.scalars(
                select(Attempt.outcome)
                .join(Contact, Contact.id == Attempt.contact_id)
                .where(Contact.e164 == number)
                .order_by(Attempt.id)
            )
        )


def assert_invariants(ledger: Ledger, tel: ScriptedTelephony) -> None:
    made = attempts(ledger)
    assert all(a.status == "done" for a in made), [(a.id, a.status) for a in made]
    for a in made:
        rang = tel.calls_to(a.room_name)
        # Nobody was dialed twice for one attempt, and no ring went unrecorded.
        assert len(rang) <= 1, (a.id, a.outcome)
        if rang:
            assert a.outcome not in UNDIALED, (a.id, a.outcome, a.error)
            assert a.dial_started_at is not None
    # No live room was deleted on an error: only on evidence (the agent left).
    for room in tel.rooms.values():
        if room.cut_off_live_call:
            assert room.call is not None and room.call.behaviour.startswith("agent_"), room.name
    # No contact closed without a dial.
    rooms_of: dict[int, list[str]] = {}
    for a in made:
        rooms_of.setdefault(a.contact_id, []).append(a.room_name)
    for contact in contacts(ledger).values():
        if contact.status in ("completed", "exhausted", "declined", "invalid"):
            calls = [c for r in rooms_of.get(contact.id, []) for c in tel.calls_to(r)]
            assert calls, (contact.e164, contact.status)


def run(dialer: Dialer, timeout: float = BOUND) -> None:
    asyncio.run(asyncio.wait_for(dialer.run(), timeout=timeout))


@pytest.fixture
def ledger(any_ledger_url: str) -> Iterator[Ledger]:
    opened = open_ledger(any_ledger_url)
    yield opened
    opened.dispose()


@pytest.fixture
def tel() -> Iterator[ScriptedTelephony]:
    scripted = ScriptedTelephony()
    yield scripted
    scripted.release_all()


def test_every_phone_behaviour(ledger: Ledger, tel: ScriptedTelephony) -> None:
    config = campaign()
    numbers = add_contacts(ledger, config, ["talks", "busy", "no_answer", "declines"])
    dialer = Dialer(ledger, config, tel, options=fast_options(), clock=FastClock())
    run(dialer)
    found = contacts(ledger)
    assert [found[n].status for n in numbers] == ["completed", "exhausted", "exhausted", "declined"]
    assert outcomes_of(ledger, numbers[2]) == ["no_answer", "no_answer"]
    assert dialer.stats.stop_reason == "nothing left to dial"
    assert_invariants(ledger, tel)


# -- the settle-vs-dial race -------------------------------------------------------------------


def test_guarded_settle_and_dial_start_exclude_each_other(ledger: Ledger) -> None:
    config = campaign()
    add_contacts(ledger, config, ["talks", "talks"])
    campaign_id = store.campaign_id(ledger, config.name)
    walls = iter(range(1_000, 2_000, 10))  # seconds apart: the pacing bucket never waits

    def claim() -> store.Claimed:
        result = store.claim_next(
            ledger,
            campaign_id,
            campaign_name=config.name,
            dialer_id="a",
            now=START,
            wall=float(next(walls)),
            max_concurrent=5,
            bucket=TokenBucket(rate=50),
            window=config.window,
        )
        assert result.claimed is not None
        return result.claimed

    def settle(attempt_id: int) -> bool:
        done = store.finalise_attempt(
            ledger,
            attempt_id,
            outcome=Outcome.CANCELLED,
            ended_at=START,
            decide=lambda *_: (ContactStatus.RETRY, START),
            only_undialed=True,
        )
        return done is not None

    first = claim()
    assert settle(first.attempt_id)  # the settle wins...
    assert not store.mark_dial_started(ledger, first.attempt_id, START)  # ...so nobody dials
    second = claim()
    assert store.mark_dial_started(ledger, second.attempt_id, START)  # the dial wins...
    assert not settle(second.attempt_id)  # ...so the attempt is adopted, not settled


def test_frozen_owner_thaws_after_its_attempt_was_settled(
    ledger: Ledger, tel: ScriptedTelephony
) -> None:
    """A dialer frozen past its lease (SIGSTOP, a VM pause) before dialing: another
    settles and redials the contact; the thawed owner must not dial its old attempt."""
    config = campaign()
    (number,) = add_contacts(ledger, config, ["talks"])
    killer = tel.kill_at("room")
    frozen = DialerThread(Dialer(ledger, config, tel, options=fast_options(), clock=FastClock()))
    frozen.start()
    assert killer.fired.wait(BOUND)
    other = Dialer(
        ledger,
        config,
        tel,
        options=fast_options(dialer_id=new_dialer_id(host="other-host")),
        clock=FastClock(),
    )
    run(other)
    assert outcomes_of(ledger, number) == ["cancelled", "answered"]
    killer.released.set()  # thaw the first owner: it goes on where it stopped
    frozen.join()
    assert len(tel.calls) == 1  # the contact was called once, by the other dialer
    assert_invariants(ledger, tel)


# -- unknown is not gone -----------------------------------------------------------------------


def test_listing_outage_during_a_live_call_hangs_nobody_up(
    ledger: Ledger, tel: ScriptedTelephony, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ListParticipants fails for 7x the callee-gone grace (as 20 s is 4x the 5 s one)
    in the middle of a call: the call goes on, the slot stays held, nothing is deleted."""
    monkeypatch.setattr("tests.scripted_telephony.TALK_FOR", 4.0)
    config = campaign()
    (number,) = add_contacts(ledger, config, ["talks"])
    outage: dict[str, float] = {}

    def listing_down() -> bool:
        answered = [c.answered_at for c in tel.calls if c.answered_at is not None]
        if not answered:
            return False
        start = outage.setdefault("start", answered[0] + 0.5)
        return start <= time.monotonic() < start + 2.0

    tel.listing_down = listing_down
    dialer = Dialer(ledger, config, tel, options=fast_options(), clock=FastClock())
    in_flight: list[int] = []

    async def main() -> None:
        running = asyncio.ensure_future(dialer.run())
        while not running.done():
            start = outage.get("start")
            if start is not None and start + 0.2 < time.monotonic() < start + 1.8:
                summary = await asyncio.to_thread(store.summary, ledger, config.name)
                in_flight.append(summary.in_flight)
            await asyncio.sleep(0.1)
        await running

    asyncio.run(asyncio.wait_for(main(), timeout=BOUND))
    assert in_flight and set(in_flight) == {1}  # the slot was held through the outage
    (call,) = tel.calls
    assert call.ended_by == ""  # the phone hung up by itself, at the end of the talk
    assert outcomes_of(ledger, number) == ["answered"]
    assert_invariants(ledger, tel)


@pytest.mark.parametrize("agent", ["agent_dies", "agent_hangs"])
def test_agent_lost_mid_call_is_hung_up_and_retried(
    ledger: Ledger, tel: ScriptedTelephony, agent: str
) -> None:
    """The agent's participant leaves, or stays but its job stopped beating (a killed
    job lingers in LiveKit until it gives up waiting for a reconnect)."""
    config = campaign()
    (number,) = add_contacts(ledger, config, [agent])
    dialer = Dialer(ledger, config, tel, options=fast_options(), clock=FastClock(rate=5))
    run(dialer)
    assert outcomes_of(ledger, number) == ["agent_lost", "agent_lost"]  # retried like failed
    assert contacts(ledger)[number].status == "exhausted"
    for call in tel.calls:
        room = tel.rooms[call.room]
        assert call.answered_at is not None and room.deleted is not None
        agent_gone = call.answered_at + 0.3
        assert room.deleted - agent_gone < 1.5  # hung up within the grace and a poll or two
        assert room.cut_off_live_call  # the callee was still on the line
        assert room.cut_off_live_call  # the callee was still on the line
    assert_invariants(ledger, tel)


# -- a part down: the circuit breaker ----------------------------------------------------------


@dataclass
class Outage:
    """Down for `minutes` of the campaign's clock, from the first phone call on."""

    clock: FastClock
    tel: ScriptedTelephony
    minutes: float
    start: datetime | None = None

    def active(self) -> bool:
        if self.start is None:
            if not self.tel.calls:
                return False
            self.start = self.clock()
        return self.clock() < self.start + timedelta(minutes=self.minutes)


def watch_states(dialer: Dialer, seen: set[str]) -> Callable[[], None]:
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen.add(dialer.stats.state.split(" (")[0])
            time.sleep(0.02)

    threading.Thread(target=sample, daemon=True).start()
    return stop.set


@pytest.mark.parametrize("part", ["livekit", "agent"])
def test_thirty_minutes_down_burns_no_contact(
    ledger: Ledger, tel: ScriptedTelephony, part: str
) -> None:
    clock = FastClock(rate=300)  # 30 minutes in 6 s
    outage = Outage(clock, tel, minutes=30)
    if part == "livekit":
        tel.down = lambda _method: outage.active()
    else:
        tel.agent_available = lambda: not outage.active()
    config = campaign(max_concurrent_calls=2)
    numbers = add_contacts(ledger, config, ["declines"] * 8)
    dialer = Dialer(ledger, config, tel, options=fast_options(max_wait=3600), clock=clock)
    seen: set[str] = set()
    stop = watch_states(dialer, seen)
    try:
        run(dialer)
    finally:
        stop()
    assert outage.start is not None and not outage.active()  # it was down, and came back
    waiting = "waiting for LiveKit" if part == "livekit" else "waiting for an agent worker"
    assert waiting in seen
    found = contacts(ledger)
    assert {found[n].status for n in numbers} == {"declined"}  # every contact was dialed
    for number in numbers:
        assert [o for o in outcomes_of(ledger, number) if o not in UNDIALED] == ["declined"]
    counted = Counter(a.outcome for a in attempts(ledger))["agent_unavailable"]
    assert counted < config.max_concurrent_calls + fast_options().breaker_threshold
    assert dialer.stats.stop_reason == "nothing left to dial"
    assert_invariants(ledger, tel)


def test_gives_up_after_max_wait_naming_what_is_down(
    ledger: Ledger, tel: ScriptedTelephony
) -> None:
    clock = FastClock(rate=300)
    outage = Outage(clock, tel, minutes=30)
    tel.down = lambda _method: outage.active()
    config = campaign(max_concurrent_calls=1)
    numbers = add_contacts(ledger, config, ["declines"] * 4)
    dialer = Dialer(ledger, config, tel, options=fast_options(max_wait=600), clock=clock)
    with pytest.raises(PartDown) as raised:
        run(dialer)
    assert raised.value.exit_code == 5
    assert "LiveKit at http://livekit.scripted.invalid is down" in str(raised.value)
    assert "\n" not in str(raised.value)
    found = contacts(ledger)
    assert all(found[n].status in ("declined", "pending", "retry") for n in numbers)
    assert_invariants(ledger, tel)


def test_a_hung_livekit_times_out_per_request() -> None:
    """A server that accepts and never answers (as a SIGSTOPped livekit-server): every
    request ends at its deadline as a retryable TelephonyError, never hangs."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    port = server.getsockname()[1]

    async def main() -> TelephonyError:
        tel = Telephony(f"http://127.0.0.1:{port}", "key", "secret" * 6, request_timeout=0.3)
        async with tel:
            with pytest.raises(TelephonyError) as raised:
                await tel.check_access()
        return raised.value

    try:
        started = time.monotonic()
        error = asyncio.run(asyncio.wait_for(main(), timeout=BOUND))
        took = time.monotonic() - started
    finally:
        server.close()
    assert error.retryable and error.status is None and error.exit_code == 3
    assert f"127.0.0.1:{port} did not answer within 0.3 s" in str(error)
    assert took < 5  # three tries of 0.3 s and two short pauses


# -- one ledger fault in each write of the call path ---------------------------------------------

#: the write, by the statement that makes it
WRITES = {
    "claim": r"INSERT INTO attempts",  # inside the claim's one statement (CTE)
    "dial started": r"^UPDATE attempts SET dial_started_at",
    "answered": r"^UPDATE attempts SET status=\S+, answered_at",
    "finalise": r"UPDATE attempts SET status=\S+, outcome",  # PostgreSQL: inside a CTE
    "contact moved on": r"^UPDATE contacts SET",
    "lease renewed": r"^UPDATE dialer_leases",
}


@pytest.mark.parametrize("write", list(WRITES))
def test_one_ledger_fault_in_each_write(ledger: Ledger, tel: ScriptedTelephony, write: str) -> None:
    pattern = re.compile(WRITES[write])
    fired: list[str] = []

    def inject(_conn: Any, _cursor: Any, statement: str, params: Any, *_rest: Any) -> None:
        if not fired and pattern.search(statement):
            fired.append(statement)
            raise OperationalError(
                statement, params, sqlite3.OperationalError("database is locked")
            )

    config = campaign()
    numbers = add_contacts(ledger, config, ["talks", "busy", "declines"])
    event.listen(ledger.engine, "before_cursor_execute", inject)
    try:
        run(Dialer(ledger, config, tel, options=fast_options(), clock=FastClock()))
    finally:
        event.remove(ledger.engine, "before_cursor_execute", inject)
    assert fired, f"no {write} write was made"
    found = contacts(ledger)
    assert [found[n].status for n in numbers] == ["completed", "exhausted", "declined"]
    assert [outcomes_of(ledger, n) for n in numbers] == [["answered"], ["busy"], ["declined"]]
    assert_invariants(ledger, tel)


# -- a kill at each step, and a restart ----------------------------------------------------------


class DialerThread:
    """A dialer on its own event loop in its own thread: a process that can be killed
    (frozen at a step by the scripted telephony) while another one restarts."""

    def __init__(self, dialer: Dialer) -> None:
        self.dialer = dialer
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self.dialer.run())
        except BaseException as exc:  # a stopped loop ends a killed dialer
            self.error = exc

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.thread.join(BOUND)
        assert not self.thread.is_alive()


#: step -> (the phone, the contact's outcomes after the restart)
KILLS = {
    "claim": ("talks", ["cancelled", "answered"]),
    "room": ("talks", ["cancelled", "answered"]),
    # dialed in the ledger, never sent: what the phone did cannot be known
    "dial started": ("talks", ["unknown", "answered"]),
    # the phone rang out while nobody held the attempt: the adopter saw it ring out
    "ringing": ("no_answer", ["no_answer", "no_answer"]),
    # the verdict was committed before the room was deleted
    "final": ("declines", ["declined"]),
    "answered": ("talks", ["answered"]),
}


def killed_at(
    ledger: Ledger, tel: ScriptedTelephony, step: str, phone: str
) -> tuple[CampaignConfig, str]:
    """One contact on `phone`, its dialer killed at `step`: the campaign and the number."""
    # The agent is its own process: its call record is there whenever the adopter looks.
    tel.recorder = lambda summary: write_call_record(ledger, summary)
    config = campaign()
    (number,) = add_contacts(ledger, config, [phone])
    killer = tel.kill_at(step)
    first = DialerThread(Dialer(ledger, config, tel, options=fast_options(), clock=FastClock()))
    first.start()
    assert killer.fired.wait(BOUND), f"the dialer never reached {step}"
    return config, number


RESTARTS: dict[str, Callable[[], str]] = {
    "same host, new pid": lambda: new_dialer_id(pid=999_999),
    "same host, same pid": lambda: new_dialer_id(),
    "another host": lambda: new_dialer_id(host="another-host", pid=1),
}


@pytest.mark.parametrize("restart", list(RESTARTS))
@pytest.mark.parametrize("step", list(KILLS))
def test_kill_at_each_step_then_restart(
    ledger: Ledger, tel: ScriptedTelephony, step: str, restart: str
) -> None:
    if ledger.is_postgres and restart != "another host":
        pytest.skip("the restart kinds differ only in the dialer id: SQLite covers them")
    phone, expected = KILLS[step]
    config, number = killed_at(ledger, tel, step, phone)
    left = [a for a in attempts(ledger) if a.status != "done"]
    assert left or step == "final"
    second = Dialer(
        ledger, config, tel, options=fast_options(dialer_id=RESTARTS[restart]()), clock=FastClock()
    )
    run(second)
    assert outcomes_of(ledger, number) == expected
    calls = len(tel.calls)
    assert calls == sum(1 for o in expected if o not in UNDIALED and o != "unknown")
    assert_invariants(ledger, tel)


def test_adopter_that_comes_after_the_call_ended_reads_the_agents_record(
    ledger: Ledger, tel: ScriptedTelephony
) -> None:
    """Killed after the answer, restarted only when the room is long gone: the agent's
    call record is the evidence of the answer (no `unknown`, no second dial)."""
    config, number = killed_at(ledger, tel, "answered", "talks")
    time.sleep(TALK_FOR + AGENT_CLEANUP + 1.0)  # the callee hung up, the agent closed the room
    second = Dialer(
        ledger, config, tel, options=fast_options(dialer_id=new_dialer_id(pid=1)), clock=FastClock()
    )
    run(second)
    assert outcomes_of(ledger, number) == ["answered"]
    assert len(tel.calls) == 1
    assert_invariants(ledger, tel)


# -- LiveKit unreachable from the start: one line naming the URL, a non-zero exit ----------------


@pytest.mark.parametrize("command", ["run", "call"])
def test_livekit_unreachable_exits_3_naming_the_url(
    sqlite_ledger_url: str, tmp_path: Path, command: str
) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    (tmp_path / "c.csv").write_text("Name,Phone\nAda,+1 212-736-0101\n")
    (tmp_path / "c.yaml").write_text(
        "name: unreachable\ncontacts: c.csv\ntrunk_id: ST_x\nagent_name: a\n"
        "calling_hours: {start: '00:00', end: '24:00', days: all, override_legal_limits: true}\n"
    )
    env = {
        **os.environ,
        "DIALER_DATABASE_URL": sqlite_ledger_url,
        "LIVEKIT_URL": f"http://127.0.0.1:{port}",
        "LIVEKIT_API_KEY": "key",
        "LIVEKIT_API_SECRET": "secret" * 6,
        "DIALER_LOG_LEVEL": "ERROR",
    }
    args = (
        ["run", str(tmp_path / "c.yaml")]
        if command == "run"
        else ["call", "+12127360101", "--config", str(tmp_path / "c.yaml")]
    )
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dialer"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=BOUND,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"http://127.0.0.1:{port}" in lines[0], done.stderr
    ledger = open_ledger(sqlite_ledger_url)
    try:
        assert all(a.status == "done" for a in attempts(ledger))  # nothing left in flight
        assert not [a for a in attempts(ledger) if a.dial_started_at is not None]
    finally:
        ledger.dispose()


# -- the agent's record: retried, spooled, replayed, applied late --------------------------------


def test_call_record_is_spooled_while_the_ledger_is_away_and_applied_late(
    ledger: Ledger, tel: ScriptedTelephony, tmp_path: Path
) -> None:
    config = campaign()
    (number,) = add_contacts(ledger, config, ["talks"])
    run(Dialer(ledger, config, tel, options=fast_options(), clock=FastClock()))
    (attempt,) = attempts(ledger)
    assert attempt.outcome == "answered" and attempt.error == NO_CALL_RECORD

    call = CallState(answered_at=START, disposition="interested", added_to_dnc=True)
    request = DialRequest(
        campaign=config.name, contact_id=attempt.contact_id, attempt_id=attempt.id, phone_masked=""
    )
    spool = tmp_path / "spool"
    recorder = CallRecorder(
        ledger=ledger, request=request, room_name=attempt.room_name, call=call, spool=spool
    )
    refused: list[str] = []

    def away(_conn: Any, _cursor: Any, statement: str, params: Any, *_rest: Any) -> None:
        if statement.startswith(("INSERT INTO calls", "DELETE FROM calls")):
            refused.append(statement)
            raise OperationalError(statement, params, sqlite3.OperationalError("disk I/O error"))

    event.listen(ledger.engine, "before_cursor_execute", away)
    try:
        asyncio.run(asyncio.wait_for(recorder.finish(), timeout=BOUND))
    finally:
        event.remove(ledger.engine, "before_cursor_execute", away)
    assert len(refused) == WRITE_ATTEMPTS  # retried, then spooled
    assert len(list(spool.glob("attempt-*.json"))) == 1
    assert get_call_record(ledger, attempt.id) is None

    assert replay_spool(ledger, spool) == 1  # the next job's start
    assert not list(spool.iterdir())
    record = get_call_record(ledger, attempt.id)
    assert record is not None and record.disposition == "interested"
    contact = contacts(ledger)[number]
    assert (contact.disposition, contact.status) == ("interested", "dnc")  # applied late
    (attempt,) = attempts(ledger)
    assert attempt.error is None  # it has its record now


# -- the engine never blocks its loop on the ledger ----------------------------------------------


def test_a_locked_sqlite_ledger_does_not_stall_the_loop(
    sqlite_ledger_url: str, tel: ScriptedTelephony
) -> None:
    """Another writer holds SQLite's lock for 3 s during a run: the engine's writes wait
    in their threads while its loop (watchers, Ctrl-C, the live view) keeps running."""
    ledger = open_ledger(sqlite_ledger_url)
    config = campaign()
    add_contacts(ledger, config, ["talks", "declines", "busy"])
    dialer = Dialer(ledger, config, tel, options=fast_options(), clock=FastClock())
    locked = threading.Event()

    def hold_the_lock() -> None:
        with ledger.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            locked.set()
            time.sleep(3.0)
            conn.exec_driver_sql("COMMIT")

    gaps: list[float] = []

    async def main() -> None:
        running = asyncio.ensure_future(dialer.run())
        while not tel.calls:
            await asyncio.sleep(0.01)
        holder = threading.Thread(target=hold_the_lock)
        holder.start()
        last = time.monotonic()
        while holder.is_alive():
            await asyncio.sleep(0.05)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
        await running

    try:
        asyncio.run(asyncio.wait_for(main(), timeout=BOUND))
        assert locked.is_set() and sum(gaps) >= 2.5
        assert max(gaps) < 0.5, max(gaps)
        assert_invariants(ledger, tel)
    finally:
        ledger.dispose()
