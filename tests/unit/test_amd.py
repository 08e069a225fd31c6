"""Answering-machine detection: the classifier on transcripts, the beep detector on audio."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

import numpy as np
import pytest
from livekit.agents.voice.events import UserInputTranscribedEvent, UserStateChangedEvent

from agent.amd import (
    AUDIO_GONE_S,
    NO_SPEECH_S,
    VAD_SILENCE_S,
    AnsweringMachineDetector,
    BeepDetector,
    SpeechMeter,
    Verdict,
    accepts_message,
    classify_greeting,
)
from agent.local.vocabulary import IVR_PHRASES, SCREENER_PHRASES, corpus
from campaign.contract import Script
from campaign.outcomes import AmdResult

pytestmark = pytest.mark.unit

RATE = 8000


@pytest.mark.parametrize(
    ("transcript", "speech_s", "result"),
    [
        ("hello", 0.5, AmdResult.HUMAN),
        ("hello who is this", 1.1, AmdResult.HUMAN),
        ("", 0.4, AmdResult.HUMAN),
        # short: a misheard machine phrase does not make a person a machine
        ("yes you've reached", 1.3, AmdResult.HUMAN),
        ("hello who at the tone", 1.6, AmdResult.HUMAN),
        # short, but two machine phrases: a brief personal greeting
        ("you've reached leave a message", 1.6, AmdResult.VOICEMAIL),
        ("hi it's sam leave a message after the beep", 2.6, AmdResult.VOICEMAIL),
        (
            "the person you are trying to reach is not available at the tone please record",
            7.0,
            AmdResult.VOICEMAIL,
        ),
        # long speech with no words understood: the classic greeting-length rule
        ("the the i am", 4.0, AmdResult.VOICEMAIL),
        ("thank you for calling acme for sales press one", 6.0, AmdResult.IVR),
        ("our office is now closed for our hours press one", 6.0, AmdResult.IVR),
        (
            "the person you're calling is using a screening service say your name",
            8.0,
            AmdResult.SCREENER,
        ),
        ("if you record your name and reason for calling", 4.5, AmdResult.SCREENER),
        ("the mailbox is full goodbye", 3.0, AmdResult.VOICEMAIL),
    ],
)
def test_greetings_are_classified_by_length_and_words(
    transcript: str, speech_s: float, result: AmdResult
) -> None:
    assert classify_greeting(transcript, speech_s)[0] is result


@pytest.mark.parametrize(
    ("transcript", "speech_s", "beep", "result"),
    [
        # a beep after the greeting: a mailbox, whatever one misheard menu word says
        ("thank you for calling the tone", 6.0, True, AmdResult.VOICEMAIL),
        ("thank you for calling the tone", 6.0, False, AmdResult.IVR),
        ("the the i am", 4.0, True, AmdResult.VOICEMAIL),
        # a screener's two phrases outweigh a beep's two cues only when there are more
        (
            "the person you're calling say your name why you're calling",
            7.0,
            True,
            AmdResult.SCREENER,
        ),
        # a key named tips a greeting without other words to a menu ...
        ("the the one", 5.0, False, AmdResult.IVR),
        ("for sales press 1", 5.0, False, AmdResult.IVR),
        # ... but it is only half a cue: a number read out names keys too
        ("the number six four six is not available", 6.0, False, AmdResult.VOICEMAIL),
        # "you have reached" is said by menus and mailboxes alike
        ("you have reached acme for support", 6.0, False, AmdResult.IVR),
        ("you have reached maria", 4.0, False, AmdResult.VOICEMAIL),
        # ... but it still makes a short greeting a machine
        ("you've reached sam not available", 1.6, False, AmdResult.VOICEMAIL),
        # the beep says nothing about a short greeting: a person is greeted at once
        ("hello", 0.6, True, AmdResult.HUMAN),
    ],
)
def test_weak_signals_are_weighed_with_the_phrases(
    transcript: str, speech_s: float, beep: bool, result: AmdResult
) -> None:
    assert classify_greeting(transcript, speech_s, beep=beep)[0] is result


@pytest.mark.parametrize(
    ("transcript", "speech_s", "beep", "result"),
    [
        # a person's words keep a busy person a person though the VAD ran the pause over
        ("hello sorry i can't talk right now", 2.8, False, AmdResult.HUMAN),
        ("hello do me i can't talk right now", 3.2, False, AmdResult.HUMAN),
        ("hello who is this", 2.5, False, AmdResult.HUMAN),
        # ... not when a machine's words or a beep say otherwise, nor past a person's length
        ("hello you've reached sam leave a message", 3.0, False, AmdResult.VOICEMAIL),
        ("hello the the", 3.0, True, AmdResult.VOICEMAIL),
        ("hello sorry i can't talk right now", 4.5, False, AmdResult.VOICEMAIL),
        # "can't talk" alone is still a mailbox's
        ("i can't talk leave a message", 3.0, False, AmdResult.VOICEMAIL),
    ],
)
def test_a_persons_words_outweigh_length_alone(
    transcript: str, speech_s: float, beep: bool, result: AmdResult
) -> None:
    assert classify_greeting(transcript, speech_s, beep=beep)[0] is result


@pytest.mark.parametrize(
    ("transcript", "speech_s", "beep", "result"),
    [
        # a long greeting that neither beeps nor asks for a message is no mailbox
        ("you have reached acme the the what", 7.0, False, AmdResult.IVR),
        ("the the i am", 6.5, False, AmdResult.IVR),
        # ... with a beep it is one; shorter, the greeting-length rule's voicemail
        ("you have reached acme the the what", 7.0, True, AmdResult.VOICEMAIL),
        ("the the i am", 5.0, False, AmdResult.VOICEMAIL),
    ],
)
def test_a_long_greeting_without_beep_or_mailbox_words_is_a_menu(
    transcript: str, speech_s: float, beep: bool, result: AmdResult
) -> None:
    assert classify_greeting(transcript, speech_s, beep=beep)[0] is result


def test_the_reason_says_what_was_heard() -> None:
    _, reason = classify_greeting("for sales press one", 5.0)
    assert "5.0 s" in reason and "'press one'" in reason


def test_the_reason_names_the_weak_signals() -> None:
    assert "a beep" in classify_greeting("the the", 5.0, beep=True)[1]
    assert "key 'one'" in classify_greeting("the one", 5.0)[1]


def test_a_full_mailbox_takes_no_message() -> None:
    assert not accepts_message("sorry the mailbox is full")
    assert accepts_message("please leave a message")


def test_the_speech_model_hears_the_machine_phrases() -> None:
    lines = corpus(Script())
    assert {"press one", "screening service", "say your name"} <= set(lines)
    assert set(IVR_PHRASES) | set(SCREENER_PHRASES) <= set(lines)


def tone(hz: float, seconds: float, level: float = 8000.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return level * np.sin(2 * np.pi * hz * t)


def voice(seconds: float, f0: float = 130.0, seed: int = 1) -> np.ndarray:
    """A vowel-like sound: a wobbling pitch with many harmonics under two formants."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    pitch = f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    out = np.zeros_like(t)
    for k in range(1, 25):
        hz = k * f0
        weight = np.exp(-(((hz - 700) / 300) ** 2)) + 0.6 * np.exp(-(((hz - 1200) / 250) ** 2))
        out += (weight + 0.05) * np.sin(k * phase)
    return 6000 * out / np.max(np.abs(out)) + rng.normal(0, 50, len(t))


