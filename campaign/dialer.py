"""The dialer engine: claim, window, pace, dial, watch, record, retry.

One `Dialer` runs one campaign. It claims due contacts from the ledger (the claim
counts the campaign's in-flight attempts and draws from its shared pacing bucket,
so caps hold across processes), and runs each attempt as a task:

1. the attempt row is already committed (`dialing`) by the claim;
2. create the room with the agent's dispatch (the `DialRequest`) in one request;
3. wait, bounded, for the agent; with no agent, do not dial (`agent_unavailable`);
4. check the calling hours and this dialer's lease once more, mark the dial started
   unless the number joined the DNC list (one guarded update), then
   `CreateSIPParticipant` (wait until answered);
5. a SIP final response is committed (the attempt finalised) before the room is
   deleted; an answer is committed before anything else, and the call is watched
   until its room is gone (the concurrency slot is held until then);
6. read the agent's call record and finalise the attempt; the retry rules decide
   the contact's next status.

Faults (docs/design.md, "Faults"): an error from LiveKit or the ledger is unknown,
never evidence, so a watcher keeps watching and hangs up only on evidence (callee
left, agent left, max duration, operator). A circuit breaker per part (LiveKit, the
agent workers) stops claiming while it is down and probes until it is back. Each
dialer holds a lease in the ledger; only the attempts of dialers whose lease expired
are reconciled, an undialed one with one guarded update before its room is touched.

The engine reaches the ledger through `AsyncLedger` (the sync store in worker
threads) and LiveKit through a `TelephonyPort`. The clock is injected: calling
hours, retry times and waits for a part that is down follow `clock()`; pacing
follows `wall()`; polling follows real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from campaign.campaign_file import CampaignConfig
from campaign.contract import AGENT_HEARTBEAT_S, DialRequest
from campaign.errors import UserError
from campaign.outcomes import (
    NO_CALL_RECORD,
    AttemptStatus,
    CampaignStatus,
    ContactStatus,
    EndReason,
    Outcome,
    outcome_for_call,
)
from campaign.pacing import TokenBucket
from campaign.retry import decide
from campaign.store import Ledger, leases, utcnow
from campaign.store import dialing as store
from campaign.store.aio import AsyncLedger, LedgerRetry
from campaign.telephony import TelephonyError, TelephonyPort, mask_number

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
T = TypeVar("T")


class DialerError(UserError):
    """The campaign cannot run; the message says why in one line."""


class PartDown(DialerError):
    """A part stayed down longer than `--max-wait`; the message names it."""

    exit_code = 5


def new_dialer_id(host: str | None = None, pid: int | None = None) -> str:
    """`host:pid:random`, for logs and the lease row; a new one for every process start.

    Only the lease decides whether its owner is alive; host and PID are for people.
    """
    return f"{host or socket.gethostname()}:{pid or os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class RunOptions:
    """Bounds and timings of one run (the campaign file holds the campaign's own settings)."""

    #: claim nothing at or after this time (by the injected clock)
    until: datetime | None = None
    #: claim at most this many attempts in this run
    max_attempts: int | None = None
    #: wait at most this long (by the injected clock) for the next due contact, or for a
    #: part that is down; beyond it the run ends (for a part down: with `PartDown`)
    max_wait: float = 900.0
    #: how often a call's room is polled while the slot is held
    poll_interval: float = 1.0
    #: how often while the call is merely in progress (callee on the line, the agent
    #: there and beating); None: twice `poll_interval`. Anything amiss: `poll_interval`.
    in_call_poll_interval: float | None = None
    #: the longest pause between looks at a room while LiveKit does not answer
    watch_backoff_max: float = 5.0
    #: how long the agent gets to write its call record after the room is gone
    record_grace: float = 10.0
    #: hang up the agent when the callee has been gone this long
    callee_gone_grace: float = 5.0
    #: hang up the callee when the agent has been gone this long (`agent_lost`)
    agent_gone_grace: float = 3.0
    #: an agent whose heartbeat attribute has not changed this long is gone too (a killed
    #: job's participant lingers until LiveKit gives up waiting for it to reconnect)
    agent_silent_after: float = 3 * AGENT_HEARTBEAT_S
    #: how often the lease is renewed, and how long it lives without renewal
    heartbeat: float = 2.0
    lease_ttl: float = 10.0
    #: how often attempts left by other (expired) dialers are looked for
    reconcile_every: float = 5.0
    #: consecutive failures of LiveKit or of the agent dispatch that open the breaker
    breaker_threshold: int = 3
    #: the first and the longest pause between probes of a part that is down
    probe_initial: float = 1.0
    probe_max: float = 30.0
    #: how long a final verdict is retried while the ledger refuses it
    ledger_patience: float = 60.0
    ledger_retry: LedgerRetry = field(default_factory=LedgerRetry)
    dialer_id: str = field(default_factory=new_dialer_id)

    @property
    def in_call_pause(self) -> float:
        return self.in_call_poll_interval or 2 * self.poll_interval


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


@dataclass
class Breaker:
    """A circuit breaker on one part (LiveKit, or the agent workers).

    Closed: calls go through. After `threshold` consecutive failures it opens: the
    engine claims nothing and probes the part with exponential backoff. A probe that
    succeeds half-opens it: claims resume, and the next failure reopens it at once;
    the next success closes it. Times are the engine's clock (`opened_at`) and
    monotonic seconds (`next_probe`).
    """

    part: str  #: what is down, in words: "LiveKit at http://...", "an agent worker named x"
    waiting: str  #: the live view's state while open: "waiting for LiveKit"
    threshold: int
    initial: float
    maximum: float
    failures: int = 0
    opened_at: datetime | None = None
    half_open: bool = False
    next_probe: float = 0.0
    delay: float = 0.0
    last_error: str = ""

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None and not self.half_open

    @property
    def tripped(self) -> bool:
        """Open or half-open: a failure now is the part being down, not the contact."""
        return self.opened_at is not None

    def failure(self, error: str, now: datetime) -> None:
        self.failures += 1
        self.last_error = error
        if self.opened_at is None and self.failures < self.threshold:
            return
        if self.opened_at is None:
            self.opened_at = now
            logger.warning("%s is down (%s); not claiming until it is back", self.part, error)
        self.half_open = False
        self.delay = self.initial if not self.delay else min(self.delay * 2, self.maximum)
        self.next_probe = time.monotonic() + self.delay

    def probe_failed(self, error: str) -> None:
        self.last_error = error
        self.delay = min(max(self.delay, self.initial) * 2, self.maximum)
        self.next_probe = time.monotonic() + self.delay

    def probe_passed(self) -> None:
        logger.info("%s answers again; claiming", self.part)
        self.half_open = True

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.half_open = False
        self.delay = 0.0


@dataclass
class Watched:
    """What watching a room established."""

    answered: bool = False  #: the callee was seen answered
    callee_seen: bool = False
    callee_last_seen: float = 0.0  #: monotonic
    #: a listing failed before the answer: what the phone did meanwhile was not seen
    blind: bool = False
    agent_lost: bool = False  #: the agent left while the callee was on the line
    ended: str = ""  #: room gone, callee left, agent left, max duration, hung up


class Dialer:
    """Runs one campaign until nothing is due, a bound is reached, or it is drained."""

    def __init__(
        self,
        ledger: Ledger,
        config: CampaignConfig,
        telephony: TelephonyPort,
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
        self.db = AsyncLedger(ledger, retry=self.options.ledger_retry)
        self.clock = clock
        self.wall = wall
        self.window = config.window
        self.stats = LiveStats()
        self.campaign_id = 0
        opts = self.options
        self.livekit = Breaker(
            f"LiveKit at {telephony.url}",
            "waiting for LiveKit",
            opts.breaker_threshold,
            opts.probe_initial,
            opts.probe_max,
        )
        self.agents = Breaker(
            f"an agent worker named {config.agent_name!r}",
            "waiting for an agent worker",
            opts.breaker_threshold,
            opts.probe_initial,
            opts.probe_max,
        )
        self._bucket = TokenBucket(rate=config.calls_per_second)
        self._tasks: set[asyncio.Task[object]] = set()
        #: attempts a task of this process is handling (its own, or taken over)
        self._active: set[int] = set()
        self._wake = asyncio.Event()
        self._draining = False
        self._hangup = False
        self._hung_up = asyncio.Event()
        #: monotonic time of the last renewal of this dialer's lease
        self._renewed = 0.0
        #: the shared bucket holds no token before this wall time, as far as this
        #: process knows (it took the last one, or a claim said so): no claim till then
        self._no_token_before = 0.0
        #: LiveKit answered once in this run (before that, a fault ends the run)
        self._reached = False
        #: a fault of LiveKit that a one-off call reports to its caller
        self._fault: TelephonyError | None = None
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
        """Dial until done; returns this run's statistics.

        LiveKit must answer before the first claim (a `TelephonyError` otherwise: most
        likely a wrong URL or key); after that an outage is waited for, up to `max_wait`,
        then `PartDown` is raised once the calls in flight are finished.
        """
        name = self.config.name
        self.campaign_id, status = await self.db(
            store.ensure_campaign,
            name,
            region=self.config.region,
            config=self.config.model_dump(mode="json"),
        )
        if status == CampaignStatus.CANCELLED:
            raise DialerError(f"campaign {name} was cancelled; `dialer resume {name}` reopens it")
        if status == CampaignStatus.COMPLETED:
            await self.db(store.set_campaign_status, name, CampaignStatus.ACTIVE)
        closed = await self.db(store.close_dnc_contacts, self.campaign_id)
        if closed:
            logger.info("campaign %s: %d waiting contact(s) are on the DNC list", name, closed)
        down: PartDown | None = None
        async with self.leased():
            try:
                await self._reconcile()
                await self._loop(time.monotonic())
            except PartDown as exc:
                down = exc
            finally:
                self.stats.state = "finishing calls"
                while self._tasks:
                    await asyncio.wait(set(self._tasks))
        if down is not None:
            self.stats.state = "gave up"
            logger.error("%s", self.stats.summary_line(name))
            raise down
        summary = await self.db(store.summary, name)
        if summary.remaining == 0:
            await self.db(store.set_campaign_status, name, CampaignStatus.COMPLETED)
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
                await self._guarded(self._reconcile(), "reconcile")
                last_reconcile = time.monotonic()
            if await self._waiting_for_a_part(now):
                continue
            if not self._lease_fresh():
                self.stats.state = "waiting for the ledger (lease not renewed)"
                await self._idle(opts.heartbeat)
                continue
            if not self._reached:
                await self.tel.check_access()
                self._reached = True
            wall = self.wall()
            if wall < self._no_token_before:
                # A claim now could only answer "paced"; a call ending wakes this early.
                await self._idle(min(self._no_token_before - wall, 1.0))
                continue

            try:
                result = await self.db(
                    store.claim_next,
                    self.campaign_id,
                    campaign_name=config.name,
                    dialer_id=opts.dialer_id,
                    now=now,
                    wall=wall,
                    max_concurrent=config.max_concurrent_calls,
                    bucket=self._bucket,
                    window=self.window,
                    is_test=config.is_test,
                    clock=lambda: (self.clock(), self.wall()),
                )
            except SQLAlchemyError as exc:
                self.stats.state = "waiting for the ledger"
                logger.warning("cannot claim: %s", _first_line(exc))
                await self._idle(opts.heartbeat)
                continue
            if result.claimed is not None:
                # The token was taken at `wall` or later, so the next is due an interval
                # after it, less what the burst allows; the claim left the shared bucket's
                # state in `bucket`, which may say later.
                bucket = self._bucket
                soonest = max(bucket.interval * (2 - bucket.burst), bucket.wait_time(wall))
                self._no_token_before = wall + soonest
                self.stats.claimed += 1
                self.stats.state = "dialing"
                self._active.add(result.claimed.attempt_id)
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
                self._no_token_before = wall + result.wait
                await self._idle(result.wait)
            elif not await self._wait_for_due(now):
                return

    async def _waiting_for_a_part(self, now: datetime) -> bool:
        """While LiveKit or the agents are down: probe when due; True means do not claim."""
        breaker = next((b for b in (self.livekit, self.agents) if b.is_open), None)
        if breaker is None:
            return False
        assert breaker.opened_at is not None
        waited = (now - breaker.opened_at).total_seconds()
        since = breaker.opened_at.isoformat(timespec="seconds")
        self.stats.state = f"{breaker.waiting} (down since {since}: {breaker.last_error})"
        if waited > self.options.max_wait:
            self.stats.stop_reason = f"gave up after waiting {_span(waited)} for {breaker.part}"
            raise PartDown(
                f"campaign {self.config.name}: gave up after {_span(waited)}:"
                f" {breaker.part} is down ({breaker.last_error})"
            )
        if time.monotonic() >= breaker.next_probe:
            error = await self._probe(breaker)
            if error is None:
                breaker.probe_passed()
                return False
            breaker.probe_failed(error)
        await self._idle(min(1.0, max(0.05, breaker.next_probe - time.monotonic())))
        return True

    async def _probe(self, breaker: Breaker) -> str | None:
        """One look at a part that is down; None when it answers."""
        try:
            if breaker is self.livekit:
                await self.tel.check_access()
                return None
            room = f"{self.config.name}-probe-{uuid.uuid4().hex[:8]}"
            probe = DialRequest(
                campaign=self.config.name,
                contact_id=0,
                attempt_id=0,
                phone_masked="",
                is_test=True,
                probe=True,
            )
            assert self.config.agent_name is not None  # checked in __init__
            joined = await self.tel.probe_agent(
                room,
                self.config.agent_name,
                probe.model_dump_json(),
                self.config.agent_join_timeout,
            )
        except TelephonyError as exc:
            return str(exc)
        return None if joined else "no agent joined a probe dispatch"

    def _end_bound(self) -> datetime | None:
        bounds = [b for b in (self.options.until, self.config.end_at) if b is not None]
        return min(bounds) if bounds else None

    async def _wait_for_due(self, now: datetime) -> bool:
        """Nothing is dialable now: wait for the next due contact, or say the run is over."""
        await self.db(store.close_dnc_contacts, self.campaign_id)
        await self._reconcile()  # what others left may put contacts back
        # In flight is read before what is waiting: an attempt settled in between is seen
        # in one or the other, never in neither.
        others = await self.db(store.in_flight_attempts, self.campaign_id)
        next_due = await self._next_dialable(now)
        self.stats.next_due = next_due
        if next_due is None:
            if self._tasks:
                self.stats.state = "waiting for calls in flight"
                await self._idle(1.0)
                return True
            if others:
                # Calls of another dialer (alive, or not yet expired) may put contacts back.
                self.stats.state = "waiting for other dialers' calls"
                await self._idle(self.options.heartbeat)
                return True
            self.stats.stop_reason = "nothing left to dial"
            return False
        wait = (next_due - now).total_seconds()
        bound = self._end_bound()
        beyond = wait > self.options.max_wait or (bound is not None and next_due >= bound)
        if beyond and not self._tasks:
            self.stats.stop_reason = f"next due at {next_due.isoformat(timespec='seconds')}"
            return False
        self.stats.state = f"waiting for {next_due.isoformat(timespec='seconds')}"
        await self._idle(min(max(wait, 0.05), 2.0))
        return True

    async def _next_dialable(self, now: datetime) -> datetime | None:
        """The earliest moment any waiting contact is due and inside its calling hours."""
        found = await self.db(store.next_due, self.campaign_id, window=self.window, now=now)
        if found.closed:
            logger.warning(
                "campaign %s: closed %d contact(s) whose zones never share calling hours %s",
                self.config.name,
                found.closed,
                self.window.describe(),
            )
        if found.reopened:
            logger.info(
                "campaign %s: reopened %d contact(s) the calling hours now reach",
                self.config.name,
                found.reopened,
            )
        return found.at

    async def _idle(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=max(0.0, seconds))

    def _spawn(self, coro: Coroutine[object, object, object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[object]) -> None:
            self._tasks.discard(t)
            self._wake.set()
            if not t.cancelled() and t.exception() is not None:
                logger.error("dialer task failed", exc_info=t.exception())

        task.add_done_callback(done)

    async def _guarded(self, work: Awaitable[None], what: str) -> None:
        """Run housekeeping; a ledger fault is logged and tried again next time."""
        try:
            await work
        except SQLAlchemyError as exc:
            logger.warning("%s failed, will retry: %s", what, _first_line(exc))

    # -- the lease ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def leased(self) -> AsyncIterator[None]:
        """Hold this dialer's lease (renewed in the background) for the block's duration.

        `run` takes it itself; `call_once`'s caller takes it before writing the attempt.
        """
        await self._take_lease()
        heartbeat = asyncio.ensure_future(self._heartbeat())
        try:
            yield
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await self._release_lease()

    async def _take_lease(self) -> None:
        await self.db(
            leases.acquire,
            self.options.dialer_id,
            campaign=self.config.name,
            ttl=self.options.lease_ttl,
        )
        self._renewed = time.monotonic()

    async def _heartbeat(self) -> None:
        opts = self.options
        while True:
            await asyncio.sleep(opts.heartbeat)
            try:
                await self.db(
                    leases.renew,
                    opts.dialer_id,
                    campaign=self.config.name,
                    state=self.stats.state,
                    ttl=opts.lease_ttl,
                )
            except SQLAlchemyError as exc:
                logger.warning("cannot renew the dialer lease: %s", _first_line(exc))
                continue
            self._renewed = time.monotonic()

    def _lease_fresh(self) -> bool:
        """True while this dialer's lease surely holds (one heartbeat of margin)."""
        opts = self.options
        return time.monotonic() - self._renewed < opts.lease_ttl - opts.heartbeat

    async def _release_lease(self) -> None:
        try:
            await self.db(leases.release, self.options.dialer_id)
        except SQLAlchemyError as exc:  # it expires by itself
            logger.warning("cannot drop the dialer lease: %s", _first_line(exc))

    # -- one attempt -----------------------------------------------------------------------

    async def call_once(self, claimed: store.Claimed) -> None:
        """Place one already-claimed call the campaign's way and finalise it, without
        retry (`dialer call`), inside `leased()`. Its phase is in `stats.calls` while it
        runs. When LiveKit kept the call from being placed, its `TelephonyError` is
        raised once the attempt is recorded."""
        self.one_off = True
        self._active.add(claimed.attempt_id)
        await self._attempt(claimed)
        if self._fault is not None:
            raise self._fault

    async def _attempt(self, claimed: store.Claimed) -> None:
        masked = mask_number(claimed.e164)
        call = CallView(claimed.attempt_id, masked, claimed.room_name, "creating room")
        self.stats.calls[claimed.attempt_id] = call
        try:
            await self._dial_and_watch(claimed, call)
        except Exception as exc:
            logger.exception("attempt %d to %s failed unexpectedly", claimed.attempt_id, masked)
            # Undialed: settled here. Dialed: left in flight, and the next reconcile
            # follows the call to its end; its room is never deleted on an error.
            error = f"dialer error before dialing: {_first_line(exc)}"
            if await self._settle_undialed(claimed.attempt_id, claimed.timezones, error=error):
                await self._delete_quietly(claimed.room_name)
        finally:
            self.stats.calls.pop(claimed.attempt_id, None)
            self._active.discard(claimed.attempt_id)

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
                agent_name=config.agent_name,
                agent_metadata=request.model_dump_json(),
            )
            call.phase = "waiting for agent"
            joined = await self._unless_hung_up(
                self.tel.wait_for_agent(c.room_name, config.agent_join_timeout)
            )
        except TelephonyError as exc:
            logger.warning("attempt %d: cannot set up the room: %s", c.attempt_id, exc)
            await self._not_placed(c, self.livekit, str(exc), exc)
            return
        self.livekit.success()
        if not joined and self._hangup:
            await self._not_placed(c, None, "hung up before dialing")
            return
        if not joined:
            logger.warning(
                "attempt %d: no agent %r joined; not dialing", c.attempt_id, config.agent_name
            )
            await self._not_placed(c, self.agents, "no agent joined")
            return
        self.agents.success()

        # Last checks, right before the phone rings; the DNC list is read in the same
        # guarded update that marks the dial started.
        blocked = self._blocked(c)
        started = self.clock()
        if blocked is None:
            start = await self.db(store.start_dial, c.attempt_id, c.e164, started)
            if start == "on_dnc_list":
                blocked = Outcome.DO_NOT_CALL, "on the do-not-call list at dial time"
            elif start == "taken":
                # Reconciled by a dialer that judged this one gone; it deletes the room.
                logger.warning("attempt %d was reconciled elsewhere; not dialing", c.attempt_id)
                return
        if blocked is not None:
            outcome, reason = blocked
            if await self._settle_undialed(c.attempt_id, c.timezones, outcome, reason):
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
        if result.status == "answered":
            await self._answered(c, call)
        elif result.status == "final":
            outcome = Outcome.CANCELLED if self._hangup else result.outcome or Outcome.FAILED
            logger.info(
                "attempt %d to %s: %s (%s)",
                c.attempt_id,
                call.masked,
                outcome,
                f"SIP {result.sip_status_code}" if result.sip_status_code else "no SIP response",
            )
            # The verdict is committed before the room goes: a crash in between keeps it.
            await self._verdict(
                c.attempt_id,
                c.timezones,
                outcome,
                sip_status_code=result.sip_status_code,
                sip_status=result.sip_status,
                error=result.error,
            )
            await self._delete_quietly(c.room_name)
        elif result.status == "not_sent":
            assert result.fault is not None
            if self.one_off:
                self._fault = result.fault
            self.livekit.failure(str(result.fault), self.clock())
            error = f"the dial never reached LiveKit: {result.error}"
            await self._verdict(c.attempt_id, c.timezones, Outcome.CANCELLED, error=error)
            await self._delete_quietly(c.room_name)
        else:
            logger.warning(
                "attempt %d: no answer to the dial (%s); following the room",
                c.attempt_id,
                result.error,
            )
            call.phase = "ringing (result unknown)"
            await self._follow(c.attempt_id, c.timezones, c.room_name, started, answered=False)

    async def _answered(self, c: store.Claimed, call: CallView) -> None:
        """The answer is committed first; then the call is watched to its end."""
        answered_at = self.clock()
        call.phase = "in call"
        try:
            await self.db(store.mark_answered, c.attempt_id, answered_at)
        except SQLAlchemyError as exc:
            # Not a reason to hang up: the final write carries the answer time too.
            logger.warning("attempt %d: cannot record the answer yet: %s", c.attempt_id, exc)
        watched = await self._watch(
            c.room_name, ringing_until=time.monotonic(), first_look=self.options.in_call_pause
        )
        await self._finish_from_record(
            c.attempt_id,
            c.timezones,
            answered=True,
            agent_lost=watched.agent_lost,
            answered_at=answered_at,
        )

    async def _not_placed(
        self,
        c: store.Claimed,
        breaker: Breaker | None,
        error: str,
        fault: TelephonyError | None = None,
    ) -> None:
        """Nobody was dialed: settle the attempt, then close its room.

        While a part is down (its breaker tripped, including by this failure) the attempt
        is `cancelled`, which counts against no cap; otherwise `agent_unavailable`.
        """
        if self.one_off and fault is not None:
            self._fault = fault
        outcome, text = Outcome.CANCELLED, error
        if breaker is not None:
            was_tripped = breaker.tripped
            breaker.failure(error, self.clock())
            if was_tripped or breaker.tripped:
                text = f"not placed, {breaker.waiting}: {error}"
            else:
                outcome = Outcome.AGENT_UNAVAILABLE
        if await self._settle_undialed(c.attempt_id, c.timezones, outcome, text):
            await self._delete_quietly(c.room_name)

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
        """A reason not to dial after all: calling hours, a bound, a hang-up, the lease
        (the DNC list is checked by `store.start_dial`)."""
        now = self.clock()
        if not self.window.is_open(c.timezones, now):
            return Outcome.CANCELLED, "calling hours closed before dialing"
        bound = self._end_bound()
        if self._hangup or (bound is not None and now >= bound):
            return Outcome.CANCELLED, "the run stopped before dialing"
        if not self._lease_fresh():
            # Others may already judge this dialer gone and settle the attempt.
            return Outcome.CANCELLED, "this dialer's lease was not renewed in time"
        return None

    async def _watch(self, room: str, *, ringing_until: float, first_look: float = 0.0) -> Watched:
        """Hold the slot until the room is gone; hang up only on evidence.

        Evidence is the callee gone for a short grace, the agent gone while the callee
        is on the line (`agent_lost`), the maximum call duration, or the operator. An
        error while looking is unknown: the watcher looks again with backoff and never
        deletes the room or frees the slot for it. Before `ringing_until` (monotonic) a
        missing callee may still be ringing, so it is not counted as gone. The first
        look is `first_look` seconds away (a dial that was just answered told who is
        there); a call merely in progress is looked at every `in_call_poll_interval`.
        """
        opts = self.options
        deadline = time.monotonic() + self.config.max_call_duration + 30
        seen = Watched()
        callee_gone: float | None = None
        agent_gone: float | None = None
        beat, beat_at = "", time.monotonic()  # the agent's last heartbeat, and when it changed
        pause = opts.poll_interval
        await asyncio.sleep(first_look)
        while True:
            steady = False
            hang_up = ""
            try:
                people = await self.tel.participants(room)
            except TelephonyError as exc:
                logger.warning("cannot watch room %s (will look again): %s", room, exc)
                seen.blind = seen.blind or not seen.answered
                if time.monotonic() >= deadline:
                    hang_up = "max duration"
                else:
                    await asyncio.sleep(pause)
                    pause = min(pause * 2, opts.watch_backoff_max)
                    continue
            else:
                pause = opts.poll_interval
                if people is None:
                    seen.ended = seen.ended or "room gone"
                    return seen
                now = time.monotonic()
                callee = [p for p in people if p.is_callee]
                if callee:
                    seen.callee_seen, seen.callee_last_seen = True, now
                seen.answered = seen.answered or any(p.answered for p in callee)
                if callee or now < ringing_until:
                    callee_gone = None
                elif callee_gone is None:
                    callee_gone = now
                agent = next((p for p in people if p.is_agent), None)
                beating = agent is not None and (agent.heartbeat != beat or not beat)
                if agent is not None and agent.heartbeat != beat:
                    beat, beat_at = agent.heartbeat, now
                silent = bool(beat) and now - beat_at >= opts.agent_silent_after
                if (agent is not None and not silent) or not callee:
                    agent_gone = None
                elif agent_gone is None:
                    # a silent agent has been gone since its last beat, already past the grace
                    agent_gone = now if not silent else now - opts.agent_gone_grace
                if callee_gone is not None and now - callee_gone >= opts.callee_gone_grace:
                    hang_up = "callee left"
                elif agent_gone is not None and now - agent_gone >= opts.agent_gone_grace:
                    hang_up, seen.agent_lost = "agent left", True
                    logger.warning(
                        "room %s: the agent is gone, the callee still on the line; hanging up", room
                    )
                elif now >= deadline:
                    hang_up = "max duration"
                elif self._hangup:
                    hang_up = "hung up"
                # a heartbeat unchanged since the last look may be the agent's last one
                steady = beating and any(p.answered for p in callee) and agent_gone is None
            if hang_up:
                seen.ended = hang_up
                if await self._delete_quietly(room):
                    return seen
                if time.monotonic() >= deadline + opts.record_grace * 6:
                    # LiveKit enforces max_call_duration on the SIP leg itself.
                    return seen
            await asyncio.sleep(opts.in_call_pause if steady else opts.poll_interval)

    async def _follow(
        self,
        attempt_id: int,
        timezones: Sequence[str],
        room: str,
        dial_started: datetime,
        *,
        answered: bool,
    ) -> None:
        """Follow a dial whose result this process did not get (adopted after a crash,
        or a request that timed out) to its real end, then finalise it.

        A callee seen answered is a call; one seen ringing until the ringing timeout,
        with no gap in the looking, rang out (`no_answer`); anything else cannot be known
        (`unknown`): a server that was frozen may list a callee who hung up long ago.
        """
        ring_end = dial_started + timedelta(seconds=self.config.ringing_timeout)
        ring_left = (ring_end - self.clock()).total_seconds()
        ring_end_mono = time.monotonic() + ring_left
        watched = await self._watch(room, ringing_until=ring_end_mono + 5)
        if watched.answered and not answered:
            with contextlib.suppress(SQLAlchemyError):
                await self.db(store.mark_answered, attempt_id, self.clock())
        rang_out = (
            watched.callee_seen
            and not watched.blind
            and watched.callee_last_seen >= ring_end_mono - 3
        )
        await self._finish_from_record(
            attempt_id,
            timezones,
            answered=answered or watched.answered,
            agent_lost=watched.agent_lost,
            fallback=Outcome.NO_ANSWER if rang_out else Outcome.UNKNOWN,
            lost="" if rang_out else "the dial's result was lost; the phone may have rung",
        )

    async def _finish_from_record(
        self,
        attempt_id: int,
        timezones: Sequence[str],
        *,
        answered: bool,
        agent_lost: bool = False,
        answered_at: datetime | None = None,
        fallback: Outcome = Outcome.FAILED,
        lost: str = "",
    ) -> None:
        """Finalise an attempt whose room is gone, from the agent's call record."""
        deadline = time.monotonic() + self.options.record_grace
        record = await self._record(attempt_id)
        while record is None and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            record = await self._record(attempt_id)
        # An agent that left on purpose (it hung up, or left its voicemail) wrote its
        # record; one that was killed wrote none, and one that crashed wrote an error.
        if agent_lost and (record is None or record.end_reason == EndReason.ERROR):
            await self._verdict(
                attempt_id,
                timezones,
                Outcome.AGENT_LOST,
                answered_at=(record.answered_at if record else None) or answered_at,
                disposition=record.disposition if record else None,
                add_dnc=bool(record and record.added_to_dnc),
                error="the agent left the call; hung up",
            )
        elif record is not None and (answered or record.answered_at is not None):
            await self._verdict(
                attempt_id,
                timezones,
                outcome_for_call(record.amd_result),
                answered_at=record.answered_at or answered_at,
                disposition=record.disposition,
                add_dnc=record.added_to_dnc,
            )
        elif answered:
            await self._verdict(
                attempt_id,
                timezones,
                Outcome.ANSWERED,
                answered_at=answered_at,
                error=NO_CALL_RECORD,
            )
        else:
            await self._verdict(attempt_id, timezones, fallback, error=lost or None)

    async def _record(self, attempt_id: int) -> store.CallView | None:
        try:
            return await self.db(store.call_record, attempt_id)
        except SQLAlchemyError as exc:
            logger.warning("cannot read the call record yet: %s", _first_line(exc))
            return None

    async def _verdict(
        self, attempt_id: int, timezones: Sequence[str], outcome: Outcome, **facts: Any
    ) -> bool:
        """Finalise a dialed attempt, retrying while the ledger refuses (the verdict is
        known only here). Left in flight after `ledger_patience`: reconcile retries."""
        give_up = time.monotonic() + self.options.ledger_patience
        pause = 0.5
        while True:
            try:
                await self._finalise(attempt_id, timezones, outcome, **facts)
                return True
            except SQLAlchemyError as exc:
                if time.monotonic() >= give_up:
                    logger.error(
                        "attempt %d: cannot record %s: %s", attempt_id, outcome, _first_line(exc)
                    )
                    return False
                logger.warning("attempt %d: cannot record %s yet", attempt_id, outcome)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def _settle_undialed(
        self,
        attempt_id: int,
        timezones: Sequence[str],
        outcome: Outcome = Outcome.CANCELLED,
        error: str = "",
    ) -> bool:
        """Close an attempt that dialed nobody, guarded by `dial_started_at IS NULL`.

        False: it was dialed meanwhile (or closed, or the ledger is away): not settled.
        """
        try:
            return await self._finalise(
                attempt_id, timezones, outcome, error=error or None, only_undialed=True
            )
        except SQLAlchemyError as exc:
            logger.warning("attempt %d: cannot settle it now: %s", attempt_id, _first_line(exc))
            return False

    async def _finalise(
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
        only_undialed: bool = False,
    ) -> bool:
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

        done = await self.db(
            store.finalise_attempt,
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
            only_undialed=only_undialed,
        )
        if done is not None:
            self.stats.outcomes[outcome.value] += 1
        return done is not None

    async def _delete_quietly(self, room: str) -> bool:
        """Close the room; False (logged) when LiveKit did not confirm it."""
        try:
            await self.tel.delete_room(room)
        except TelephonyError as exc:
            logger.warning("cannot delete room %s: %s", room, exc)
            return False
        return True

    # -- reconciliation --------------------------------------------------------------------

    async def _reconcile(self) -> None:
        """Take over attempts in flight that nobody handles: those of dialers whose lease
        expired, and this process's own whose task gave up on a ledger fault."""
        for stale in await self.db(store.in_flight_attempts, self.campaign_id):
            if stale.attempt_id in self._active:
                continue
            if stale.owner_alive and stale.dialer_id != self.options.dialer_id:
                continue
            self._active.add(stale.attempt_id)
            self._spawn(self._take_over(stale))

    async def _take_over(self, stale: store.InFlight) -> None:
        try:
            zones = await self.db(store.contact_timezones, stale.contact_id)
            if stale.dial_started_at is None:
                # One guarded update before the room is touched: if the owner dialed
                # meanwhile, the guard fails and the call is adopted instead.
                error = "dialer stopped before dialing"
                if await self._settle_undialed(stale.attempt_id, zones, error=error):
                    logger.info("attempt %d was never dialed; released", stale.attempt_id)
                    await self._delete_quietly(stale.room_name)
                    return
                rows = await self.db(store.in_flight_attempts, self.campaign_id)
                fresh = next((r for r in rows if r.attempt_id == stale.attempt_id), None)
                if fresh is None or fresh.dial_started_at is None:
                    return  # closed by someone else, or the ledger is away: next time
                stale = fresh
            await self._adopt(stale, zones)
        finally:
            self._active.discard(stale.attempt_id)

    async def _adopt(self, stale: store.InFlight, zones: list[str]) -> None:
        """The owner is gone after dialing: follow the call to its end, then finalise it."""
        masked = mask_number(stale.e164)
        self.stats.calls[stale.attempt_id] = CallView(
            stale.attempt_id, masked, stale.room_name, "adopted"
        )
        try:
            assert stale.dial_started_at is not None
            logger.info(
                "adopting attempt %d to %s (%s) left by %s",
                stale.attempt_id,
                masked,
                stale.status,
                stale.dialer_id,
            )
            await self._follow(
                stale.attempt_id,
                zones,
                stale.room_name,
                stale.dial_started_at,
                answered=stale.status == AttemptStatus.IN_CALL,
            )
        finally:
            self.stats.calls.pop(stale.attempt_id, None)


def _first_line(exc: BaseException) -> str:
    """An error in one line (SQLAlchemy appends the statement and its parameters)."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _span(seconds: float) -> str:
    whole = round(seconds)
    if whole < 120:
        return f"{whole} s"
    if whole < 7200:
        return f"{whole // 60} min"
    return f"{whole / 3600:.1f} h"
