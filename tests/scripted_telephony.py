"""A scripted LiveKit for in-process fault injection: rooms, one agent, SIP phones.

Implements `campaign.telephony.TelephonyPort` the way the real server behaves as far
as the engine can see (rooms, participants with `sip.callStatus`, a dial that waits
until answered, SIP final responses, a room deleted by the agent when the callee
hangs up), and fails on cue: a part that is down (`down`), a listing outage
(`listing_down`), no agent (`agent_available`), a process killed at a step boundary
(`kill_at`). The scripted agent writes its call record when a conversation ends, as the
real one does from its own process, if a `recorder` is set. Everything is computed from
the time, so several dialers on several event loops (threads) can share one. Only for
faults that the real stack cannot produce on demand; everything else is tested on the
devstack.

Phones answer by the number's last digit, as the devstack's do: 1 talks, 3 busy
(486), 4 rings out (408 at the ringing timeout), 5 declines (603), 6 talks but the
agent dies after the answer (its participant goes), 7 talks but the agent's job hangs
after the answer (its participant stays, its heartbeat stops).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from campaign.contract import AGENT_HEARTBEAT_ATTR
from campaign.outcomes import AmdResult, EndReason, Outcome, outcome_for_sip_status
from campaign.store.calls import CallSummary
from campaign.store.models import utcnow
from campaign.telephony import AGENT, SIP, DialResult, Participant, TelephonyError

#: seconds from the INVITE to the answer, and of a conversation
ANSWER_AFTER = 0.3
TALK_FOR = 1.5
#: the agent deletes the room this long after the callee hung up
AGENT_CLEANUP = 0.2

#: how often the scripted agent's heartbeat attribute changes
BEAT_S = 0.2
#: the steps at which a dialer can be killed
STEPS = ("claim", "room", "dial started", "ringing", "final", "answered")


class ProcessKilled(BaseException):
    """Raised in a killed dialer if it ever runs again (it is frozen first)."""


@dataclass
class PhoneCall:
    """One call a phone received."""

    room: str
    number: str
    started: float
    ringing_timeout: float
    ended: float | None = None  #: when the line went down (hang-up, final response, deletion)
    answered_at: float | None = None
    ended_by: str = ""

    @property
    def behaviour(self) -> str:
        return {
            "1": "talks",
            "3": "busy",
            "4": "no_answer",
            "5": "declines",
            "6": "agent_dies",
            "7": "agent_hangs",
        }[self.number[-1]]

    def timeline(self) -> tuple[float | None, float, int | None]:
        """(answer time, natural end, SIP final code if never answered)."""
        if self.behaviour in ("talks", "agent_dies", "agent_hangs"):
            answer = self.started + ANSWER_AFTER
            return answer, answer + TALK_FOR, None
        if self.behaviour == "busy":
            return None, self.started + 0.05, 486
        if self.behaviour == "declines":
            return None, self.started + 0.1, 603
        return None, self.started + self.ringing_timeout, 408


@dataclass
class Room:
    name: str
    created: float
    agent_joined: float | None = None
    agent_left: float | None = None
    deleted: float | None = None
    call: PhoneCall | None = None
    #: deleted while a callee was on the line (by whom)
    cut_off_live_call: bool = False
    #: from the dispatch metadata: the attempt the agent's call record is for
    attempt_id: int | None = None


@dataclass
class Killer:
    """Freezes a dialer's event loop at a step, as kill -9 would stop it."""

    step: str
    attempt_room: str | None = None  #: only for this room (None: the first to reach the step)
    fired: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    killed: bool = False
    loop: asyncio.AbstractEventLoop | None = None