def silence(seconds: float, noise: float = 30.0, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, noise, round(seconds * RATE))


def beeps_in(audio: np.ndarray, chunk: int = 160) -> list[tuple[float, float, float]]:
    detector = BeepDetector(RATE)
    for i in range(0, len(audio), chunk):  # 20 ms frames, as the call delivers them
        detector.push(audio[i : i + chunk].astype(np.int16))
    return detector.beeps


@pytest.mark.parametrize("hz", [440, 850, 1000, 1400, 2000])
def test_a_beep_after_a_greeting_is_found_where_it_is(hz: float) -> None:
    audio = np.concatenate([silence(0.5), voice(2.0), silence(0.6), tone(hz, 0.5), silence(1.0)])
    [(start, end, heard)] = beeps_in(audio)
    assert start == pytest.approx(3.1, abs=0.05)
    assert end == pytest.approx(3.6, abs=0.05)
    assert heard == pytest.approx(hz, abs=20)


def test_a_beep_under_line_noise_is_found() -> None:
    noisy = np.concatenate([silence(0.3), tone(1000, 0.4, level=3000), silence(0.5)])
    noisy += np.random.default_rng(3).normal(0, 300, len(noisy))  # about 20 dB below
    [(start, end, _)] = beeps_in(noisy)
    assert (start, end) == (pytest.approx(0.3, abs=0.05), pytest.approx(0.7, abs=0.05))


