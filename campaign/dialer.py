"""The dialer engine: claim, window, pace, dial, wait, record, retry.

One `Dialer` runs one campaign. It claims due contacts from the ledger (the claim
counts the campaign's in-flight attempts and draws from its shared pacing bucket,
so caps hold across processes), and runs each attempt as a task:

1. the attempt row is already committed (`dialing`) by the claim;
2. create the room and explicitly dispatch the agent with the `DialRequest`;
3. wait, bounded, for the agent; with no agent, do not dial (`agent_unavailable`);
4. check the DNC list and the calling hours once more, mark the dial started,
   then `CreateSIPParticipant` (wait until answered);
5. a failed dial maps to an outcome through the SIP table; an answered call is
   watched until its room is gone (the concurrency slot is held until then);
6. read the agent's call record and finalise the attempt; the retry rules decide
   the contact's next status.

Every state change is committed before the side effect it describes, so a
restarted dialer reconciles attempts left in flight against LiveKit (is the room
still there, is the callee still in it?) instead of guessing. The clock is
injected: calling hours and retry times follow `clock()`, pacing follows real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

from rich.console import Console, RenderableType
from rich.live import Live

from campaign.campaign_file import CampaignConfig, CampaignFileError, load_campaign
from campaign.config import Settings, get_settings
from campaign.contacts import SheetError, read_sheet
from campaign.contract import DialRequest
from campaign.live_view import live_view
from campaign.outcomes import (
    AttemptStatus,
    CampaignStatus,
    ContactStatus,
    Outcome,
    outcome_for_call,
)
from campaign.pacing import TokenBucket
from campaign.report import ReportError, write_report
from campaign.retry import decide, parse_duration
from campaign.store import Ledger, open_ledger, utcnow
from campaign.store import dialing as store
from campaign.store.imports import import_sheet
from campaign.telephony import Telephony, TelephonyError, mask_number

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


class DialerError(RuntimeError):
    """The campaign cannot run; the message says why in one line."""


def new_dialer_id() -> str:
    """`host:pid:random`: lets a restarted dialer tell a dead owner from a live one."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_is_dead(dialer_id: str) -> bool:
    """True only when the attempt's owner ran on this host and its process is gone."""
    host, _, rest = dialer_id.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass
class RunOptions:
    """Bounds and timings of one run (the campaign file holds the campaign's own settings)."""

    #: claim nothing at or after this time (by the injected clock)
    until: datetime | None = None
    #: claim at most this many attempts in this run
    max_attempts: int | None = None
    #: wait at most this long for the next due contact; beyond it, the run ends
    max_wait: float = 900.0
    #: how often a call's room is polled while the slot is held
    poll_interval: float = 1.0
    #: how long the agent gets to write its call record after the room is gone
    record_grace: float = 10.0
    #: hang up the agent when the callee has been gone this long
    callee_gone_grace: float = 5.0
    #: a claim that never dialed, by an owner we cannot see, is stale after this long
    stale_claim: float = 120.0
    #: how often attempts left by other (dead) dialers are looked for
    reconcile_every: float = 30.0
    dialer_id: str = field(default_factory=new_dialer_id)


@dataclass
class CallView:
    """One call in flight, for the live view."""

    attempt_id: int
    masked: str
    room: str
    phase: str
    since: float = field(default_factory=time.monotonic)


@dataclass
class LiveStats:
    """What this process has done, for the live view and the run's summary line."""

    started: float = field(default_factory=time.monotonic)
    state: str = "starting"
    claimed: int = 0
    dials: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    outcomes: Counter[str] = field(default_factory=Counter)
    calls: dict[int, CallView] = field(default_factory=dict)
    next_due: datetime | None = None
    stop_reason: str = ""

    def achieved_cps(self, window: float = 60.0) -> float:
        """Dials per second over the last `window` seconds (or since the start)."""
        now = time.monotonic()
        span = min(window, now - self.started)
        if span <= 0:
            return 0.0
        return sum(1 for t in self.dials if now - t <= window) / span

    def summary_line(self, name: str) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items())) or "no outcomes"
        return f"campaign {name}: {self.claimed} attempt(s), {parts}; {self.stop_reason}"


