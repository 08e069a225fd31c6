"""Offline speech to text: pocketsphinx with a small language model built from the script.

A non-streaming `stt.STT`: the session wraps it in the framework's StreamAdapter
with the VAD, so each utterance is decoded once it ends, and the framework
measures transcription delay and audio duration as it does for any STT.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import NOT_GIVEN, APIConnectOptions, LanguageCode, NotGivenOr, stt
from livekit.agents.utils import AudioBuffer
from pocketsphinx import Config, Decoder, get_model_path
from pocketsphinx.lm import ArpaBoLM

logger = logging.getLogger(__name__)

#: The acoustic model shipped with pocketsphinx is trained on 16 kHz speech.
MODEL_SAMPLE_RATE = 16000
#: Peak (16-bit) below which audio is taken as silence (-50 dBFS).
SILENCE_PEAK = 100


@dataclass(frozen=True)
class _SpeechModel:
    """Language model and pronunciation files for one vocabulary (kept for the process)."""

    directory: tempfile.TemporaryDirectory[str]
    lm: Path
    dictionary: Path


@lru_cache(maxsize=8)
def _speech_model(phrases: tuple[str, ...]) -> _SpeechModel:
    pronunciations: dict[str, list[str]] = {}
    with open(get_model_path("en-us/cmudict-en-us.dict"), encoding="utf-8") as full:
        wanted = {word for phrase in phrases for word in phrase.split()}
        for line in full:
            word = line.split(" ", 1)[0]
            base = word.split("(", 1)[0]
            if base in wanted:
                pronunciations.setdefault(base, []).append(line)
    unknown = sorted({w for p in phrases for w in p.split()} - pronunciations.keys())
    if unknown:
        logger.warning(
            "the offline STT cannot hear these words (not in its dictionary): %s", unknown
        )
    sentences = [" ".join(w for w in p.split() if w in pronunciations) for p in phrases]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise ValueError("the offline STT vocabulary is empty: the script has no known words")

    directory = tempfile.TemporaryDirectory(prefix="agent-stt-")
    lm_path = Path(directory.name) / "script.lm"
    dict_path = Path(directory.name) / "script.dict"
    model = ArpaBoLM(text="\n".join(sentences) + "\n", add_start=True)
    model.compute()
    model.write_file(str(lm_path))
    dict_path.write_text("".join(line for lines in pronunciations.values() for line in lines))
    return _SpeechModel(directory=directory, lm=lm_path, dictionary=dict_path)


class PocketsphinxSTT(stt.STT[Any]):
    """Pocketsphinx (English, offline) listening for a fixed vocabulary of phrases."""

    def __init__(self, *, phrases: Sequence[str]) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._files = _speech_model(tuple(phrases))
        self._decoder: Any = None
        # one decoder per STT; it keeps state between start_utt and end_utt
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return "pocketsphinx-en-us"

    @property
    def provider(self) -> str:
        return "pocketsphinx"

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        frames = buffer if isinstance(buffer, list) else [buffer]
        text = await asyncio.to_thread(self._decode, frames) if frames else ""
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=uuid.uuid4().hex,
            alternatives=[stt.SpeechData(language=LanguageCode("en"), text=text)],
        )

    def _decode(self, frames: list[rtc.AudioFrame]) -> str:
        pcm = _to_model_rate(rtc.combine_audio_frames(frames))
        # the decoder "hears" words in silence; near-silent audio has nothing to say
        if not pcm or np.abs(np.frombuffer(pcm, dtype=np.int16)).max() < SILENCE_PEAK:
            return ""
        with self._lock:
            if self._decoder is None:
                self._decoder = Decoder(
                    Config(
                        lm=str(self._files.lm),
                        dict=str(self._files.dictionary),
                        loglevel="FATAL",
                    )
                )
            self._decoder.start_utt()
            self._decoder.process_raw(pcm, full_utt=True)
            self._decoder.end_utt()
            hypothesis = self._decoder.hyp()
        return str(hypothesis.hypstr) if hypothesis is not None else ""


def _to_model_rate(frame: rtc.AudioFrame) -> bytes:
    """Mono 16-bit PCM at 16 kHz."""
    samples = np.frombuffer(frame.data, dtype=np.int16)
    if frame.num_channels > 1:
        samples = samples.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
    if frame.sample_rate == MODEL_SAMPLE_RATE:
        return samples.tobytes()
    resampler = rtc.AudioResampler(frame.sample_rate, MODEL_SAMPLE_RATE, num_channels=1)
    mono = rtc.AudioFrame(samples.tobytes(), frame.sample_rate, 1, len(samples))
    out = [*resampler.push(mono), *resampler.flush()]
    return b"".join(bytes(f.data) for f in out)