class ScriptedTelephony:
    """The scripted server. Thread-safe: dialers on other loops may share it."""

    url = "http://livekit.scripted.invalid"

    def __init__(self) -> None:
        self.rooms: dict[str, Room] = {}
        self.calls: list[PhoneCall] = []
        self.lock = threading.RLock()
        #: method name -> True while it is refused (LiveKit down, or hung)
        self.down: Callable[[str], bool] = lambda _method: False
        #: while True, ListParticipants fails (the room is still there)
        self.listing_down: Callable[[], bool] = lambda: False
        #: whether an agent takes a dispatch
        self.agent_available: Callable[[], bool] = lambda: True
        self.killers: list[Killer] = []
        self.requests: dict[str, int] = {}
        #: where the scripted agent writes its call record (None: it writes none)
        self.recorder: Callable[[CallSummary], None] | None = None

    # -- faults ----------------------------------------------------------------------------

    def kill_at(self, step: str, room: str | None = None) -> Killer:
        assert step in STEPS, step
        killer = Killer(step, room)
        self.killers.append(killer)
        return killer

    async def _boundary(self, step: str, room: str) -> None:
        with self.lock:
            killer = next(
                (
                    k
                    for k in self.killers
                    if k.step == step
                    and not k.fired.is_set()
                    and (k.attempt_room is None or k.attempt_room == room)
                ),
                None,
            )
            if killer is None:
                return
            killer.fired.set()
            killer.loop = asyncio.get_running_loop()
        # Freeze this loop: nothing of this dialer runs (no finally, no heartbeat) until
        # it is thawed (`released`), or for good when the test ends (`killed`).
        killer.loop.call_soon(killer.released.wait)
        await asyncio.sleep(0)
        if killer.killed:
            raise ProcessKilled(step)

    def _refuse(self, method: str) -> None:
        self.requests[method] = self.requests.get(method, 0) + 1
        if self.down(method):
            raise TelephonyError(
                f"{method} failed: cannot connect to LiveKit at {self.url}",
                retryable=True,
                sent=False,
            )

    # -- the port --------------------------------------------------------------------------

    async def check_access(self) -> int:
        self._refuse("ListRooms")
        with self.lock:
            return sum(1 for r in self.rooms.values() if r.deleted is None)

    async def create_room(
        self,
        name: str,
        *,
        empty_timeout: int,
        departure_timeout: int,
        agent_name: str | None = None,
        agent_metadata: str = "",
    ) -> None:
        await self._boundary("claim", name)
        self._refuse("CreateRoom")
        with self.lock:
            found = self.rooms.setdefault(name, Room(name, time.monotonic()))
            if agent_name:
                found.attempt_id = json.loads(agent_metadata).get("attempt_id")
                if self.agent_available():
                    found.agent_joined = time.monotonic()
        await self._boundary("room", name)

    async def wait_for_agent(self, room: str, timeout: float, *, poll: float = 0.2) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self._refuse("ListParticipants")
            with self.lock:
                if self.rooms[room].agent_joined is not None:
                    return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(min(poll, timeout))

    async def probe_agent(self, room: str, agent_name: str, metadata: str, timeout: float) -> bool:
        self._refuse("CreateRoom")
        return self.agent_available()

    async def participants(self, room: str) -> list[Participant] | None:
        self._refuse("ListParticipants")
        if self.listing_down():
            raise TelephonyError(
                f"ListParticipants failed: LiveKit at {self.url} did not answer within 5 s",
                retryable=True,
            )
        now = time.monotonic()
        with self.lock:
            found = self.rooms.get(room)
            if found is None or self._gone(found, now):
                return None
            people: list[Participant] = []
            if self._agent_in(found, now):
                people.append(
                    Participant(
                        "agent",
                        int(AGENT),
                        {
                            "lk.agent.state": "listening",
                            AGENT_HEARTBEAT_ATTR: self._beat(found, now),
                        },
                    )
                )
            call = found.call
            if call is not None and (call.ended is None or call.ended > now):
                answer, end, _ = call.timeline()
                if end > now:
                    status = "active" if answer is not None and answer <= now else "ringing"
                    people.append(
                        Participant(f"callee-{room}", int(SIP), {"sip.callStatus": status})
                    )
            return people

    async def dial(
        self,
        *,
        room: str,
        trunk_id: str,
        number: str,
        identity: str,
        ringing_timeout: float,
        max_call_duration: float,
        caller_id: str | None = None,
        extension: str | None = None,
        display_name: str | None = None,
    ) -> DialResult:
        await self._boundary("dial started", room)
        try:
            self._refuse("CreateSIPParticipant")
        except TelephonyError as exc:
            return DialResult("not_sent", None, error=str(exc), fault=exc)
        with self.lock:
            call = PhoneCall(room, number, time.monotonic(), ringing_timeout)
            self.calls.append(call)
            self.rooms[room].call = call
        await self._boundary("ringing", room)
        answer, end, code = call.timeline()
        until = answer if answer is not None else end
        while time.monotonic() < until:
            with self.lock:
                if call.ended is not None:  # hung up (room deleted) while ringing
                    return DialResult("final", Outcome.NO_ANSWER, sip_status_code=487)
            await asyncio.sleep(0.02)
        if answer is None:
            with self.lock:
                call.ended, call.ended_by = end, "phone"
            return DialResult(
                "final", outcome_for_sip_status(code), sip_status_code=code, sip_status="scripted"
            )
        call.answered_at = answer
        self._record_when_over(self.rooms[room], call)
        await self._boundary("answered", room)
        return DialResult("answered", None, participant_identity=identity)

    async def delete_room(self, room: str) -> None:
        with self.lock:
            found = self.rooms.get(room)
            final = found is not None and found.call is not None and found.call.ended is not None
        if final:
            await self._boundary("final", room)
        self._refuse("DeleteRoom")
        now = time.monotonic()
        with self.lock:
            found = self.rooms.get(room)
            if found is None or found.deleted is not None:
                return
            call = found.call
            if call is not None and (call.ended is None or call.ended > now):
                _, end, _ = call.timeline()
                if end > now:
                    found.cut_off_live_call = True
                    call.ended, call.ended_by = now, "room deleted"
            found.deleted = now

    # -- the script's own clockwork --------------------------------------------------------

    def _record_when_over(self, room: Room, call: PhoneCall) -> None:
        """The agent's own process: at the conversation's end it writes its call record,
        whatever became of the dialer (a thread, so a frozen dialer does not stop it)."""
        recorder = self.recorder
        if recorder is None or room.attempt_id is None or call.behaviour != "talks":
            return
        answered_at = utcnow()

        def write() -> None:
            summary = CallSummary(
                attempt_id=room.attempt_id or 0,
                room_name=room.name,
                answered_at=answered_at,
                ended_at=answered_at + timedelta(seconds=TALK_FOR),
                end_reason=EndReason.CALLEE_HANGUP.value,
                amd_result=AmdResult.HUMAN.value,
            )
            # a ledger fault on cue loses the record, as it would the real agent's
            with contextlib.suppress(Exception):
                recorder(summary)

        timer = threading.Timer(TALK_FOR, write)
        timer.daemon = True
        timer.start()

    def _agent_in(self, room: Room, now: float) -> bool:
        if room.agent_joined is None or room.agent_joined > now:
            return False
        call = room.call
        if call is not None and call.behaviour == "agent_dies" and call.answered_at is not None:
            return now < call.answered_at + 0.3
        return True

    def _beat(self, room: Room, now: float) -> str:
        """The heartbeat changes every BEAT_S, until a hung agent's job stops beating."""
        call = room.call
        if call is not None and call.behaviour == "agent_hangs" and call.answered_at is not None:
            now = min(now, call.answered_at + 0.3)
        return str(int(now / BEAT_S))

    def _gone(self, room: Room, now: float) -> bool:
        """Deleted, or closed by the agent after the callee hung up."""
        if room.deleted is not None and room.deleted <= now:
            return True
        call = room.call
        if call is None:
            return False
        _, end, _ = call.timeline()
        ended = min(call.ended or end, end)
        if ended + AGENT_CLEANUP <= now and call.behaviour not in ("agent_dies", "agent_hangs"):
            room.deleted = ended + AGENT_CLEANUP
            return True
        return False

    # -- what the tests assert ---------------------------------------------------------------

    def calls_to(self, room: str) -> list[PhoneCall]:
        with self.lock:
            return [c for c in self.calls if c.room == room]

    def release_all(self) -> None:
        """Let frozen loops go, and stop them (test teardown)."""
        for killer in self.killers:
            if killer.released.is_set():
                continue
            killer.killed = True
            if killer.loop is not None:
                killer.loop.call_soon_threadsafe(killer.loop.stop)
            killer.released.set()