class Dialer:
    """Runs one campaign until nothing is due, a bound is reached, or it is drained."""

    def __init__(
        self,
        ledger: Ledger,
        config: CampaignConfig,
        telephony: Telephony,
        *,
        options: RunOptions | None = None,
        clock: Clock = utcnow,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not config.trunk_id or not config.agent_name:
            raise DialerError(f"campaign {config.name}: trunk_id and agent_name must be set")
        self.ledger = ledger
        self.config = config
        self.tel = telephony
        self.options = options or RunOptions()
        self.clock = clock
        self.wall = wall
        self.window = config.window
        self.stats = LiveStats()
        self.campaign_id = 0
        self._bucket = TokenBucket(rate=config.calls_per_second)
        self._tasks: set[asyncio.Task[None]] = set()
        self._adopted: set[int] = set()
        self._wake = asyncio.Event()
        self._draining = False
        self._hangup = False
        self._hung_up = asyncio.Event()
        #: one call for `dialer call`: its contact is closed afterwards, never retried
        self.one_off = False

    # -- control ---------------------------------------------------------------------------

    def drain(self) -> None:
        """Claim nothing more; calls in flight finish and are recorded."""
        if not self._draining:
            logger.info("campaign %s: draining, no new calls", self.config.name)
        self._draining = True
        self._wake.set()

    def hang_up_all(self) -> None:
        """Drain and hang up every call in flight (their attempts are still recorded)."""
        self.drain()
        if self._hangup:
            return
        self._hangup = True
        self._hung_up.set()
        calls = list(self.stats.calls.values())
        logger.warning("campaign %s: hanging up %d call(s)", self.config.name, len(calls))
        for call in calls:
            self._spawn(self._delete_quietly(call.room))

    @property
    def draining(self) -> bool:
        return self._draining

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> LiveStats:
        """Dial until done; returns this run's statistics."""
        name = self.config.name
        self.campaign_id, status = store.ensure_campaign(
            self.ledger,
            name,
            region=self.config.region,
            config=self.config.model_dump(mode="json"),
        )
        if status == CampaignStatus.CANCELLED:
            raise DialerError(f"campaign {name} was cancelled; `dialer resume {name}` reopens it")
        if status == CampaignStatus.COMPLETED:
            store.set_campaign_status(self.ledger, name, CampaignStatus.ACTIVE)
        closed = store.close_dnc_contacts(self.ledger, self.campaign_id)
        if closed:
            logger.info("campaign %s: %d waiting contact(s) are on the DNC list", name, closed)
        await self._reconcile()
        last_reconcile = time.monotonic()
        try:
            await self._loop(last_reconcile)
        finally:
            self.stats.state = "finishing calls"
            while self._tasks:
                await asyncio.wait(set(self._tasks))
        if store.summary(self.ledger, name).remaining == 0:
            store.set_campaign_status(self.ledger, name, CampaignStatus.COMPLETED)
        self.stats.state = "done"
        logger.info("%s", self.stats.summary_line(name))
        return self.stats

    async def _loop(self, last_reconcile: float) -> None:
        opts, config = self.options, self.config
        while True:
            if self._draining:
                self.stats.stop_reason = "drained"
                return
            now = self.clock()
            bound = self._end_bound()
            if bound is not None and now >= bound:
                self.stats.stop_reason = f"reached {bound.isoformat(timespec='seconds')}"
                return
            if opts.max_attempts is not None and self.stats.claimed >= opts.max_attempts:
                self.stats.stop_reason = f"made {opts.max_attempts} attempt(s)"
                return
            if config.start_at is not None and now < config.start_at:
                wait = (config.start_at - now).total_seconds()
                if wait > opts.max_wait:
                    self.stats.stop_reason = f"campaign starts at {config.start_at.isoformat()}"
                    return
                self.stats.state = "waiting for start_at"
                await self._idle(min(wait, 5.0))
                continue
            if time.monotonic() - last_reconcile >= opts.reconcile_every:
                await self._reconcile()
                last_reconcile = time.monotonic()

            result = store.claim_next(
                self.ledger,
                self.campaign_id,
                campaign_name=config.name,
                dialer_id=opts.dialer_id,
                now=now,
                wall=self.wall(),
                max_concurrent=config.max_concurrent_calls,
                bucket=self._bucket,
                dialable=partial(self._open_at, now),
                is_test=config.is_test,
            )
            if result.claimed is not None:
                self.stats.claimed += 1
                self.stats.state = "dialing"
                self._spawn(self._attempt(result.claimed))
            elif result.reason == "inactive":
                if result.campaign_status == CampaignStatus.PAUSED:
                    self.stats.state = "paused"
                    await self._idle(1.0)
                    continue
                if result.campaign_status == CampaignStatus.CANCELLED:
                    self.stats.stop_reason = "cancelled"
                    self.hang_up_all()
                else:
                    self.stats.stop_reason = f"campaign is {result.campaign_status}"
                return
            elif result.reason == "capped":
                self.stats.state = f"at the cap ({config.max_concurrent_calls} in flight)"
                # A slot may free up in another process sharing the ledger; poll soon, with
                # jitter, so a process whose own call ended does not always win it.
                await self._idle(0.2 + random.random() * 0.1)
            elif result.reason == "paced":
                await self._idle(result.wait)
            elif not await self._wait_for_due(now):
                return

    def _open_at(self, now: datetime, zones: Sequence[str]) -> bool:
        return self.window.is_open(zones, now)

    def _end_bound(self) -> datetime | None:
        bounds = [b for b in (self.options.until, self.config.end_at) if b is not None]
        return min(bounds) if bounds else None

    async def _wait_for_due(self, now: datetime) -> bool:
        """Nothing is dialable now: wait for the next due contact, or say the run is over."""
        store.close_dnc_contacts(self.ledger, self.campaign_id)
        next_due = self._next_dialable(now)
        self.stats.next_due = next_due
        if next_due is None:
            if not self._tasks:
                self.stats.stop_reason = "nothing left to dial"
                return False
            self.stats.state = "waiting for calls in flight"
            await self._idle(1.0)
            return True
        wait = (next_due - now).total_seconds()
        bound = self._end_bound()
        beyond = wait > self.options.max_wait or (bound is not None and next_due >= bound)
        if beyond and not self._tasks:
            self.stats.stop_reason = f"next due at {next_due.isoformat(timespec='seconds')}"
            return False
        self.stats.state = f"waiting for {next_due.isoformat(timespec='seconds')}"
        await self._idle(min(max(wait, 0.05), 2.0))
        return True

    def _next_dialable(self, now: datetime) -> datetime | None:
        """The earliest moment any waiting contact is due and inside its calling hours."""
        earliest: dict[tuple[str, ...], datetime] = {}
        for zones, at in store.waiting_contacts(self.ledger, self.campaign_id):
            key = tuple(zones)
            due = max(now, at) if at is not None else now
            if key not in earliest or due < earliest[key]:
                earliest[key] = due
        # next_open is monotonic in its start time, so each zone set's earliest due decides it.
        found = [self.window.next_open(list(k), due) for k, due in earliest.items()]
        opens = [t for t in found if t is not None]
        return min(opens) if opens else None

    async def _idle(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, seconds))

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._wake.set()
            if not t.cancelled() and t.exception() is not None:
                logger.error("dialer task failed", exc_info=t.exception())

        task.add_done_callback(done)

    # -- one attempt -----------------------------------------------------------------------

    async def call_once(self, claimed: store.Claimed) -> None:
        """Place one already-claimed call the campaign's way and finalise it, without
        retry (`dialer call`). Its phase is in `stats.calls` while it runs."""
        self.one_off = True
        await self._attempt(claimed)

    async def _attempt(self, claimed: store.Claimed) -> None:
        masked = mask_number(claimed.e164)
        call = CallView(claimed.attempt_id, masked, claimed.room_name, "creating room")
        self.stats.calls[claimed.attempt_id] = call
        try:
            await self._dial_and_watch(claimed, call)
        except Exception as exc:
            logger.exception("attempt %d to %s failed unexpectedly", claimed.attempt_id, masked)
            await self._delete_quietly(claimed.room_name)
            self._finalise(claimed.attempt_id, claimed.timezones, Outcome.FAILED, error=str(exc))
        finally:
            self.stats.calls.pop(claimed.attempt_id, None)

    async def _dial_and_watch(self, c: store.Claimed, call: CallView) -> None:
        config = self.config
        assert config.trunk_id is not None and config.agent_name is not None  # checked in init
        request = DialRequest(
            campaign=config.name,
            contact_id=c.contact_id,
            attempt_id=c.attempt_id,
            phone_masked=call.masked,
            name=c.name,
            variables=c.variables,
            script=config.agent_script,
            store_transcripts=config.store_transcripts,
            max_call_duration_s=config.max_call_duration,
            is_test=c.is_test,
        )
        try:
            # The room outlives a slow agent join; it closes soon after everyone left.
            await self.tel.create_room(
                c.room_name,
                empty_timeout=int(config.agent_join_timeout + config.ringing_timeout + 30),
                departure_timeout=2,
            )
            call.phase = "waiting for agent"
            await self.tel.dispatch_agent(c.room_name, config.agent_name, request.model_dump_json())
            joined = await self._unless_hung_up(
                self.tel.wait_for_agent(c.room_name, config.agent_join_timeout)
            )
        except TelephonyError as exc:
            logger.warning("attempt %d: cannot set up the room: %s", c.attempt_id, exc)
            await self._delete_quietly(c.room_name)
            self._finalise(c.attempt_id, c.timezones, Outcome.AGENT_UNAVAILABLE, error=str(exc))
            return
        if not joined and self._hangup:
            await self._delete_quietly(c.room_name)
            self._finalise(
                c.attempt_id, c.timezones, Outcome.CANCELLED, error="hung up before dialing"
            )
            return
        if not joined:
            logger.warning(
                "attempt %d: no agent %r joined; not dialing", c.attempt_id, config.agent_name
            )
            await self._delete_quietly(c.room_name)
            self._finalise(
                c.attempt_id, c.timezones, Outcome.AGENT_UNAVAILABLE, error="no agent joined"
            )
            return

        # Last checks, right before the phone rings.
        blocked = self._blocked(c)
        if blocked is not None:
            outcome, reason = blocked
            await self._delete_quietly(c.room_name)
            self._finalise(c.attempt_id, c.timezones, outcome, error=reason)
            return
        if not store.mark_dial_started(self.ledger, c.attempt_id, self.clock()):
            logger.warning("attempt %d was reconciled elsewhere; not dialing", c.attempt_id)
            await self._delete_quietly(c.room_name)
            return
        self.stats.dials.append(time.monotonic())
        call.phase = "ringing"
        result = await self.tel.dial(
            room=c.room_name,
            trunk_id=config.trunk_id,
            number=c.e164,
            identity=f"callee-{c.attempt_id}",
            ringing_timeout=config.ringing_timeout,
            max_call_duration=config.max_call_duration,
            caller_id=config.caller_id,
            extension=c.extension,
            display_name=c.name,
        )
        if not result.answered:
            outcome = Outcome.CANCELLED if self._hangup else result.outcome or Outcome.FAILED
            logger.info(
                "attempt %d to %s: %s (%s)",
                c.attempt_id,
                call.masked,
                outcome,
                f"SIP {result.sip_status_code}" if result.sip_status_code else "no SIP response",
            )
            await self._delete_quietly(c.room_name)
            self._finalise(
                c.attempt_id,
                c.timezones,
                outcome,
                sip_status_code=result.sip_status_code,
                sip_status=result.sip_status,
                error=result.error,
            )
            return
        answered_at = self.clock()
        store.mark_answered(self.ledger, c.attempt_id, answered_at)
        call.phase = "in call"
        await self._watch(c.room_name, ringing_until=time.monotonic())
        await self._finish_from_record(c.attempt_id, c.timezones, answered=True)

    async def _unless_hung_up(self, wait: Coroutine[object, object, bool]) -> bool:
        """`wait`'s result, or False as soon as the operator hangs up everything."""
        task = asyncio.ensure_future(wait)
        stop = asyncio.ensure_future(self._hung_up.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False

    def _blocked(self, c: store.Claimed) -> tuple[Outcome, str] | None:
        """A reason not to dial after all: DNC, calling hours, a bound, or a hang-up."""
        if store.on_dnc_list(self.ledger, c.e164):
            return Outcome.DO_NOT_CALL, "on the do-not-call list at dial time"
        now = self.clock()
        if not self.window.is_open(c.timezones, now):
            return Outcome.CANCELLED, "calling hours closed before dialing"
        bound = self._end_bound()
        if self._hangup or (bound is not None and now >= bound):
            return Outcome.CANCELLED, "the run stopped before dialing"
        return None

    async def _watch(self, room: str, *, ringing_until: float) -> bool:
        """Hold the slot until the room is gone; True if the callee was seen answered.

        The agent is hung up when the callee has been gone for a short grace, or when
        the call outlives its maximum duration. Before `ringing_until` (monotonic) a
        missing callee may still be ringing, so it is not counted as gone.
        """
        opts = self.options
        deadline = time.monotonic() + self.config.max_call_duration + 30
        gone_since: float | None = None
        answered = False
        while True:
            try:
                people = await self.tel.participants(room)
            except TelephonyError as exc:
                logger.warning("cannot watch room %s: %s", room, exc)
                people = []
            if people is None:
                return answered
            now = time.monotonic()
            callee = [p for p in people if p.is_callee]
            answered = answered or any(p.answered for p in callee)
            if callee or now < ringing_until:
                gone_since = None
            elif gone_since is None:
                gone_since = now
            if (gone_since is not None and now - gone_since >= opts.callee_gone_grace) or (
                now >= deadline
            ):
                await self._delete_quietly(room)
                return answered
            await asyncio.sleep(opts.poll_interval)

    async def _finish_from_record(
        self, attempt_id: int, timezones: Sequence[str], *, answered: bool, lost: str = ""
    ) -> None:
        """Finalise an attempt whose room is gone, from the agent's call record."""
        deadline = time.monotonic() + self.options.record_grace
        record = store.call_record(self.ledger, attempt_id)
        while record is None and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            record = store.call_record(self.ledger, attempt_id)
        if record is not None and (answered or record.answered_at is not None):
            self._finalise(
                attempt_id,
                timezones,
                outcome_for_call(record.amd_result),
                answered_at=record.answered_at,
                disposition=record.disposition,
                add_dnc=record.added_to_dnc,
            )
        elif answered:
            self._finalise(
                attempt_id, timezones, Outcome.ANSWERED, error="the agent wrote no call record"
            )
        else:
            self._finalise(attempt_id, timezones, Outcome.FAILED, error=lost or "no result")

    def _finalise(
        self,
        attempt_id: int,
        timezones: Sequence[str],
        outcome: Outcome,
        *,
        sip_status_code: int | None = None,
        sip_status: str | None = None,
        error: str | None = None,
        answered_at: datetime | None = None,
        disposition: str | None = None,
        add_dnc: bool = False,
    ) -> None:
        zones = list(timezones)

        def rules(result: Outcome, dials: int, same: int) -> tuple[ContactStatus, datetime | None]:
            status, due = retry_rules(result, dials, same)
            if self.one_off and status == ContactStatus.RETRY:
                return ContactStatus.EXHAUSTED, None
            return status, due

        def retry_rules(
            result: Outcome, dials: int, same: int
        ) -> tuple[ContactStatus, datetime | None]:
            now = self.clock()
            if result == Outcome.CANCELLED:
                # Not a verdict on the contact: due again as soon as its window allows.
                return ContactStatus.RETRY, self.window.next_open(zones, now) or now
            decision = decide(
                self.config.retry,
                result,
                dials=dials,
                same_outcome=same,
                now=now,
                next_day_start=lambda t: self.window.next_day_start(zones, t),
            )
            return decision.status, decision.next_attempt_at

        done = store.finalise_attempt(
            self.ledger,
            attempt_id,
            outcome=outcome,
            ended_at=self.clock(),
            decide=rules,
            sip_status_code=sip_status_code,
            sip_status=sip_status,
            error=error,
            answered_at=answered_at,
            disposition=disposition,
            add_dnc=add_dnc,
        )
        if done is not None:
            self.stats.outcomes[outcome.value] += 1

    async def _delete_quietly(self, room: str) -> None:
        try:
            await self.tel.delete_room(room)
        except TelephonyError as exc:
            logger.warning("cannot delete room %s: %s", room, exc)

    # -- reconciliation --------------------------------------------------------------------

    async def _reconcile(self) -> None:
        """Settle attempts that a dead dialer left `dialing` or `in_call`."""
        now = self.clock()
        for stale in store.in_flight_attempts(self.ledger, self.campaign_id):
            if stale.attempt_id in self._adopted or stale.dialer_id == self.options.dialer_id:
                continue
            age = (now - stale.claimed_at).total_seconds()
            longest = (
                self.config.agent_join_timeout
                + self.config.ringing_timeout
                + self.config.max_call_duration
                + 120
            )
            dead = owner_is_dead(stale.dialer_id)
            if stale.dial_started_at is None:
                if dead or age >= self.options.stale_claim:
                    self._adopted.add(stale.attempt_id)
                    self._spawn(self._settle_undialed(stale))
            elif dead or age >= longest:
                self._adopted.add(stale.attempt_id)
                self._spawn(self._adopt(stale))

    async def _settle_undialed(self, stale: store.InFlight) -> None:
        """The owner died before dialing: nobody was called; the contact is due again."""
        logger.info("attempt %d was never dialed; releasing its contact", stale.attempt_id)
        await self._delete_quietly(stale.room_name)
        zones = self._zones_of(stale.contact_id)
        self._finalise(
            stale.attempt_id, zones, Outcome.CANCELLED, error="dialer stopped before dialing"
        )

    async def _adopt(self, stale: store.InFlight) -> None:
        """The owner died after dialing: watch the call to its end, then finalise it."""
        masked = mask_number(stale.e164)
        call = CallView(stale.attempt_id, masked, stale.room_name, "adopted")
        self.stats.calls[stale.attempt_id] = call
        zones = self._zones_of(stale.contact_id)
        try:
            answered = stale.status == AttemptStatus.IN_CALL
            assert stale.dial_started_at is not None
            # A dial cut off mid-ring may still ring until its ringing timeout runs out.
            ring_left = (
                stale.dial_started_at
                + timedelta(seconds=self.config.ringing_timeout + 5)
                - self.clock()
            ).total_seconds()
            logger.info(
                "adopting attempt %d to %s (%s) left by %s",
                stale.attempt_id,
                masked,
                stale.status,
                stale.dialer_id,
            )
            seen = await self._watch(stale.room_name, ringing_until=time.monotonic() + ring_left)
            if seen and not answered:
                store.mark_answered(self.ledger, stale.attempt_id, self.clock())
            await self._finish_from_record(
                stale.attempt_id,
                zones,
                answered=answered or seen,
                lost="dial result lost when the dialer stopped mid-dial",
            )
        finally:
            self.stats.calls.pop(stale.attempt_id, None)

    def _zones_of(self, contact_id: int) -> list[str]:
        return store.contact_timezones(self.ledger, contact_id)


# -- running a campaign file (the CLI and the scheduler call these) -----------------------


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
    async with Telephony(
        settings.livekit_http_url,
        settings.livekit_api_key,
        settings.livekit_api_secret.get_secret_value(),
    ) as tel:
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
                live.update(_render(dialer))
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
    summary = store.summary(dialer.ledger, dialer.config.name)
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
            live.update(_render(dialer))
        await asyncio.sleep(1.0)


#: A scheduled run waits this long at most for the next retry that falls inside the
#: calling hours (a no-answer retry 2 h later the same evening is placed in this run;
#: one that the window pushes to tomorrow ends the run and waits for the next one).
SCHEDULED_MAX_WAIT_S = 6 * 3600.0


def dial_campaign(config: CampaignConfig, ledger: Ledger, stop: threading.Event) -> str:
    """The scheduler's dialer: run until nothing more is dialable tonight, or `stop` is set.

    Runs its own event loop in the calling thread; returns the run's summary line.
    """
    settings = get_settings()
    config = prepare(config, settings)

    async def main() -> str:
        async with Telephony(
            settings.livekit_http_url,
            settings.livekit_api_key,
            settings.livekit_api_secret.get_secret_value(),
        ) as tel:
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
    campaign's waiting contacts.
    """
    target = {
        "pause": CampaignStatus.PAUSED,
        "resume": CampaignStatus.ACTIVE,
        "cancel": CampaignStatus.CANCELLED,
    }[action]
    previous = store.set_campaign_status(ledger, name, target)
    if previous == target:
        return f"campaign {name} is already {target.value}"
    return f"campaign {name}: {previous} -> {target.value}"


def status(ledger: Ledger, name: str) -> store.CampaignSummary:
    """`dialer status NAME`, from the ledger alone."""
    return store.summary(ledger, name)


#: errors a user can fix; the CLI prints them as one line
USER_ERRORS = (CampaignFileError, DialerError, store.CampaignNotFound, TelephonyError)


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
