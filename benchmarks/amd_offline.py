"""Answering-machine detection over the clip files, without calls: a tool to iterate on.

Runs what the agent runs on a call's audio, outside the call: the Silero VAD cuts each
clip into utterances, pocketsphinx (the agent's `PocketsphinxSTT`, same vocabulary)
decodes each one, `SpeechMeter` and `BeepDetector` read the raw audio; then the
detector's decision is replayed on that hearing (`classify_greeting` at each pause
until it says person, else on the whole greeting once it is over). No audio path, no
codec, no CPU contention: a quick estimate (160 clips in 2-3 minutes on 2 shared
cores, then a second per classifier change thanks to the cache), not a measurement;
`benchmarks.amd` places the real calls.

    .venv/bin/python -m benchmarks.amd_offline --corpus .devstack/corpus [--classes ivr] [-v]

The hearing is cached in `--cache` (default: DIR/.offline-hearing.json), keyed by the
speech model's vocabulary, so a classifier change re-scores instantly and a vocabulary
change hears again.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time
import wave
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from livekit import rtc
from livekit.agents import vad as lk_vad
from livekit.plugins import silero

from agent.amd import (
    BEEP_CUE_MIN_S,
    BEEP_LAST_S,
    MACHINE_SILENCE_S,
    MIN_SPEECH_S,
    BeepDetector,
    SpeechMeter,
    classify_greeting,
)
from agent.local import stt as local_stt
from agent.local.vocabulary import corpus as vocabulary
from benchmarks.greeting_rule import GREETING_RULE_S, greeting_rule
from campaign.contract import Script
from campaign.outcomes import AmdResult
from devstack import corpus

#: the session's input rate (agent.providers.LOCAL_INPUT_SAMPLE_RATE)
SESSION_RATE = 16000
FRAME_S = 0.02


@dataclass
class Utterance:
    """One VAD utterance: where it ended in the clip (seconds), its speech and words."""

    end: float
    speech_s: float
    text: str


@dataclass
class Hearing:
    """What the agent's ears make of one clip."""

    utterances: list[Utterance]
    #: [start, end] of the SpeechMeter's speech, seconds into the clip
    regions: list[list[float]]
    #: (start, end, Hz) of each tone
    beeps: list[tuple[float, float, float]]


def _speech_until(regions: list[list[float]], until: float) -> float:
    return sum(max(0.0, min(end, until) - start) for start, end in regions if start < until)


def judge(hearing: Hearing) -> tuple[AmdResult, str]:
    """The detector's decision replayed: at each pause, a person if the greeting so far
    says so; else a machine, judged on the whole greeting with its beep."""
    regions, words = hearing.regions, []
    for utterance in hearing.utterances:
        if utterance.text:
            words.append(utterance.text)
        speech = _speech_until(regions, utterance.end)
        if not words and speech < MIN_SPEECH_S:
            continue
        result, reason = classify_greeting(" ".join(words), speech)
        if result is AmdResult.HUMAN:
            return result, reason
        # a machine: its greeting is over at the first quiet of MACHINE_SILENCE_S after this
        later = [r for r in regions if r[1] > utterance.end]
        end = utterance.end
        for start, stop in later:
            if start - end >= MACHINE_SILENCE_S:
                break
            end = stop
        text = " ".join(u.text for u in hearing.utterances if u.text and u.end <= end + 0.6)
        beep = any(
            b_end - b_start >= BEEP_CUE_MIN_S and b_end >= end - BEEP_LAST_S
            for b_start, b_end, _ in hearing.beeps
            if b_end <= end + 0.1
        )
        result, reason = classify_greeting(text, _speech_until(regions, end), beep=beep)
        return (AmdResult.VOICEMAIL if result is AmdResult.HUMAN else result), reason
    return AmdResult.SILENCE, "nobody spoke"