@pytest.mark.parametrize("f0", [90.0, 130.0, 210.0])
def test_speech_and_noise_are_not_beeps(f0: float) -> None:
    audio = np.concatenate([voice(3.0, f0=f0), silence(2.0, noise=400.0)])
    assert beeps_in(audio) == []


def test_a_blip_shorter_than_a_beep_is_not_one() -> None:
    assert beeps_in(np.concatenate([silence(0.3), tone(1000, 0.08), silence(0.5)])) == []


def test_two_beeps_are_two() -> None:
    audio = np.concatenate(
        [tone(1000, 0.3), silence(0.3), tone(1400, 0.3), silence(0.3)]  # carrier double beep
    )
    assert [round(hz, -2) for _, _, hz in beeps_in(audio)] == [1000, 1400]


def speech_in(audio: np.ndarray, since: float = 0.0) -> float:
    meter = SpeechMeter(RATE)
    for i in range(0, len(audio), 160):
        meter.push(audio[i : i + 160].astype(np.int16))
    return meter.speech_s(since)


def test_the_meter_measures_speech_in_the_audio() -> None:
    hello = np.concatenate([silence(0.5), voice(0.8), silence(1.5)])
    assert speech_in(hello) == pytest.approx(0.8, abs=0.1)
    greeting = np.concatenate([silence(0.3), voice(1.2), silence(0.2), voice(1.5), silence(1.0)])
    assert speech_in(greeting) == pytest.approx(2.9, abs=0.15)  # a short gap is one stretch
    assert speech_in(greeting, since=1.0) == pytest.approx(2.2, abs=0.15)


