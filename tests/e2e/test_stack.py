"""The devstack is real: LiveKit dials the sipp phones through livekit-sip and one trunk.

Only livekit-api and the livekit rtc SDK are used here (no project code), so these
tests prove the stack itself: each phone number's SIP outcome as LiveKit reports it,
the phone's own log of the call, and real audio from the phone that talks.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from google.protobuf.duration_pb2 import Duration
from livekit import api, rtc

from devstack import phones, stack
from devstack.phones import Behaviour, Event, PhoneEvent

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

RINGING_TIMEOUT = 4  #: seconds; the no-answer phone rings for 60
PHONE_IDENTITY = "phone"


@asynccontextmanager
async def livekit(env: dict[str, str]) -> AsyncIterator[api.LiveKitAPI]:
    async with api.LiveKitAPI(
        env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"]
    ) as lk:
        yield lk


@asynccontextmanager
async def room(lk: api.LiveKitAPI, label: str) -> AsyncIterator[str]:
    """A fresh room, deleted afterwards (which hangs up any call still in it)."""
    name = f"devstack-test-{label}-{uuid.uuid4().hex[:8]}"
    await lk.room.create_room(api.CreateRoomRequest(name=name, empty_timeout=60))
    try:
        yield name
    finally:
        await lk.room.delete_room(api.DeleteRoomRequest(room=name))


async def dial(
    lk: api.LiveKitAPI, env: dict[str, str], room_name: str, behaviour: Behaviour
) -> api.SIPParticipantInfo:
    return await lk.sip.create_sip_participant(
        api.CreateSIPParticipantRequest(
            sip_trunk_id=env["SIP_OUTBOUND_TRUNK_ID"],
            sip_call_to=phones.NUMBERS[behaviour],
            room_name=room_name,
            participant_identity=PHONE_IDENTITY,
            wait_until_answered=True,
            ringing_timeout=Duration(seconds=RINGING_TIMEOUT),
            max_call_duration=Duration(seconds=120),
        )
    )


async def phone_event(
    match: Callable[[PhoneEvent], bool], since: float, timeout: float = 10.0
) -> PhoneEvent:
    """The first phone log event at or after `since` that matches; bounded wait."""
    deadline = time.monotonic() + timeout
    while True:
        for event in phones.read_log(since=since):
            if match(event):
                return event
        if time.monotonic() > deadline:
            seen = [f"{e.dialed} {e.event} {e.detail}" for e in phones.read_log(since=since)]
            raise AssertionError(f"no matching phone event within {timeout} s; saw {seen}")
        await asyncio.sleep(0.1)


async def participants(lk: api.LiveKitAPI, room_name: str) -> list[str]:
    listing = await lk.room.list_participants(api.ListParticipantsRequest(room=room_name))
    return [p.identity for p in listing.participants]


def test_up_reuses_the_running_stack(devstack_env: dict[str, str]) -> None:
    assert stack.up() == []
    assert all(state.startswith("up") for state in stack.status().values())
    assert devstack_env["SIP_OUTBOUND_TRUNK_ID"].startswith("ST_")


@pytest.mark.parametrize(
    ("behaviour", "code"),
    [(Behaviour.BUSY, 486), (Behaviour.DECLINES, 603), (Behaviour.UNKNOWN_NUMBER, 404)],
)
async def test_rejecting_phone(
    devstack_env: dict[str, str], behaviour: Behaviour, code: int
) -> None:
    since = time.time()
    async with livekit(devstack_env) as lk, room(lk, behaviour.value) as name:
        with pytest.raises(api.SipCallError) as failure:
            await dial(lk, devstack_env, name, behaviour)
    assert failure.value.sip_status_code == code
    number = phones.NUMBERS[behaviour]
    rejected = await phone_event(
        lambda e: e.number == number and e.event is Event.REJECTED, since=since
    )
    assert rejected.behaviour is behaviour
    assert rejected.detail == str(code)


async def test_no_answer_rings_until_the_ringing_timeout(devstack_env: dict[str, str]) -> None:
    since = time.time()
    async with livekit(devstack_env) as lk, room(lk, "no-answer") as name:
        started = time.monotonic()
        with pytest.raises(api.TwirpError) as failure:
            await dial(lk, devstack_env, name, Behaviour.NO_ANSWER)
        elapsed = time.monotonic() - started
    error = failure.value
    # livekit-sip v1.8.0 reports its own ringing timeout as a cancelled request
    # ("sip request timed out"), not as a SIP status; a newer one may send 408/487.
    sip_code = error.sip_status_code if isinstance(error, api.SipCallError) else None
    assert sip_code in {408, 480, 487} or (
        error.code == "canceled" and "timed out" in error.message
    ), error
    assert RINGING_TIMEOUT - 0.5 <= elapsed < RINGING_TIMEOUT + 10
    number = phones.NUMBERS[Behaviour.NO_ANSWER]
    # LiveKit cancels the INVITE when it gives up; the phone saw it ringing until then.
    received = await phone_event(
        lambda e: e.number == number and e.event is Event.RECEIVED, since=since
    )
    cancelled = await phone_event(
        lambda e: e.call_id == received.call_id and e.event is Event.CANCELLED, since=since
    )
    assert cancelled.timestamp - received.timestamp >= RINGING_TIMEOUT - 0.5


async def test_talking_phone_sends_speech_into_the_room(devstack_env: dict[str, str]) -> None:
    since = time.time()
    async with livekit(devstack_env) as lk, room(lk, "talks") as name:
        listener = rtc.Room()
        subscribed: asyncio.Future[rtc.RemoteAudioTrack] = (
            asyncio.get_running_loop().create_future()
        )

        @listener.on("track_subscribed")
        def _on_track(
            track: rtc.Track, _pub: rtc.RemoteTrackPublication, who: rtc.RemoteParticipant
        ) -> None:
            if (
                who.identity == PHONE_IDENTITY
                and isinstance(track, rtc.RemoteAudioTrack)
                and not subscribed.done()
            ):
                subscribed.set_result(track)

        token = (
            api.AccessToken(devstack_env["LIVEKIT_API_KEY"], devstack_env["LIVEKIT_API_SECRET"])
            .with_identity("listener")
            .with_grants(api.VideoGrants(room_join=True, room=name))
            .to_jwt()
        )
        await listener.connect(devstack_env["LIVEKIT_URL"], token)
        try:
            info = await dial(lk, devstack_env, name, Behaviour.TALKS)
            answered = await phone_event(
                lambda e: e.lk_call_id == info.sip_call_id and e.event is Event.ANSWERED,
                since=since,
            )
            assert answered.behaviour is Behaviour.TALKS
            track = await asyncio.wait_for(subscribed, timeout=10)
            speech = await asyncio.wait_for(loud_audio_ms(track), timeout=15)
        finally:
            await listener.disconnect()
        # Deleting the room (leaving `room`) hangs up: the phone must see LiveKit's BYE.
    bye = await phone_event(
        lambda e: e.lk_call_id == info.sip_call_id and e.event is Event.BYE_RECEIVED,
        since=since,
    )
    assert bye.behaviour is Behaviour.TALKS
    assert speech >= 300


async def loud_audio_ms(track: rtc.RemoteAudioTrack, needed_ms: int = 300) -> int:
    """Read the track until `needed_ms` of clearly non-silent audio has arrived."""
    loud_ms = 0
    stream = rtc.AudioStream(track, sample_rate=16000, num_channels=1)
    try:
        async for event in stream:
            frame = event.frame
            samples = frame.data
            rms = math.sqrt(sum(s * s for s in samples) / max(len(samples), 1))
            if rms > 300:  # espeak speech is in the thousands; digital silence is 0
                loud_ms += 1000 * frame.samples_per_channel // frame.sample_rate
                if loud_ms >= needed_ms:
                    break
    finally:
        await stream.aclose()
    return loud_ms


async def test_phone_that_hangs_up_sends_bye(devstack_env: dict[str, str]) -> None:
    since = time.time()
    async with livekit(devstack_env) as lk, room(lk, "hangs-up") as name:
        info = await dial(lk, devstack_env, name, Behaviour.HANGS_UP)
        assert PHONE_IDENTITY in await participants(lk, name)
        bye = await phone_event(
            lambda e: e.lk_call_id == info.sip_call_id and e.event is Event.BYE_SENT,
            since=since,
        )
        answered = await phone_event(
            lambda e: e.lk_call_id == info.sip_call_id and e.event is Event.ANSWERED,
            since=since,
        )
        assert 3 <= bye.timestamp - answered.timestamp < 8
        # livekit-sip takes the phone's BYE and removes the SIP participant.
        deadline = time.monotonic() + 10
        while PHONE_IDENTITY in await participants(lk, name):
            assert time.monotonic() < deadline, "the SIP participant stayed after the BYE"
            await asyncio.sleep(0.2)


async def test_answering_machine_answers(devstack_env: dict[str, str]) -> None:
    since = time.time()
    async with livekit(devstack_env) as lk, room(lk, "machine") as name:
        info = await dial(lk, devstack_env, name, Behaviour.ANSWERING_MACHINE)
        assert info.participant_identity == PHONE_IDENTITY
        answered = await phone_event(
            lambda e: e.lk_call_id == info.sip_call_id and e.event is Event.ANSWERED,
            since=since,
        )
        assert answered.behaviour is Behaviour.ANSWERING_MACHINE
    bye = await phone_event(
        lambda e: e.lk_call_id == info.sip_call_id and e.event is Event.BYE_RECEIVED,
        since=since,
    )
    assert bye.behaviour is Behaviour.ANSWERING_MACHINE


def test_every_number_is_a_valid_dialable_number() -> None:
    import phonenumbers
    from phonenumbers import timezone

    for behaviour, number in phones.NUMBERS.items():
        parsed = phonenumbers.parse(number)
        assert phonenumbers.is_valid_number(parsed), number
        assert timezone.time_zones_for_number(parsed) == ("America/New_York",)
        assert phones.behaviour_for(number) is behaviour
