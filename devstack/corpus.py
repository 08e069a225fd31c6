"""A labelled corpus of call greetings for answering-machine detection, made offline.

`python -m devstack corpus DIR` writes one 8 kHz mono 16-bit WAV per clip and
`labels.csv`. Every clip is built from espeak-ng voices, rates and pitches, with
sox for pauses, line noise, the telephone band (300-3400 Hz) and beeps, from a
fixed seed, so the same command always writes the same corpus.

`labels.csv` has a header and one row per clip: `clip` (file name in DIR) and
`class` (human, voicemail, screener, ivr, silence) are what any corpus needs; the
optional `speech_end`, `beep_start`, `beep_end` (seconds into the clip, empty when
there is none) let the benchmark time the agent against the audio, and `text` says
what the clip says. A corpus recorded elsewhere needs only the first two columns.
The devstack's corpus phones play clip N (1-based row of labels.csv) to a call to
`number_for_clip(N)`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import subprocess
import tempfile
import wave
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from devstack.errors import DevstackError

RATE = 8000
LABELS_FILE = "labels.csv"
CLASSES = ("human", "voicemail", "screener", "ivr", "silence")
#: The corpus phones' numbers: +1 212 737 NNNN, NNNN the clip's 1-based row.
NUMBER_PREFIX = "+1212737"
MAX_CLIPS = 9999
SEED = 14

_VOICES = ("en-us", "en-us+f3", "en-us+m3", "en-gb", "en-gb+f4", "en-gb-scotland", "en-us-nyc")
_NAMES = ("Sam", "Maria", "John", "Priya", "Kevin", "Laura", "Ahmed", "Olivia", "Chen", "Rosa")
_COMPANIES = ("Acme", "Northwind", "First National Bank", "Contoso", "Globex", "City Dental")
_DIGITS = ("2 1 2, 5 5 5, 0 1 4 2", "6 4 6, 5 5 5, 0 1 9 9", "7 1 8, 5 5 5, 0 1 2 3")

_HUMAN_SHORT = (
    "Hello?",
    "Hello.",
    "Hi.",
    "Yes?",
    "Hello, who is this?",
    "Yeah, who's this?",
    "Hi, this is {name}.",
    "{name} speaking.",
    "Hello, {name} speaking.",
    "Good morning.",
    "Hey.",
    "Yes, hello?",
    "Who is calling?",
    "Hello, yes?",
)
#: Two utterances with a pause between them (the callee waits, then tries again).
_HUMAN_PAUSED = (
    ("Hello?", "Hello?"),
    ("Hi.", "Who is this?"),
    ("Hello?", "Is anyone there?"),
    ("Yes?", "Hello?"),
    ("{name} speaking.", "Hello?"),
)
_VOICEMAIL_SHORT = (
    "Hi, it's {name}. Leave a message.",
    "This is {name}. Please leave a message.",
    "You've reached {name}. Leave a message after the beep.",
    "{name} here. I can't talk, leave a message.",
    "Hey, it's {name}, leave your name and number.",
)
_VOICEMAIL_LONG = (
    "Hi, you have reached the voicemail of {name}. I can't take your call right now. "
    "Please leave your name, number and a short message after the tone, and I will get "
    "back to you as soon as I can.",
    "Hello, this is {name}. Sorry I missed your call. Leave me a message and I will call you back.",
    "Hi, you've reached {name} at {company}. I am away from my desk right now. Please "
    "leave a message and I will get back to you.",
    "Hello, you have reached {name}. I am not available to take your call. Please "
    "leave a message after the tone.",
)
_VOICEMAIL_CARRIER = (
    "The person you are trying to reach is not available. At the tone, please record "
    "your message. When you have finished recording, you may hang up.",
    "The number you have dialed, {digits}, is not available. Please leave a message "
    "after the tone.",
    "Your call has been forwarded to an automated voice messaging system. {digits} is "
    "not available. At the tone, please record your message.",
    "The subscriber you have called is not available. Please leave a message after the beep.",
)
_SCREENER = (
    "Hi, the person you're calling is using a screening service from Google, and will "
    "get a copy of this conversation. Go ahead and say your name and why you're calling.",
    "Hello, the person you are calling is using a call screening service. Please state "
    "your name and the reason for your call.",
    "Hi, if you record your name and reason for calling, I'll see if this person is available.",
    "Please say your name and why you are calling, and I will see if this person is available.",
    "The person you're calling uses call screening. Please say your name and the "
    "reason for your call.",
)
_IVR = (
    "Thank you for calling {company}. For sales, press one. For support, press two. "
    "For billing, press three.",
    "Welcome to {company}. Please listen carefully, as our menu options have changed. "
    "To speak with an operator, press zero.",
    "Thank you for calling {company}. If you know your party's extension, you may "
    "dial it at any time. For the main menu, press one.",
    "Welcome to {company}. For English, press one. Para espanol, oprima el dos.",
    "You have reached {company}. Our office is now closed. For our hours, press one. "
    "To leave a message, press two.",
)
_BEEP_HZ = (1000, 1400, 850, 950, 440, 1200)
#: sox effects that cut the silence espeak-ng leaves before and after its speech
_TRIM_SILENCE = ("silence", "1", "0.02", "0.5%", "reverse") * 2


@dataclass(frozen=True)
class Spoken:
    """What one clip says and how: utterances with the pauses after each."""

    voice: str
    rate: int  #: words per minute
    pitch: int  #: espeak-ng 0-99
    utterances: tuple[str, ...]
    pauses: tuple[float, ...]  #: seconds after each utterance but the last


@dataclass(frozen=True)
class ClipSpec:
    """How to make one clip (all times in seconds)."""

    name: str
    label: str
    lead: float  #: silence before anything is heard
    spoken: Spoken | None
    #: (gap after the speech, Hz, length), or None for no beep
    beep: tuple[float, int, float] | None
    noise: str  #: sox noise type: whitenoise, pinknoise, brownnoise
    noise_db: float  #: noise level in dBFS
    tail: float  #: silence (line noise) after the last sound
    text: str = field(default="")


@dataclass(frozen=True)
class Label:
    """One row of labels.csv."""

    clip: str
    label: str
    speech_end: float | None = None
    beep_start: float | None = None
    beep_end: float | None = None
    text: str = ""


def number_for_clip(index: int) -> str:
    """The corpus phone number that plays clip `index` (1-based row of labels.csv)."""
    if not 1 <= index <= MAX_CLIPS:
        raise ValueError(f"clip index must be between 1 and {MAX_CLIPS}")
    return f"{NUMBER_PREFIX}{index:04d}"


def specs(seed: int = SEED) -> list[ClipSpec]:
    """The generated corpus: 160 clips over the five classes, in a fixed order."""
    rng = random.Random(seed)
    out: list[ClipSpec] = []

    def fill(template: str) -> str:
        return template.format(
            name=rng.choice(_NAMES), company=rng.choice(_COMPANIES), digits=rng.choice(_DIGITS)
        )

    def spoken(utterances: Sequence[str], pauses: Sequence[float] = ()) -> Spoken:
        return Spoken(
            voice=rng.choice(_VOICES),
            rate=rng.randrange(140, 195, 5),
            pitch=rng.randrange(30, 71, 5),
            utterances=tuple(fill(u) for u in utterances),
            pauses=tuple(pauses),
        )

    def add(label: str, say: Spoken | None, *, beep: bool = False, noisy: bool = False) -> None:
        tone = (
            (round(rng.uniform(0.3, 1.0), 2), rng.choice(_BEEP_HZ), round(rng.uniform(0.3, 1.0), 2))
            if beep
            else None
        )
        out.append(
            ClipSpec(
                name=f"{len(out) + 1:04d}-{label}.wav",
                label=label,
                lead=round(rng.uniform(0.2, 1.2), 2),
                spoken=say,
                beep=tone,
                noise=rng.choice(("whitenoise", "pinknoise", "brownnoise")),
                noise_db=rng.uniform(-32, -24) if noisy else rng.uniform(-60, -45),
                tail=1.0 if say is not None else round(rng.uniform(14.0, 20.0), 1),
                text=" / ".join(say.utterances) if say else "",
            )
        )

    for _ in range(25):  # short hellos, a name, "who's this?"
        add("human", spoken([rng.choice(_HUMAN_SHORT)]))
    for _ in range(10):  # long hellos with a pause
        first, second = rng.choice(_HUMAN_PAUSED)
        add("human", spoken([first, second], [round(rng.uniform(1.2, 2.5), 2)]))
    for _ in range(10):  # background noise
        add("human", spoken([rng.choice(_HUMAN_SHORT)]), noisy=True)
    for templates, count in (
        (_VOICEMAIL_SHORT, 15),
        (_VOICEMAIL_LONG, 20),
        (_VOICEMAIL_CARRIER, 20),
    ):
        for _ in range(count):
            add("voicemail", spoken([rng.choice(templates)]), beep=rng.random() < 0.7)
    for _ in range(20):
        add("screener", spoken([rng.choice(_SCREENER)]))
    for _ in range(20):
        add("ivr", spoken([rng.choice(_IVR)]))
    for _ in range(20):
        add("silence", None, noisy=rng.random() < 0.3)
    return out


def generate(directory: Path, seed: int = SEED) -> list[Label]:
    """Write the corpus into `directory` (clips and labels.csv); returns the labels.

    Cheap when the directory already holds this corpus (a stamp records what made it).
    """
    directory.mkdir(parents=True, exist_ok=True)
    clips = specs(seed)
    digest = hashlib.sha256(
        json.dumps([asdict(c) for c in clips], sort_keys=True).encode()
    ).hexdigest()
    stamp = directory / ".corpus-stamp"
    if (
        stamp.exists()
        and stamp.read_text().strip() == digest
        and (directory / LABELS_FILE).exists()
    ):
        return read_labels(directory)
    labels = [_render(directory, clip) for clip in clips]
    write_labels(directory, labels)
    stamp.write_text(digest + "\n")
    return labels


def write_labels(directory: Path, labels: Iterable[Label]) -> None:
    with (directory / LABELS_FILE).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["clip", "class", "speech_end", "beep_start", "beep_end", "text"])
        for row in labels:
            writer.writerow(
                [
                    row.clip,
                    row.label,
                    _fmt(row.speech_end),
                    _fmt(row.beep_start),
                    _fmt(row.beep_end),
                    row.text,
                ]
            )


def read_labels(directory: Path) -> list[Label]:
    """The rows of `directory/labels.csv`; a clear error for a missing file or a bad row."""
    path = directory / LABELS_FILE
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise DevstackError(f"no corpus labels at {path}: {exc.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"clip", "class"} <= set(reader.fieldnames):
            raise DevstackError(f"{path}: the header must name at least the columns clip,class")
        labels = []
        for line, row in enumerate(reader, start=2):
            clip, label = (row.get("clip") or "").strip(), (row.get("class") or "").strip()
            if label not in CLASSES:
                raise DevstackError(
                    f"{path}:{line}: class {label!r} is not one of {', '.join(CLASSES)}"
                )
            if not (directory / clip).is_file():
                raise DevstackError(f"{path}:{line}: clip {clip!r} is not a file in {directory}")
            try:
                labels.append(
                    Label(
                        clip=clip,
                        label=label,
                        speech_end=_opt_float(row.get("speech_end")),
                        beep_start=_opt_float(row.get("beep_start")),
                        beep_end=_opt_float(row.get("beep_end")),
                        text=row.get("text") or "",
                    )
                )
            except ValueError as exc:
                raise DevstackError(f"{path}:{line}: {exc}") from None
    if len(labels) > MAX_CLIPS:
        raise DevstackError(f"{path}: {len(labels)} clips; the corpus phones take {MAX_CLIPS}")
    return labels


def clip_seconds(path: Path) -> float:
    """Length of a WAV file."""
    with wave.open(str(path), "rb") as handle:
        return handle.getnframes() / handle.getframerate()


def _render(directory: Path, clip: ClipSpec) -> Label:
    with tempfile.TemporaryDirectory(prefix="corpus-") as scratch:
        tmp = Path(scratch)
        parts: list[Path] = [_silence(tmp / "lead.wav", clip.lead)]
        at = clip.lead
        speech_end: float | None = None
        if clip.spoken is not None:
            say = clip.spoken
            for i, text in enumerate(say.utterances):
                raw, piece = tmp / f"u{i}-raw.wav", tmp / f"u{i}.wav"
                _run(
                    [
                        *("espeak-ng", "-v", say.voice, "-s", str(say.rate), "-p", str(say.pitch)),
                        *("-w", str(raw), text),
                    ]
                )
                # espeak-ng pads its output with silence: trim it so speech_end is speech
                _run(
                    [
                        *("sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(piece)),
                        *_TRIM_SILENCE,
                    ]
                )
                parts.append(piece)
                at += clip_seconds(piece)
                speech_end = at
                if i < len(say.pauses):
                    parts.append(_silence(tmp / f"p{i}.wav", say.pauses[i]))
                    at += say.pauses[i]
        beep_start = beep_end = None
        if clip.beep is not None:
            gap, hz, seconds = clip.beep
            parts.append(_silence(tmp / "gap.wav", gap))
            beep = tmp / "beep.wav"
            _run(
                [
                    *("sox", "-n", "-r", str(RATE), "-c", "1", "-b", "16", str(beep)),
                    *("synth", str(seconds), "sine", str(hz), "vol", "0.4"),
                ]
            )
            parts.append(beep)
            beep_start = at + gap
            beep_end = beep_start + seconds
            at = beep_end
        parts.append(_silence(tmp / "tail.wav", clip.tail))
        body = tmp / "body.wav"
        _run(["sox", *map(str, parts), str(body)])
        total = clip_seconds(body)
        noise = tmp / "noise.wav"
        _run(
            [
                *("sox", "-R", "-n", "-r", str(RATE), "-c", "1", "-b", "16", str(noise)),
                *("synth", f"{total:.3f}", clip.noise, "gain", f"{clip.noise_db:.1f}"),
            ]
        )
        mixed = tmp / clip.name
        # the line: speech and noise together, then the telephone band
        _run(
            [
                "sox",
                "-m",
                "-v",
                "1",
                str(body),
                "-v",
                "1",
                str(noise),
                str(mixed),
                "sinc",
                "300-3400",
            ]
        )
        mixed.replace(directory / clip.name)
    return Label(
        clip=clip.name,
        label=clip.label,
        speech_end=_round(speech_end),
        beep_start=_round(beep_start),
        beep_end=_round(beep_end),
        text=clip.text,
    )


def _silence(path: Path, seconds: float) -> Path:
    _run(
        [
            "sox",
            "-n",
            "-r",
            str(RATE),
            "-c",
            "1",
            "-b",
            "16",
            str(path),
            "trim",
            "0",
            f"{seconds:.3f}",
        ]
    )
    return path


def _run(cmd: list[str]) -> None:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise DevstackError(
            f"making the corpus needs {cmd[0]} (python -m devstack install)"
        ) from None
    if result.returncode != 0:
        raise DevstackError(f"making the corpus failed: {cmd[0]}: {result.stderr.strip()}")


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _opt_float(text: str | None) -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