def test_the_meter_hears_no_speech_in_line_noise_and_speech_over_it() -> None:
    assert speech_in(silence(5.0, noise=800.0)) == 0.0
    noisy = np.concatenate([silence(1.0, noise=800.0), voice(1.0) + silence(1.0, noise=800.0)])
    assert speech_in(noisy) == pytest.approx(1.0, abs=0.15)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Events:
    """Stands in for the session: the detector only subscribes to two of its events."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[[Any], None]] = {}

    def on(self, name: str, handler: Callable[[Any], None]) -> None:
        self.handlers[name] = handler

    def state(self, new: str, at: float) -> None:
        old = "listening" if new == "speaking" else "speaking"
        self.handlers["user_state_changed"](
            UserStateChangedEvent(old_state=old, new_state=new, created_at=at)  # type: ignore[arg-type]
        )

    def words(self, text: str) -> None:
        self.handlers["user_input_transcribed"](
            UserInputTranscribedEvent(transcript=text, is_final=True)
        )


async def judged(script: Callable[[Events, FakeClock], Awaitable[None]]) -> tuple[Verdict, float]:
    """Run the detector (no audio: speech from the VAD's events) through a scripted call."""
    clock, events = FakeClock(), Events()
    detector = AnsweringMachineDetector(cast(Any, events), clock=clock)
    detector.start(clock.now)
    start = clock.now
    task = asyncio.create_task(detector.verdict())
    await script(events, clock)
    for _ in range(400):  # then time passes, bounded (20 s of the call)
        if task.done():
            break
        await tick(clock, 0.05)
    verdict = await asyncio.wait_for(task, 1.0)
    return verdict, verdict.at - start


async def tick(clock: FakeClock, seconds: float) -> None:
    clock.now += seconds
    await asyncio.sleep(0.03)  # the detector looks every 20 ms


async def test_a_short_hello_is_a_person_the_moment_it_ends() -> None:
    async def hello(events: Events, clock: FakeClock) -> None:
        await tick(clock, 0.5)
        events.state("speaking", clock.now)
        await tick(clock, 1.1)  # 0.55 s of speech, then the VAD's 0.55 s of silence
        events.state("listening", clock.now)
        await tick(clock, 0.0)

    verdict, after = await judged(hello)
    assert verdict.result is AmdResult.HUMAN
    assert after == pytest.approx(1.6)  # no wait for the transcript


async def test_a_long_greeting_is_judged_once_it_is_over() -> None:
    async def mailbox(events: Events, clock: FakeClock) -> None:
        await tick(clock, 0.4)
        events.state("speaking", clock.now)
        await tick(clock, 2.5)
        events.state("listening", clock.now)
        await tick(clock, 0.3)  # a pause between sentences; the STT gives the first one
        events.words("you have reached sam")
        events.state("speaking", clock.now)
        await tick(clock, 2.0)
        events.state("listening", clock.now)
        await tick(clock, 0.5)
        events.words("please leave a message after the tone")

    verdict, after = await judged(mailbox)
    assert verdict.result is AmdResult.VOICEMAIL
    assert "'after the tone'" in verdict.reason and "'you have reached'" in verdict.reason
    # 1 s of quiet after the speech ended (0.55 s before the last "listening")
    assert after == pytest.approx(5.2 - 0.55 + 1.0, abs=0.2)


async def test_nobody_speaking_is_silence() -> None:
    async def nothing(events: Events, clock: FakeClock) -> None:
        await tick(clock, 0.1)

    verdict, after = await judged(nothing)
    assert verdict.result is AmdResult.SILENCE
    assert after == pytest.approx(NO_SPEECH_S, abs=0.2)


async def test_a_lost_transcript_does_not_hold_the_verdict_forever() -> None:
    async def menu(events: Events, clock: FakeClock) -> None:
        await tick(clock, 0.4)
        events.state("speaking", clock.now)
        await tick(clock, 6.0)
        events.state("listening", clock.now)  # the STT never answers

    verdict, _ = await judged(menu)
    assert verdict.result is AmdResult.VOICEMAIL  # long speech, no words: the length rule


def test_digital_silence_before_the_line_does_not_make_noise_speech() -> None:
    # the far end sends zeros until the line comes up; then quiet line noise (-50 dBFS)
    call = np.concatenate([np.zeros(8000), silence(0.5, noise=100.0), voice(0.6), silence(1.5)])
    assert speech_in(call) == pytest.approx(0.6, abs=0.1)


def test_a_long_greeting_stays_speech_to_its_end() -> None:
    words = [np.concatenate([voice(0.5, seed=i), silence(0.08)]) for i in range(16)]
    greeting = np.concatenate([silence(0.5), *words, silence(1.0)])
    assert speech_in(greeting) == pytest.approx(16 * 0.58, abs=0.3)


async def test_the_audio_decides_when_the_vads_events_lag() -> None:
    """Under load the VAD reports seconds late; the detector hears the pause in the audio."""
    clock, events = FakeClock(), Events()
    detector = AnsweringMachineDetector(cast(Any, events), clock=clock)
    start = clock.now
    detector.start(start)
    task = asyncio.create_task(detector.verdict())
    audio = np.concatenate([silence(0.4, noise=100.0), voice(0.7), silence(3.0, noise=100.0)])
    for i in range(0, len(audio), 160):  # 20 ms frames arriving in real time
        clock.now += 0.02
        if i == 8 * 160:  # the VAD's "speaking", late; its "listening" never comes in time
            events.state("speaking", clock.now)
        detector.hear(audio[i : i + 160].astype(np.int16))
        await asyncio.sleep(0)
        if task.done():
            break
    verdict = await asyncio.wait_for(task, 1.0)
    assert verdict.result is AmdResult.HUMAN
    # the hello ends 1.1 s in; the pause is heard VAD_SILENCE_S later
    assert verdict.at - start == pytest.approx(1.1 + VAD_SILENCE_S, abs=0.1)


async def test_line_noise_the_vad_does_not_call_speech_is_silence() -> None:
    clock, events = FakeClock(), Events()
    detector = AnsweringMachineDetector(cast(Any, events), clock=clock)
    start = clock.now
    detector.start(start)
    task = asyncio.create_task(detector.verdict())
    audio = np.concatenate([silence(1.0, noise=100.0), silence(5.0, noise=1500.0)])  # louder
    for i in range(0, len(audio), 160):
        clock.now += 0.02
        detector.hear(audio[i : i + 160].astype(np.int16))
        await asyncio.sleep(0)
        if task.done():
            break
    verdict = await asyncio.wait_for(task, 1.0)
    assert verdict.result is AmdResult.SILENCE
    assert verdict.at - start == pytest.approx(NO_SPEECH_S, abs=0.1)


async def test_the_greeting_waits_for_the_hellos_transcript_then_goes_on() -> None:
    clock, events = FakeClock(), Events()
    detector = AnsweringMachineDetector(cast(Any, events), clock=clock)
    detector.start(clock.now)
    task = asyncio.create_task(detector.verdict())
    await tick(clock, 0.5)
    events.state("speaking", clock.now)
    await tick(clock, 1.0)
    events.state("listening", clock.now)
    verdict = await asyncio.wait_for(task, 1.0)
    assert verdict.result is AmdResult.HUMAN  # judged before its words arrived
    released: list[str] = []
    detector.after_transcript(lambda: released.append("now"))
    await asyncio.sleep(0.05)
    assert released == []
    events.words("hello")
    assert released == []  # not inside the session's own handling of the words
    await asyncio.sleep(0.01)
    assert released == ["now"]
    detector.after_transcript(lambda: released.append("again"))  # nothing due: at once
    await asyncio.sleep(0.01)
    assert released == ["now", "again"]


def words_for(seconds: float, seed: int = 0) -> np.ndarray:
    """Speech as a greeting has it: 0.5 s words with short gaps between them."""
    count = round(seconds / 0.58)
    return np.concatenate(
        [np.concatenate([voice(0.5, seed=seed + i), silence(0.08)]) for i in range(count)]
    )


async def hear_greeting(
    audio: np.ndarray,
    words: str,
    *,
    stall_at_s: float | None = None,
    stall_s: float = 0.0,
    words_at_s: float | None = None,
) -> Verdict:
    """Judge a greeting from its audio (20 ms frames in real time) and its words (their
    transcript arrives 0.5 s in, or at `words_at_s` of the audio); with `stall_at_s`,
    the audio stops there for `stall_s` of the clock, then catches up."""
    clock, events = FakeClock(), Events()
    detector = AnsweringMachineDetector(cast(Any, events), clock=clock)
    detector.start(clock.now)
    task = asyncio.create_task(detector.verdict())
    words_at = 25 * 160 if words_at_s is None else round(words_at_s * RATE) // 160 * 160
    for i in range(0, len(audio), 160):
        if i == words_at and words_at_s is not None:
            events.words(words)
        if stall_at_s is not None and i == round(stall_at_s * RATE):
            for _ in range(round(stall_s / 0.05)):
                await tick(clock, 0.05)
        clock.now += 0.02
        if i == 25 * 160:
            events.state("speaking", clock.now)
            if words_at_s is None:
                events.words(words)
        detector.hear(audio[i : i + 160].astype(np.int16))
        await asyncio.sleep(0)
        if task.done():
            break
    return await asyncio.wait_for(task, 1.0)


async def test_a_beep_that_ends_the_greeting_makes_it_a_mailbox() -> None:
    greeting = np.concatenate([silence(0.4), words_for(4.0), silence(0.5), tone(1000, 0.5)])
    audio = np.concatenate([greeting, silence(6.0)])
    verdict = await hear_greeting(audio, "thank you for calling")
    assert verdict.result is AmdResult.VOICEMAIL
    assert "a beep" in verdict.reason


@pytest.mark.parametrize("stall_s", [1.5, 2.5])  # 2 s and more were seen in CI
async def test_a_beep_delayed_with_the_audio_still_ends_the_greeting(stall_s: float) -> None:
    # the beep starts 0.9 s after the words; the audio stalls before it while the clock
    # runs on (a loaded CPU): the quiet that ends a greeting is counted in the audio
    greeting = np.concatenate([silence(0.4), words_for(4.0), silence(0.9), tone(1000, 0.5)])
    audio = np.concatenate([greeting, silence(6.0)])
    speech_end = 0.4 + len(words_for(4.0)) / RATE
    # the greeting's transcript is in as the stall begins: only the beep is still to come
    stall_at = round((speech_end + 0.6) * RATE) // 160 * 160 / RATE
    verdict = await hear_greeting(
        audio, "thank you for calling", stall_at_s=stall_at, stall_s=stall_s, words_at_s=stall_at
    )
    assert verdict.result is AmdResult.VOICEMAIL
    assert "a beep" in verdict.reason


async def test_a_greeting_whose_audio_stops_arriving_is_over() -> None:
    # the far end plays its greeting, then sends no packets at all (as the devstack's
    # answering machine does): the greeting is over soon after, not at VERDICT_MAX_S
    # (its last 0.7 s are quiet: a pause, not yet the 1 s that ends a greeting)
    greeting = np.concatenate([silence(0.4), words_for(4.0), silence(0.7)])
    last_frame = (len(greeting) // 160 - 1) * 160
    verdict = await hear_greeting(
        greeting, "please leave a message", stall_at_s=last_frame / RATE, stall_s=8.0
    )
    assert verdict.result is AmdResult.VOICEMAIL
    assert "still speaking" not in verdict.reason
    # the clock starts at 1000 and runs with the audio until the stall; then the
    # transcript's wait (3.1 s for 4 s of speech) or AUDIO_GONE_S, whichever is longer
    assert verdict.at - 1000.0 - last_frame / RATE < 3.1 + AUDIO_GONE_S


async def test_a_tone_inside_the_greeting_is_no_beep() -> None:
    # a sung vowel mid-greeting, then more speech: not the mailbox's beep
    audio = np.concatenate(
        [
            silence(0.4),
            words_for(2.0),
            tone(450, 0.5),
            words_for(2.0, seed=10),
            silence(6.0),
        ]
    )
    verdict = await hear_greeting(audio, "thank you for calling")
    assert verdict.result is AmdResult.IVR


async def test_a_blip_at_the_end_is_no_beep() -> None:
    audio = np.concatenate(
        [
            silence(0.4),
            words_for(4.0),
            silence(0.5),
            tone(450, 0.2),
            silence(6.0),
        ]
    )
    verdict = await hear_greeting(audio, "thank you for calling")
    assert verdict.result is AmdResult.IVR


async def test_a_long_greeting_arriving_late_is_judged_with_its_beep() -> None:
    # 18 s of greeting then the beep, delivered 6 s late (a loaded CPU): the 20 s limit
    # counts the audio received, so the greeting is judged whole, beep included
    greeting = np.concatenate([silence(0.4), words_for(18.0), silence(0.4), tone(1000, 0.6)])
    audio = np.concatenate([greeting, silence(3.0)])
    verdict = await hear_greeting(audio, "thank you for calling", stall_at_s=2.0, stall_s=6.0)
    assert verdict.result is AmdResult.VOICEMAIL
    assert "a beep" in verdict.reason


def test_naming_nothing_is_a_menu_only_once_the_words_are_known() -> None:
    assert classify_greeting("", 8.0)[0] is AmdResult.IVR
    # judged at the time limit while the last speech is still being transcribed
    assert classify_greeting("", 8.0, words_known=False)[0] is AmdResult.VOICEMAIL
