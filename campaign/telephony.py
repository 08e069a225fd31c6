"""The dialer's only door to LiveKit (livekit-api): rooms, agent dispatch, SIP dialing.

Transient API faults (connection errors, timeouts, HTTP 5xx without a SIP status)
are retried here, with one tenacity policy, and nowhere else; the SDK's own
failover is switched off so there is exactly one retry layer. A SIP final
response is an answer, never retried. `CreateSIPParticipant` is retried only when
the connection could not be opened, because a request that reached the server
may already be ringing a phone, and nobody is dialed twice for one attempt.

Every request has a deadline of its own (`Deadlines`): livekit-api sends each
request with `timeout=None`, which overrides the session's timeout, so without one
a frozen server hangs the dialer for as long as it stays frozen. The engine sees
LiveKit only through the `TelephonyPort` protocol; `Telephony.from_settings`
builds the real one.

Each request costs CPU, so a call makes few: the room is created with its agent
dispatch in one `CreateRoom`, the agent's join is looked for when agents lately took
to join, and a signed token is reused per grant for half its life (livekit-api signs
a new one for every request, which costs more than the rest of the request).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

import aiohttp
from google.protobuf.duration_pb2 import Duration
from livekit import api
from livekit.api.room_service import RoomService
from livekit.api.sip_service import SipService
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from campaign.contract import AGENT_HEARTBEAT_ATTR
from campaign.errors import UserError
from campaign.outcomes import Outcome, outcome_for_sip_status

if TYPE_CHECKING:
    from campaign.config import Settings

logger = logging.getLogger(__name__)

T = TypeVar("T")

AGENT = api.ParticipantInfo.Kind.AGENT
SIP = api.ParticipantInfo.Kind.SIP
ACTIVE = api.ParticipantInfo.State.ACTIVE
#: HTTP status of a dial that rang out without a SIP final response
RINGING_TIMEOUT_HTTP_STATUS = 408
#: `sip.callStatus` participant attribute: "active" once the callee answered
CALL_STATUS_ATTR = "sip.callStatus"
#: the agent participant's state attribute: initializing, listening, thinking, speaking
AGENT_STATE_ATTR = "lk.agent.state"
#: HTTP statuses of a refused API key or secret
AUTH_STATUSES = (401, 403)
#: 4xx statuses that are worth another try (as livekit-agents' `APIStatusError` has it)
RETRYABLE_4XX = (408, 429, 499)
#: a Twirp `not_found` (a room that does not exist)
NOT_FOUND_STATUS = 404
#: how long a signed API token is valid; it is reused for half of that
TOKEN_TTL = timedelta(minutes=20)
#: signed tokens kept (a room-scoped grant makes one per room; the oldest goes first)
TOKENS_KEPT = 256


class TelephonyError(UserError):
    """LiveKit could not be reached or refused a request, after retries.

    `status` is LiveKit's HTTP status, or None when no answer came (refused
    connection, timeout); `retryable` says whether the same request may succeed
    later (the server is down or hung, or answered 5xx/408/429); `sent` is False
    only when the request certainly never reached the server.
    """

    exit_code = 3

    def __init__(
        self, message: str, *, status: int | None = None, retryable: bool = False, sent: bool = True
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.sent = sent


def mask_number(e164: str) -> str:
    """`+14155552671` -> `+141***71`, for logs: at least half of any number's digits hidden."""
    digits = [char for char in e164 if char.isdigit()]
    shown = min(8, len(digits) // 2)
    head, tail = shown - shown // 2, shown // 2
    prefix = "+" if e164.startswith("+") else ""
    return f"{prefix}{''.join(digits[:head])}***{''.join(digits[len(digits) - tail :])}"


def refused_credentials(exc: TelephonyError) -> bool:
    """LiveKit answered, but refused the API key or secret."""
    return exc.status in AUTH_STATUSES


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the network or the server hiccuped, and no phone gave an answer."""
    if isinstance(exc, api.SipCallError):
        return False
    if isinstance(exc, api.TwirpError):
        return exc.status >= 500 and "sip_status_code" not in exc.metadata
    return isinstance(exc, aiohttp.ClientError | TimeoutError | ConnectionError)


def _not_sent(exc: BaseException) -> bool:
    """The request never reached the server (safe to repeat even a dial)."""
    return isinstance(exc, aiohttp.ClientConnectorError | ConnectionRefusedError)


@dataclass(frozen=True)
class RetrySettings:
    """The one tenacity policy for LiveKit API calls."""

    attempts: int = 3
    initial_wait: float = 0.25
    max_wait: float = 2.0


@dataclass(frozen=True)
class Deadlines:
    """How long one request may take, per kind, before it counts as a timeout.

    A dial waits until the callee answers, so its deadline is the ringing timeout
    plus `dial_margin`; everything else answers at once or not at all.
    """

    request: float = 5.0
    dial_margin: float = 10.0


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    logger.warning(
        "LiveKit API call failed (%s: %s); retry %d",
        type(exc).__name__,
        exc,
        state.attempt_number,
    )


#: how a dial ended: answered; a final answer (busy, declined, rang out...); never sent
#: (nobody rang); or unknown (sent, but no answer came back: it may be ringing)
DialStatus = Literal["answered", "final", "not_sent", "unknown"]


@dataclass(frozen=True)
class DialResult:
    """How `CreateSIPParticipant` ended."""

    status: DialStatus
    outcome: Outcome | None  #: only for `final`: the outcome from the SIP table
    sip_status_code: int | None = None
    sip_status: str | None = None
    error: str | None = None
    participant_identity: str = ""
    #: for `not_sent` and `unknown`: the error LiveKit gave
    fault: TelephonyError | None = None

    @property
    def answered(self) -> bool:
        return self.status == "answered"


@dataclass(frozen=True)
class Participant:
    identity: str
    kind: int
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def is_agent(self) -> bool:
        return self.kind == AGENT

    @property
    def is_callee(self) -> bool:
        return self.kind == SIP

    @property
    def answered(self) -> bool:
        return self.call_status == "active"

    @property
    def call_status(self) -> str:
        """A SIP participant's call status (dialing, ringing, active, hangup), or ""."""
        return self.attributes.get(CALL_STATUS_ATTR, "")

    @property
    def agent_state(self) -> str:
        """An agent's state (listening, thinking, speaking, ...), or ""."""
        return self.attributes.get(AGENT_STATE_ATTR, "")

    @property
    def heartbeat(self) -> str:
        """The agent's heartbeat (it changes every few seconds while its job runs), or ""."""
        return self.attributes.get(AGENT_HEARTBEAT_ATTR, "")


@dataclass(frozen=True)
class TrunkInfo:
    """An outbound SIP trunk as LiveKit stores it (credentials left out)."""

    trunk_id: str
    name: str
    address: str
    transport: str
    numbers: tuple[str, ...]


class TelephonyPort(Protocol):
    """What the engine needs from LiveKit; `Telephony` is the real one."""

    @property
    def url(self) -> str: ...

    async def create_room(
        self,
        name: str,
        *,
        empty_timeout: int,
        departure_timeout: int,
        agent_name: str | None = None,
        agent_metadata: str = "",
    ) -> None: ...

    async def participants(self, room: str) -> list[Participant] | None: ...

    async def wait_for_agent(self, room: str, timeout: float, *, poll: float = 0.2) -> bool: ...

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
    ) -> DialResult: ...

    async def delete_room(self, room: str) -> None: ...

    async def check_access(self) -> int: ...

    async def probe_agent(
        self, room: str, agent_name: str, metadata: str, timeout: float
    ) -> bool: ...


