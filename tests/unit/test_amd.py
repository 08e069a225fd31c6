"""Answering-machine detection: the classifier on transcripts, the beep detector on audio."""

from __future__ import annotations

import numpy as np
import pytest

from agent.amd import BeepDetector, SpeechMeter, accepts_message, classify_greeting
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


def test_the_reason_says_what_was_heard() -> None:
    _, reason = classify_greeting("for sales press one", 5.0)
    assert "5.0 s" in reason and "'press one'" in reason


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
