"""Answering-machine detection, measured: one real call per corpus clip.

Needs the devstack (`python -m devstack up`). The corpus phones play each clip of
`--corpus DIR` (any folder with a `labels.csv`, see devstack/corpus.py) to the real
agent worker (local providers) through LiveKit and livekit-sip; the verdict, its
time, the first word and the voicemail message's start come from the call record,
the clip's true timings from its labels and the phones' log (one clock: this host).

Baselines over the same clips in the same run:
- "answered = human": what SIP signalling alone says (every answered call is a person);
- the greeting-length rule, the classic telephony AMD: speech longer than 2.5 s before
  the first pause is a machine (here: voicemail), a shorter greeting a person, no speech
  silence. Its speech segments come from the same Silero VAD model the agent uses, run
  over the clip file; it decides 2.5 s into the speech, or when the first pause ends.

    .venv/bin/python -m benchmarks.amd --corpus .devstack/corpus [--limit 5] [--classes human,ivr]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
import wave
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import devstack
from agent.amd import NO_SPEECH_S
from benchmarks.greeting_rule import GREETING_RULE_S, greeting_rule
from campaign.contract import Script
from campaign.outcomes import AmdResult
from campaign.store import Ledger, open_ledger
from campaign.store.calls import get_call_record
from devstack import corpus, corpus_phones, stack
from tests.e2e.agent_worker import dial_request, place_call, seed_attempt, start_agent_worker

RECORD_TIMEOUT_S = 180.0
#: what a verdict is when the agent wrote none (or an error)
NO_VERDICT = "none"
VOICEMAIL = "Hi {name}, this is Acme calling about your order. Please call us back. Goodbye."


@dataclass
class Result:
    """One clip's call."""

    clip: str
    truth: str
    verdict: str = NO_VERDICT
    verdict_s: float | None = None  #: after the agent saw the answer
    first_word_s: float | None = None  #: after the end of the clip's speech (humans)
    message_after_beep_s: float | None = None  #: message start minus the clip's beep end
    message_after_speech_s: float | None = None  #: message start minus the speech end
    error: str | None = None
    length_rule: str = NO_VERDICT
    length_rule_s: float | None = None  #: after the answer


async def call_clip(
    env: dict[str, str],
    ledger: Ledger,
    agent_name: str,
    trunk_id: str,
    index: int,
    label: corpus.Label,
) -> Result:
    result = Result(label.clip, label.label)
    number = corpus.number_for_clip(index)
    contact_id, attempt_id = await asyncio.to_thread(seed_attempt, ledger, number)
    request = dial_request(
        contact_id, attempt_id, number, script=Script(voicemail_message=VOICEMAIL)
    )
    try:
        _, participant, error = await place_call(
            env, agent_name, request, number, trunk_id=trunk_id
        )
    except Exception as exc:  # a refused or failed call is a result, not a crash
        result.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return result
    if error is not None or participant is None:
        result.error = f"SIP {error.sip_status_code if error else '?'}: {error}"
        return result
    deadline = time.monotonic() + RECORD_TIMEOUT_S
    record = await asyncio.to_thread(get_call_record, ledger, attempt_id)
    while record is None and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        record = await asyncio.to_thread(get_call_record, ledger, attempt_id)
    if record is None:
        result.error = "no call record"
        return result
    result.verdict = record.amd_result if record.amd_result in corpus.CLASSES else NO_VERDICT
    result.verdict_s = record.amd_latency
    answered = [
        e.timestamp
        for e in corpus_phones.read_log(lk_call_id=participant.sip_call_id)
        if e.event == "answered"
    ]
    if not answered or record.answered_at is None:
        return result
    clip_start = answered[0]  # the phone starts the clip when its 200 OK is ACKed
    agent_answer = record.answered_at.timestamp()
    if (
        label.label == "human"
        and label.speech_end is not None
        and record.first_word_latency is not None
    ):
        result.first_word_s = (agent_answer + record.first_word_latency) - (
            clip_start + label.speech_end
        )
    if record.message_latency is not None:
        message = agent_answer + record.message_latency
        if label.beep_end is not None:
            result.message_after_beep_s = message - (clip_start + label.beep_end)
        if label.speech_end is not None:
            result.message_after_speech_s = message - (clip_start + label.speech_end)
    return result