class _Tokens:
    """Signed API tokens, one per grant, each reused for half its lifetime.

    livekit-api signs a fresh JWT for every request, which costs more CPU than the rest
    of the request. A dialer uses few grants: create rooms, list rooms, place SIP calls,
    and one per room it looks into.
    """

    def __init__(self, api_key: str, api_secret: str, ttl: timedelta = TOKEN_TTL) -> None:
        self._key = api_key
        self._secret = api_secret
        self._ttl = ttl
        #: grants -> (the authorization header, monotonic time to sign a new one)
        self._signed: dict[tuple[str, str], tuple[dict[str, str], float]] = {}

    def header(
        self, grants: api.VideoGrants | None, sip: api.SIPGrants | None = None
    ) -> dict[str, str]:
        key = (repr(grants), repr(sip))
        now = time.monotonic()
        found = self._signed.get(key)
        if found is None or now >= found[1]:
            token = api.AccessToken(self._key, self._secret).with_ttl(self._ttl)
            if grants is not None:
                token.with_grants(grants)
            if sip is not None:
                token.with_sip_grants(sip)
            header = {"authorization": f"Bearer {token.to_jwt()}"}
            found = (header, now + self._ttl.total_seconds() / 2)
            self._signed.pop(key, None)
            if len(self._signed) >= TOKENS_KEPT:
                del self._signed[next(iter(self._signed))]
            self._signed[key] = found
        return found[0]


