"""The dialer's only door to LiveKit (livekit-api): rooms, agent dispatch, SIP dialing.

Transient API faults (connection errors, timeouts, HTTP 5xx without a SIP status)
are retried here, with one tenacity policy, and nowhere else; the SDK's own
failover is switched off so there is exactly one retry layer. A SIP final
response is an answer, never retried. `CreateSIPParticipant` is retried only when
the connection could not be opened, because a request that reached the server
may already be ringing a phone, and nobody is dialed twice for one attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import aiohttp
from google.protobuf.duration_pb2 import Duration
from livekit import api
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from campaign.outcomes import Outcome, outcome_for_sip_status

logger = logging.getLogger(__name__)

T = TypeVar("T")

AGENT = api.ParticipantInfo.Kind.AGENT
SIP = api.ParticipantInfo.Kind.SIP
#: HTTP status of a dial that rang out without a SIP final response
RINGING_TIMEOUT_HTTP_STATUS = 408
#: `sip.callStatus` participant attribute: "active" once the callee answered
CALL_STATUS_ATTR = "sip.callStatus"
#: the agent participant's state attribute: initializing, listening, thinking, speaking
AGENT_STATE_ATTR = "lk.agent.state"
#: HTTP statuses of a refused API key or secret
AUTH_STATUSES = (401, 403)


class TelephonyError(RuntimeError):
    """LiveKit could not be reached or refused a request, after retries."""


def mask_number(e164: str) -> str:
    """`+14155552671` -> `+141***71`, for logs: at least half of any number's digits hidden."""
    digits = [char for char in e164 if char.isdigit()]
    shown = min(8, len(digits) // 2)
    head, tail = shown - shown // 2, shown // 2
    prefix = "+" if e164.startswith("+") else ""
    return f"{prefix}{''.join(digits[:head])}***{''.join(digits[len(digits) - tail :])}"


def refused_credentials(exc: TelephonyError) -> bool:
    """LiveKit answered, but refused the API key or secret."""
    cause = exc.__cause__
    return isinstance(cause, api.TwirpError) and cause.status in AUTH_STATUSES


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

    attempts: int = 4
    initial_wait: float = 0.25
    max_wait: float = 4.0


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    logger.warning(
        "LiveKit API call failed (%s: %s); retry %d",
        type(exc).__name__,
        exc,
        state.attempt_number,
    )


@dataclass(frozen=True)
class DialResult:
    """How `CreateSIPParticipant` ended."""

    answered: bool
    outcome: Outcome | None  #: None when answered (the call record decides)
    sip_status_code: int | None = None
    sip_status: str | None = None
    error: str | None = None
    participant_identity: str = ""


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


@dataclass(frozen=True)
class TrunkInfo:
    """An outbound SIP trunk as LiveKit stores it (credentials left out)."""

    trunk_id: str
    name: str
    address: str
    transport: str
    numbers: tuple[str, ...]


class Telephony:
    """Rooms, dispatch and SIP calls on one LiveKit server. Use as an async context manager."""

    def __init__(
        self,
        url: str,
        api_key: str,
        api_secret: str,
        *,
        retry: RetrySettings | None = None,
        request_timeout: float = 10.0,
    ) -> None:
        self._url = url
        self._key = api_key
        self._secret = api_secret
        self._retry = retry or RetrySettings()
        self._timeout = request_timeout
        self._api: api.LiveKitAPI | None = None

    async def __aenter__(self) -> Telephony:
        self._api = api.LiveKitAPI(
            self._url,
            self._key,
            self._secret,
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            failover=False,
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None

    @property
    def lk(self) -> api.LiveKitAPI:
        if self._api is None:
            raise RuntimeError("Telephony is used outside `async with`")
        return self._api

    async def _call(
        self,
        what: str,
        fn: Callable[[], Awaitable[T]],
        retryable: Callable[[BaseException], bool] = is_transient,
    ) -> T:
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
                    return await fn()
        except api.SipCallError:
            raise
        except (TimeoutError, api.TwirpError, aiohttp.ClientError, ConnectionError) as exc:
            raise TelephonyError(f"{what} failed: {self._describe(exc)}") from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _describe(self, exc: BaseException) -> str:
        """A fault in words a user can act on (never the key or secret)."""
        if isinstance(exc, api.TwirpError) and exc.status in AUTH_STATUSES:
            return (
                f"LiveKit at {self._url} rejected the API key or secret (HTTP {exc.status});"
                " check LIVEKIT_API_KEY and LIVEKIT_API_SECRET"
            )
        if isinstance(exc, aiohttp.ClientConnectorError | ConnectionError):
            return f"cannot connect to LiveKit at {self._url} ({exc.strerror or exc})"
        if isinstance(exc, TimeoutError):
            return f"LiveKit at {self._url} did not answer within {self._timeout:.0f} s"
        return str(exc)

    async def create_room(self, name: str, *, empty_timeout: int, departure_timeout: int) -> None:
        """Create the call's room; LiveKit closes it when it stays empty or everyone left."""
        request = api.CreateRoomRequest(
            name=name, empty_timeout=empty_timeout, departure_timeout=departure_timeout
        )
        await self._call("CreateRoom", lambda: self.lk.room.create_room(request))

    async def dispatch_agent(self, room: str, agent_name: str, metadata: str) -> str:
        """Explicitly dispatch the named agent into the room; returns the dispatch id."""
        request = api.CreateAgentDispatchRequest(
            agent_name=agent_name, room=room, metadata=metadata
        )
        dispatch = await self._call(
            "CreateDispatch", lambda: self.lk.agent_dispatch.create_dispatch(request)
        )
        return dispatch.id

    async def participants(self, room: str) -> list[Participant] | None:
        """Who is in the room; None when the room does not exist."""
        response = await self._call(
            "ListParticipants",
            lambda: self.lk.room.list_participants(api.ListParticipantsRequest(room=room)),
        )
        # A missing room lists no participants, so only an empty list needs a second look.
        if not response.participants and not await self.room_exists(room):
            return None
        return [
            Participant(p.identity, int(p.kind), dict(p.attributes)) for p in response.participants
        ]

    async def room_exists(self, room: str) -> bool:
        response = await self._call(
            "ListRooms", lambda: self.lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
        )
        return any(r.name == room for r in response.rooms)

    async def wait_for_agent(self, room: str, timeout: float, *, poll: float = 0.2) -> bool:
        """Poll until an agent participant is in the room; False after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        request = api.ListParticipantsRequest(room=room)
        while True:
            listing = await self._call(
                "ListParticipants", lambda: self.lk.room.list_participants(request)
            )
            if any(p.kind == AGENT for p in listing.participants):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))

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
                lambda: self.lk.sip.create_sip_participant(request),
                retryable=_not_sent,
            )
        except api.SipCallError as exc:
            code = exc.sip_status_code
            return DialResult(
                answered=False,
                outcome=outcome_for_sip_status(code),
                sip_status_code=code,
                sip_status=exc.sip_status,
                error=None if code else str(exc),
                participant_identity=identity,
            )
        except TelephonyError as exc:
            cause = exc.__cause__
            if isinstance(cause, api.TwirpError) and cause.status == RINGING_TIMEOUT_HTTP_STATUS:
                # livekit-sip ends a call that rang out with no SIP response as HTTP 408
                # ("sip request timed out"): the ringing timeout, a SIP 408 in effect.
                return DialResult(
                    answered=False,
                    outcome=outcome_for_sip_status(RINGING_TIMEOUT_HTTP_STATUS),
                    sip_status="ringing timeout",
                    participant_identity=identity,
                )
            return DialResult(
                answered=False,
                outcome=Outcome.FAILED,
                error=str(exc),
                participant_identity=identity,
            )
        return DialResult(answered=True, outcome=None, participant_identity=identity)

    async def check_access(self) -> int:
        """An authenticated no-op (list rooms): proves the URL, key and secret; returns
        how many rooms are open."""
        response = await self._call(
            "ListRooms", lambda: self.lk.room.list_rooms(api.ListRoomsRequest())
        )
        return len(response.rooms)

    async def outbound_trunks(self) -> list[TrunkInfo]:
        """Every outbound SIP trunk on the server."""
        response = await self._call(
            "ListSIPOutboundTrunk",
            lambda: self.lk.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest()),
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
            await self.create_room(room, empty_timeout=int(timeout) + 10, departure_timeout=1)
            await self.dispatch_agent(room, agent_name, metadata)
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
                "DeleteRoom", lambda: self.lk.room.delete_room(api.DeleteRoomRequest(room=room))
            )
        except TelephonyError as exc:
            if not _is_not_found(exc.__cause__):
                raise


def _is_not_found(exc: BaseException | None) -> bool:
    return isinstance(exc, api.TwirpError) and exc.code == api.TwirpErrorCode.NOT_FOUND