async def run_calls(
    env: dict[str, str],
    ledger: Ledger,
    agent_name: str,
    trunk_id: str,
    clips: Sequence[tuple[int, corpus.Label]],
    concurrency: int,
) -> list[Result]:
    gate = asyncio.Semaphore(concurrency)
    done = 0

    async def one(index: int, label: corpus.Label) -> Result:
        nonlocal done
        async with gate:
            result = await call_clip(env, ledger, agent_name, trunk_id, index, label)
        done += 1
        mark = "ok" if result.verdict == result.truth else "MISS"
        print(
            f"[{done}/{len(clips)}] {label.clip}: {result.truth} -> {result.verdict} {mark}"
            + (f" ({result.error})" if result.error else ""),
            flush=True,
        )
        return result

    return list(await asyncio.gather(*(one(i, lab) for i, lab in clips)))


def length_rule(directory: Path, labels: Sequence[corpus.Label]) -> list[tuple[str, float]]:
    """The greeting-length rule's verdict and its time (s after the answer) per clip."""
    from livekit import rtc
    from livekit.agents import vad as lk_vad
    from livekit.plugins import silero

    model = silero.VAD.load()

    async def judge(label: corpus.Label) -> tuple[str, float]:
        with wave.open(str(directory / label.clip), "rb") as handle:
            rate = handle.getframerate()
            pcm = np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.int16)
            if handle.getnchannels() > 1:
                pcm = pcm.reshape(-1, handle.getnchannels())[:, 0].copy()
        stream = model.stream()
        step = rate // 50
        for i in range(0, len(pcm) - step + 1, step):
            stream.push_frame(rtc.AudioFrame(pcm[i : i + step].tobytes(), rate, 1, step))
        stream.end_input()
        first: tuple[float, float, float] | None = None  # start, speech, silence
        async for event in stream:
            if event.type == lk_vad.VADEventType.END_OF_SPEECH:
                start = event.timestamp - event.speech_duration - event.silence_duration
                first = (start, event.speech_duration, event.silence_duration)
                break
        await stream.aclose()
        if first is None:
            return greeting_rule(None).value, NO_SPEECH_S
        start, speech, silence = first
        verdict = greeting_rule(speech)
        # a machine is called 2.5 s into the speech, a person when the first pause ends
        seconds = start + (GREETING_RULE_S if verdict is AmdResult.VOICEMAIL else speech + silence)
        return verdict.value, seconds

    async def judge_all() -> list[tuple[str, float]]:
        return [await judge(label) for label in labels]

    return asyncio.run(judge_all())


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))])


def report(name: str, truth: Sequence[str], predicted: Sequence[str]) -> float:
    """Print a confusion matrix with per-class precision and recall; returns accuracy."""
    classes = [*corpus.CLASSES, NO_VERDICT] if NO_VERDICT in predicted else list(corpus.CLASSES)
    pairs = Counter(zip(truth, predicted, strict=True))
    print(f"\n## {name}\ntrue \\ said  " + " ".join(f"{c[:9]:>9}" for c in classes))
    for t in corpus.CLASSES:
        if t in truth:
            print(f"{t:12} " + " ".join(f"{pairs[(t, p)]:9d}" for p in classes))
    print(f"{'class':12} {'precision':>9} {'recall':>9} {'n':>5}")
    for c in corpus.CLASSES:
        n = sum(1 for t in truth if t == c)
        said = sum(1 for p in predicted if p == c)
        right = pairs[(c, c)]
        precision = right / said if said else float("nan")
        recall = right / n if n else float("nan")
        if n or said:
            print(f"{c:12} {precision:9.1%} {recall:9.1%} {n:5d}")
    accuracy = sum(pairs[(c, c)] for c in corpus.CLASSES) / len(truth) if truth else 0.0
    print(f"accuracy {accuracy:.1%} over {len(truth)} clips")
    return accuracy