class _TokenSigning:
    """Makes a livekit-api service sign with `_Tokens` (put before the service's class)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, tokens: _Tokens) -> None:
        super().__init__(session, url, "", "", failover=False)  # type: ignore[call-arg]
        self._tokens = tokens

    def _auth_header(
        self, grants: api.VideoGrants | None, sip: api.SIPGrants | None = None
    ) -> dict[str, str]:
        return self._tokens.header(grants, sip)


class _RoomService(_TokenSigning, RoomService):
    """livekit-api's room service, signing with `_Tokens`."""


class _SipService(_TokenSigning, SipService):
    """livekit-api's SIP service, signing with `_Tokens`."""


@dataclass
class _JoinTimes:
    """How long agents lately took to join a room after it was created (server clock).

    The first look for an agent comes at about that time, so most joins are seen in one
    look, whether the workers take 0.2 s today or 2 s.
    """

    typical: float | None = None  #: seconds, a moving average
    weight: float = 0.25
    #: room -> its creation time on the server (ms), until its agent is seen
    created_ms: dict[str, int] = field(default_factory=dict)

    def created(self, room: str, at_ms: int) -> None:
        if len(self.created_ms) >= TOKENS_KEPT:
            del self.created_ms[next(iter(self.created_ms))]
        self.created_ms[room] = at_ms

    def joined(self, room: str, at_ms: int) -> None:
        created = self.created_ms.pop(room, 0)
        if not created or at_ms < created:
            return
        took = (at_ms - created) / 1000
        last = self.typical
        self.typical = took if last is None else last + self.weight * (took - last)