async def hear(path: Path, vad: lk_vad.VAD, stt: local_stt.PocketsphinxSTT) -> Hearing:
    with wave.open(str(path), "rb") as handle:
        rate = handle.getframerate()
        pcm = np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.int16)
    step = round(rate * FRAME_S)
    meter, beeps = SpeechMeter(rate), BeepDetector(rate)
    resampler = rtc.AudioResampler(rate, SESSION_RATE, num_channels=1)
    stream = vad.stream()
    utterances: list[Utterance] = []

    async def read() -> None:
        async for event in stream:
            if event.type == lk_vad.VADEventType.END_OF_SPEECH:
                text = await asyncio.to_thread(stt._decode, list(event.frames))
                end = event.timestamp - event.silence_duration
                utterances.append(Utterance(round(end, 2), round(event.speech_duration, 2), text))

    reader = asyncio.create_task(read())
    # a second of line quiet after the clip, as the phone keeps the call up
    tail = np.zeros(rate, dtype=np.int16)
    samples = np.concatenate([pcm, tail])
    for i in range(0, len(samples) - step + 1, step):
        chunk = samples[i : i + step]
        meter.push(chunk)
        beeps.push(chunk)
        for frame in resampler.push(rtc.AudioFrame(chunk.tobytes(), rate, 1, step)):
            stream.push_frame(frame)
    stream.end_input()
    await reader
    await stream.aclose()
    return Hearing(utterances, meter.regions, beeps.beeps)


def length_rule(hearing: Hearing) -> str:
    """The baseline, the classic telephony AMD, on the same hearing: speech longer than
    GREETING_RULE_S before the first pause is a machine (voicemail), shorter a person."""
    first = hearing.utterances[0].speech_s if hearing.utterances else None
    return greeting_rule(first).value


def _hearing_key(phrases: list[str]) -> str:
    config = json.dumps(phrases, sort_keys=True, default=str)
    return hashlib.sha256(config.encode()).hexdigest()[:16]


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--classes", default=",".join(corpus.CLASSES))
    parser.add_argument("--cache", type=Path)
    parser.add_argument("-v", "--verbose", action="store_true", help="print every miss")
    args = parser.parse_args(argv)
    labels = [
        lab for lab in corpus.read_labels(args.corpus) if lab.label in args.classes.split(",")
    ]
    phrases = vocabulary(Script())
    key = _hearing_key(phrases)
    cache_path = args.cache or args.corpus / ".offline-hearing.json"
    cache: dict[str, dict[str, object]] = {}
    if cache_path.exists():
        stored = json.loads(cache_path.read_text())
        cache = stored.get(key, {}) if isinstance(stored, dict) else {}
    todo = [lab for lab in labels if lab.clip not in cache]
    if todo:
        began = time.monotonic()
        vad = silero.VAD.load()
        stt = local_stt.PocketsphinxSTT(phrases=phrases)
        for lab in todo:
            cache[lab.clip] = asdict(await hear(args.corpus / lab.clip, vad, stt))
        cache_path.write_text(json.dumps({key: cache}))
        print(f"heard {len(todo)} clips in {time.monotonic() - began:.0f} s")
    pairs: Counter[tuple[str, str]] = Counter()
    baseline_right = 0
    misses = []
    for lab in labels:
        raw = cache[lab.clip]
        hearing = Hearing(
            [Utterance(**u) for u in raw["utterances"]],  # type: ignore[attr-defined]
            raw["regions"],  # type: ignore[arg-type]
            [tuple(b) for b in raw["beeps"]],  # type: ignore[attr-defined, misc]
        )
        result, reason = judge(hearing)
        baseline_right += length_rule(hearing) == lab.label
        pairs[(lab.label, result.value)] += 1
        if result.value != lab.label:
            words = " | ".join(u.text for u in hearing.utterances)
            misses.append(f"{lab.clip} {lab.label} -> {result.value}: {reason}; [{words}]")
    classes = [c for c in corpus.CLASSES if any(t == c for t, _ in pairs)]
    print("true \\ said " + " ".join(f"{c[:9]:>9}" for c in corpus.CLASSES) + "   recall")
    for truth in classes:
        total = sum(n for (t, _), n in pairs.items() if t == truth)
        row = " ".join(f"{pairs[(truth, c)]:>9}" for c in corpus.CLASSES)
        print(f"{truth:<12} {row}   {pairs[(truth, truth)] / total:6.1%}")
    right = sum(pairs[(c, c)] for c in classes)
    print(f"accuracy {right / len(labels):.1%} ({right} of {len(labels)})")
    baseline = baseline_right / len(labels)
    ratio = f"x{right / baseline_right:.2f}" if baseline_right else "-"
    print(
        f"baseline, greeting-length rule ({GREETING_RULE_S} s) on the same hearing:"
        f" {baseline:.1%}; the detector {ratio}"
    )
    if args.verbose:
        print("\n".join(misses))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