def timing(name: str, results: Sequence[Result], seconds: Sequence[float | None]) -> None:
    print(f"\n## time to verdict after the answer, {name} (s)")
    print(f"{'class':12} {'p50':>6} {'p95':>6} {'n':>4}")
    for c in corpus.CLASSES:
        values = [
            s for r, s in zip(results, seconds, strict=True) if r.truth == c and s is not None
        ]
        if values:
            print(f"{c:12} {pct(values, 0.5):6.2f} {pct(values, 0.95):6.2f} {len(values):4d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True, help="folder with labels.csv")
    parser.add_argument("--limit", type=int, default=None, help="at most N clips per class")
    parser.add_argument("--classes", default=",".join(corpus.CLASSES), help="classes to call")
    parser.add_argument("--concurrency", type=int, default=3, help="calls at once")
    parser.add_argument("--seed", type=int, default=None, help="shuffle the call order")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    directory = args.corpus.resolve()
    wanted = {c.strip() for c in args.classes.split(",") if c.strip()}
    if unknown := wanted - set(corpus.CLASSES):
        parser.error(f"unknown classes: {', '.join(sorted(unknown))}")
    try:
        labels = corpus.read_labels(directory)
    except devstack.DevstackError as exc:
        parser.error(str(exc))
    taken: Counter[str] = Counter()
    clips: list[tuple[int, corpus.Label]] = []
    for index, label in enumerate(labels, start=1):
        if label.label in wanted and (args.limit is None or taken[label.label] < args.limit):
            taken[label.label] += 1
            clips.append((index, label))
    if args.seed is not None:
        random.Random(args.seed).shuffle(clips)

    try:
        # the corpus phones play this corpus (restarted only if they played another)
        if corpus_phones.source().resolve() != directory:
            stack.serve_corpus(directory)
        else:
            stack.up()
        env = devstack.env()
        trunk_id = stack.ensure_corpus_trunk()
    except devstack.DevstackError as exc:
        raise SystemExit(f"benchmarks.amd: the devstack is not usable: {exc}") from None
    url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='bench-amd-')) / 'ledger.db'}"
    ledger = open_ledger(url)
    started = time.monotonic()
    with start_agent_worker(database_url=url, env=env) as worker:
        results = asyncio.run(
            run_calls(env, ledger, worker.agent_name, trunk_id, clips, args.concurrency)
        )
    call_time = time.monotonic() - started
    ledger.dispose()
    for result, (verdict, seconds) in zip(
        results, length_rule(directory, [lab for _, lab in clips]), strict=True
    ):
        result.length_rule, result.length_rule_s = verdict, seconds

    truth = [r.truth for r in results]
    print(f"\n# {len(results)} calls, {args.concurrency} at once, {call_time:.0f} s")
    errors = [r for r in results if r.error]
    if errors:
        print(f"{len(errors)} calls failed: " + "; ".join(f"{r.clip}: {r.error}" for r in errors))
    ours = report("the agent (agent/amd.py)", truth, [r.verdict for r in results])
    signalling = report("baseline: answered = human", truth, ["human"] * len(results))
    greeting = report(
        f"baseline: greeting-length rule ({GREETING_RULE_S} s)",
        truth,
        [r.length_rule for r in results],
    )
    timing("the agent", results, [r.verdict_s for r in results])
    timing("greeting-length rule", results, [r.length_rule_s for r in results])
    first = [r.first_word_s for r in results if r.first_word_s is not None]
    print("\n## human first word after the end of the greeting (s)")
    print(
        f"p50 {pct(first, 0.5):.2f}  p95 {pct(first, 0.95):.2f}  n {len(first)}"
        f"  within 1.5 s: {sum(1 for f in first if f < 1.5)}"
    )
    after_beep = [r.message_after_beep_s for r in results if r.message_after_beep_s is not None]
    no_beep = [
        r.message_after_speech_s
        for r, (_, lab) in zip(results, clips, strict=True)
        if lab.beep_end is None and r.message_after_speech_s is not None
    ]
    print("\n## voicemail message start")
    print(
        f"after the beep's end: {len(after_beep)} messages, "
        f"{sum(1 for s in after_beep if s <= 0)} started before it ended; "
        f"min {min(after_beep, default=float('nan')):.2f} s, "
        f"median {statistics.median(after_beep) if after_beep else float('nan'):.2f} s"
    )
    print(
        f"greetings without a beep: {len(no_beep)} messages, "
        f"{sum(1 for s in no_beep if s <= 0)} started before the greeting ended; "
        f"median {statistics.median(no_beep) if no_beep else float('nan'):.2f} s after it"
    )
    print(
        f"\naccuracy: agent {ours:.1%}, answered=human {signalling:.1%} "
        f"(agent / baseline {ours / signalling if signalling else float('nan'):.2f}x), "
        f"greeting-length {greeting:.1%} "
        f"(agent / baseline {ours / greeting if greeting else float('nan'):.2f}x)"
    )
    if args.out:
        args.out.write_text(json.dumps([asdict(r) for r in results], indent=1) + "\n")


if __name__ == "__main__":
    main()