class Telephony:
    """Rooms, dispatch and SIP calls on one LiveKit server. Use as an async context manager."""

    def __init__(
        self,
        url: str,
        api_key: str,
        api_secret: str,
        *,
        retry: RetrySettings | None = None,
        request_timeout: float | None = None,
    ) -> None:
        self._url = url
        self._key = api_key
        self._secret = api_secret
        self._retry = retry or RetrySettings()
        self._deadlines = (
            Deadlines(request=request_timeout) if request_timeout is not None else Deadlines()
        )
        self._tokens = _Tokens(api_key, api_secret)
        self._joins = _JoinTimes()
        self._session: aiohttp.ClientSession | None = None
        self._room: _RoomService | None = None
        self._sip: _SipService | None = None
        #: requests sent, by name, retries included (benchmarks/dialer.py prints them)
        self.requests: Counter[str] = Counter()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        retry: RetrySettings | None = None,
        request_timeout: float | None = None,
    ) -> Telephony:
        """The one way the dialer, `dialer call` and `dialer doctor` build it."""
        return cls(
            settings.livekit_http_url,
            settings.livekit_api_key,
            settings.livekit_api_secret.get_secret_value(),
            retry=retry,
            request_timeout=request_timeout,
        )

    @property
    def url(self) -> str:
        return self._url

    async def __aenter__(self) -> Telephony:
        # One session for every request; the per-request deadline is ours (see `_call`),
        # this only bounds the rest.
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._deadlines.request * 4)
        )
        self._room = _RoomService(self._session, self._url, self._tokens)
        self._sip = _SipService(self._session, self._url, self._tokens)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._session is not None:
            await self._session.close()
        self._session = self._room = self._sip = None

    @property
    def rooms(self) -> _RoomService:
        if self._room is None:
            raise RuntimeError("Telephony is used outside `async with`")
        return self._room

    @property
    def sip(self) -> _SipService:
        if self._sip is None:
            raise RuntimeError("Telephony is used outside `async with`")
        return self._sip

    async def _call(
        self,
        what: str,
        fn: Callable[[], Awaitable[T]],
        retryable: Callable[[BaseException], bool] = is_transient,
        *,
        deadline: float | None = None,
    ) -> T:
        """`fn()` with the one retry policy, each try bounded by `deadline` seconds."""
        limit = deadline if deadline is not None else self._deadlines.request
        retrying = AsyncRetrying(
            retry=retry_if_exception(retryable),
            stop=stop_after_attempt(self._retry.attempts),
            wait=wait_exponential(multiplier=self._retry.initial_wait, max=self._retry.max_wait),
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    self.requests[what] += 1
                    async with asyncio.timeout(limit):
                        return await fn()
        except api.SipCallError:
            raise
        except (TimeoutError, api.TwirpError, aiohttp.ClientError, ConnectionError) as exc:
            raise self._error(what, exc, limit) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _error(self, what: str, exc: BaseException, limit: float) -> TelephonyError:
        status = exc.status if isinstance(exc, api.TwirpError) else None
        retryable = status is None or status >= 500 or status in RETRYABLE_4XX
        return TelephonyError(
            f"{what} failed: {self._describe(exc, limit)}",
            status=status,
            retryable=retryable,
            sent=not _not_sent(exc),
        )

    def _describe(self, exc: BaseException, limit: float) -> str:
        """A fault in words a user can act on (never the key or secret)."""
        if isinstance(exc, api.TwirpError) and exc.status in AUTH_STATUSES:
            return (
                f"LiveKit at {self._url} rejected the API key or secret (HTTP {exc.status});"
                " check LIVEKIT_API_KEY and LIVEKIT_API_SECRET"
            )
        if isinstance(exc, aiohttp.ClientConnectorError | ConnectionError):
            return f"cannot connect to LiveKit at {self._url} ({exc.strerror or exc})"
        if isinstance(exc, TimeoutError):
            return f"LiveKit at {self._url} did not answer within {limit:g} s"
        return str(exc)

    async def create_room(
        self,
        name: str,
        *,
        empty_timeout: int,
        departure_timeout: int,
        agent_name: str | None = None,
        agent_metadata: str = "",
    ) -> None:
        """Create the call's room; LiveKit closes it when it stays empty or everyone left.

        With `agent_name`, the room is created with that agent's dispatch (metadata
        `agent_metadata`): LiveKit dispatches it as the room comes to be, so a retried
        request that had reached the server dispatches nobody twice.
        """
        request = api.CreateRoomRequest(
            name=name, empty_timeout=empty_timeout, departure_timeout=departure_timeout
        )
        if agent_name:
            request.agents.append(
                api.RoomAgentDispatch(agent_name=agent_name, metadata=agent_metadata)
            )
        room = await self._call("CreateRoom", lambda: self.rooms.create_room(request))
        if agent_name:
            self._joins.created(name, room.creation_time_ms)

    async def participants(self, room: str) -> list[Participant] | None:
        """Who is in the room; None when the room does not exist."""
        response = await self._call(
            "ListParticipants",
            lambda: self.rooms.list_participants(api.ListParticipantsRequest(room=room)),
        )
        # A missing room lists no participants, so only an empty list needs a second look.
        if not response.participants and not await self.room_exists(room):
            return None
        return [
            Participant(p.identity, int(p.kind), dict(p.attributes)) for p in response.participants
        ]

    async def room_exists(self, room: str) -> bool:
        response = await self._call(
            "ListRooms", lambda: self.rooms.list_rooms(api.ListRoomsRequest(names=[room]))
        )
        return any(r.name == room for r in response.rooms)

    async def wait_for_agent(self, room: str, timeout: float, *, poll: float = 0.2) -> bool:
        """Look until an agent participant is in the room and connected (its media path is
        up, state ACTIVE); False after `timeout` seconds.

        An agent still joining is not enough: one whose room is deleted before its
        connection completes reconnects seconds later, and LiveKit makes the room again
        for it, which then stays until its empty timeout. Nor can it hear a callee yet.

        The first look comes when agents lately took to join (`_JoinTimes`), or after
        `poll` while none was seen yet; the pause between the next looks starts at half
        that time (at least `poll`) and grows. So a join is mostly seen in one look, and
        a slow one in a few, however slow the workers are today. An agent seen joining is
        looked at again after `poll`, since its connection is a moment away.
        """
        deadline = time.monotonic() + timeout
        request = api.ListParticipantsRequest(room=room)
        typical = self._joins.typical or poll
        wait, pause, longest = typical * 1.2, max(poll, typical / 2), max(poll * 4, typical * 2)
        while True:
            await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            listing = await self._call(
                "ListParticipants", lambda: self.rooms.list_participants(request)
            )
            agent = next((p for p in listing.participants if p.kind == AGENT), None)
            if agent is not None:
                self._joins.joined(room, agent.joined_at_ms)
                if agent.state == ACTIVE:
                    return True
            if time.monotonic() >= deadline:
                return False
            if agent is not None:
                wait = poll
            else:
                wait, pause = pause, min(pause * 1.5, longest)

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
        """Place the call and wait until it is answered or fails.

        SIP failures come back as a `DialResult` with the outcome from the one SIP table.
        """
        request = api.CreateSIPParticipantRequest(
            sip_trunk_id=trunk_id,
            sip_call_to=number,
            room_name=room,
            participant_identity=identity,
            participant_name=display_name or "callee",
            wait_until_answered=True,
            ringing_timeout=Duration(seconds=int(ringing_timeout)),
            max_call_duration=Duration(seconds=int(max_call_duration)),
            krisp_enabled=True,
        )
        if caller_id:
            request.sip_number = caller_id
        if extension:
            # `w` waits half a second per character before the digits, after the answer.
            request.dtmf = "ww" + extension
        try:
            await self._call(
                "CreateSIPParticipant",
                lambda: self.sip.create_sip_participant(request),
                retryable=_not_sent,
                deadline=ringing_timeout + self._deadlines.dial_margin,
            )
        except api.SipCallError as exc:
            code = exc.sip_status_code
            return DialResult(
                "final",
                outcome_for_sip_status(code),
                sip_status_code=code,
                sip_status=exc.sip_status,
                error=None if code else str(exc),
                participant_identity=identity,
            )
        except TelephonyError as exc:
            return _dial_fault(exc, identity)
        return DialResult("answered", None, participant_identity=identity)

    async def check_access(self) -> int:
        """An authenticated no-op (list rooms): proves the URL, key and secret; returns
        how many rooms are open."""
        response = await self._call(
            "ListRooms", lambda: self.rooms.list_rooms(api.ListRoomsRequest())
        )
        return len(response.rooms)

    async def outbound_trunks(self) -> list[TrunkInfo]:
        """Every outbound SIP trunk on the server."""
        response = await self._call(
            "ListSIPOutboundTrunk",
            lambda: self.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest()),
        )
        return [
            TrunkInfo(
                trunk_id=t.sip_trunk_id,
                name=t.name,
                address=t.address,
                transport=api.SIPTransport.Name(t.transport).removeprefix("SIP_TRANSPORT_").lower(),
                numbers=tuple(t.numbers),
            )
            for t in response.items
        ]

    async def probe_agent(self, room: str, agent_name: str, metadata: str, timeout: float) -> bool:
        """Dispatch the agent into a throwaway room and wait, bounded, until it joins.

        The room is deleted afterwards, whatever happened. True when the agent joined.
        """
        try:
            await self.create_room(
                room,
                empty_timeout=int(timeout) + 10,
                departure_timeout=1,
                agent_name=agent_name,
                agent_metadata=metadata,
            )
            return await self.wait_for_agent(room, timeout)
        finally:
            try:
                await self.delete_room(room)
            except TelephonyError as exc:
                logger.warning("cannot delete probe room %s: %s", room, exc)

    async def delete_room(self, room: str) -> None:
        """Hang up everyone in the room and close it (a missing room is fine)."""
        try:
            await self._call(
                "DeleteRoom", lambda: self.rooms.delete_room(api.DeleteRoomRequest(room=room))
            )
        except TelephonyError as exc:
            if exc.status != NOT_FOUND_STATUS:
                raise


def _dial_fault(exc: TelephonyError, identity: str) -> DialResult:
    """A dial that got no SIP answer: rang out, never sent, refused, or unknown."""
    if exc.status == RINGING_TIMEOUT_HTTP_STATUS:
        # livekit-sip ends a call that rang out with no SIP response as HTTP 408
        # ("sip request timed out"): the ringing timeout, a SIP 408 in effect.
        return DialResult(
            "final",
            outcome_for_sip_status(RINGING_TIMEOUT_HTTP_STATUS),
            sip_status="ringing timeout",
            participant_identity=identity,
        )
    if not exc.sent:
        return DialResult(
            "not_sent", None, error=str(exc), participant_identity=identity, fault=exc
        )
    if exc.retryable:
        # The request reached LiveKit and no answer came back: the phone may be ringing.
        return DialResult("unknown", None, error=str(exc), participant_identity=identity, fault=exc)
    # LiveKit refused the request itself (4xx): no phone rang.
    return DialResult(
        "final", Outcome.FAILED, error=str(exc), participant_identity=identity, fault=exc
    )
