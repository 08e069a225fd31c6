"""The offline providers through the framework's interfaces: espeak-ng speaks,
pocketsphinx hears it over a telephone-quality line, metrics and usage flow."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import llm, metrics

from agent.local import EspeakTTS, PocketsphinxSTT, ScriptedLLM
from agent.local.vocabulary import corpus
from campaign.contract import Script

pytestmark = pytest.mark.integration

TIMEOUT_S = 30


async def speak(text: str) -> tuple[rtc.AudioFrame, list[metrics.TTSMetrics]]:
    tts = EspeakTTS()
    seen: list[metrics.TTSMetrics] = []
    tts.on("metrics_collected", seen.append)
    async with tts.synthesize(text) as stream:
        frame = await asyncio.wait_for(stream.collect(), TIMEOUT_S)
    await asyncio.sleep(0)  # let the metrics task report
    return frame, seen


def telephone_line(frame: rtc.AudioFrame) -> list[rtc.AudioFrame]:
    """Down to 8 kHz mu-law and back up to the room's 16 kHz, as a SIP call carries it."""
    down = rtc.AudioResampler(frame.sample_rate, 8000, num_channels=1)
    narrow = rtc.combine_audio_frames([*down.push(frame), *down.flush()])
    samples = np.frombuffer(narrow.data, dtype=np.int16).astype(np.float64) / 32768.0
    mu = np.sign(samples) * np.log1p(255 * np.abs(samples)) / np.log1p(255)
    mu = np.round(mu * 127) / 127  # 8-bit companding
    back = np.sign(mu) * np.expm1(np.abs(mu) * np.log1p(255)) / 255
    pcm = (back * 32767).astype(np.int16)
    up = rtc.AudioResampler(8000, 16000, num_channels=1)
    line = rtc.AudioFrame(pcm.tobytes(), 8000, 1, len(pcm))
    return [*up.push(line), *up.flush()]


async def test_espeak_speaks_and_reports_ttfb_and_characters() -> None:
    text = "Thank you for your time. Goodbye."
    frame, seen = await speak(text)
    assert frame.sample_rate == 22050
    assert 1.0 < frame.duration < 5.0
    assert np.abs(np.frombuffer(frame.data, dtype=np.int16)).max() > 1000  # not silence
    [report] = seen
    assert report.characters_count == len(text)
    assert 0 < report.ttfb < report.duration


async def test_pocketsphinx_hears_the_scripts_words_over_a_phone_line() -> None:
    frame, _ = await speak("Yes, I am interested. Please call me tomorrow.")
    stt = PocketsphinxSTT(phrases=corpus(Script()))
    seen: list[metrics.STTMetrics] = []
    stt.on("metrics_collected", seen.append)
    event = await asyncio.wait_for(stt.recognize(telephone_line(frame)), TIMEOUT_S)
    heard = event.alternatives[0].text.split()
    # garbled around them, but the words the script branches on come through
    assert "tomorrow" in heard or "interested" in heard
    [report] = seen
    assert report.audio_duration == pytest.approx(frame.duration, abs=0.1)


async def test_pocketsphinx_hears_a_voicemail_greeting() -> None:
    frame, _ = await speak(
        "Hi, you have reached Alex. I can't take your call right now. "
        "Please leave a message after the tone."
    )
    stt = PocketsphinxSTT(phrases=corpus(Script()))
    event = await asyncio.wait_for(stt.recognize(telephone_line(frame)), TIMEOUT_S)
    heard = event.alternatives[0].text
    assert "you have reached" in heard or "leave a message" in heard or "after the tone" in heard


async def test_silence_is_heard_as_nothing() -> None:
    stt = PocketsphinxSTT(phrases=corpus(Script()))
    silence = rtc.AudioFrame(bytes(16000 * 2), 16000, 1, 16000)
    event = await asyncio.wait_for(stt.recognize(silence), TIMEOUT_S)
    assert event.alternatives[0].text == ""


async def test_the_scripted_llm_reports_usage_and_time_to_first_token() -> None:
    scripted = ScriptedLLM(script=Script(), variables={"name": "Sam"})
    seen: list[metrics.LLMMetrics] = []
    scripted.on("metrics_collected", seen.append)
    ctx = llm.ChatContext()
    ctx.add_message(role="system", content="be polite")
    stream = scripted.chat(chat_ctx=ctx)
    response = await asyncio.wait_for(stream.collect(), TIMEOUT_S)
    assert response.text.startswith("Hello Sam")
    assert response.usage is not None and response.usage.completion_tokens > 0
    await stream.aclose()
    [report] = seen
    assert report.completion_tokens == response.usage.completion_tokens
    assert report.ttft >= 0
