"""What the phones say: speech from espeak-ng, laid out with sox as 8 kHz mu-law.

sipp's `rtp_stream` sends a file's bytes as they are, so each file is raw mu-law
(payload type 0, PCMU) with no header. Speech is padded with silence so RTP keeps
flowing while a phone listens, as a real phone's does.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from devstack import config
from devstack.errors import DevstackError


@dataclass(frozen=True)
class Speech:
    """A phrase, then a pause (seconds)."""

    text: str
    pause: float


@dataclass(frozen=True)
class Tone:
    """A sine beep (Hz, seconds), then a pause (seconds)."""

    hz: int
    seconds: float
    pause: float


Segment = Speech | Tone

#: File name -> (leading silence, segments). The silence after the last segment is
#: how long the phone keeps sending RTP; the scenario decides when it hangs up.
RECORDINGS: dict[str, tuple[float, tuple[Segment, ...]]] = {
    "talk.ulaw": (
        1.0,
        (
            Speech("Hello?", 2.0),
            Speech("Yes, I am interested. Please call me tomorrow.", 65.0),
        ),
    ),
    "hangup.ulaw": (0.5, (Speech("Hello? Sorry, I can't talk right now.", 15.0),)),
    "machine.ulaw": (
        0.5,
        (
            Speech(
                "Hi, you have reached the voicemail of Alex Morgan. I can't take your call "
                "right now. Please leave your name, number and a short message after the "
                "tone, and I will get back to you as soon as I can.",
                0.5,
            ),
            Tone(1000, 0.6, 40.0),
        ),
    ),
}

RATE = 8000


def audio_file(name: str) -> Path:
    """Path of a generated recording (see RECORDINGS)."""
    return config.AUDIO_DIR / name


def generate() -> None:
    """Write every recording that is missing or out of date (cheap when all exist)."""
    config.AUDIO_DIR.mkdir(parents=True, exist_ok=True)
    stamp_file = config.AUDIO_DIR / "recordings.json"
    try:
        stamps = json.loads(stamp_file.read_text())
    except (OSError, ValueError):
        stamps = {}
    for name, (lead, segments) in RECORDINGS.items():
        digest = hashlib.sha256(repr((lead, segments, RATE)).encode()).hexdigest()
        if stamps.get(name) == digest and audio_file(name).exists():
            continue
        _render(audio_file(name), lead, segments)
        stamps[name] = digest
    stamp_file.write_text(json.dumps(stamps, indent=2, sort_keys=True) + "\n")


def _render(out: Path, lead: float, segments: tuple[Segment, ...]) -> None:
    with tempfile.TemporaryDirectory(dir=config.AUDIO_DIR) as tmp:
        parts = [_silence(Path(tmp), 0, lead)]
        for i, segment in enumerate(segments, start=1):
            piece = Path(tmp) / f"{i}.wav"
            if isinstance(segment, Speech):
                raw = Path(tmp) / f"{i}-espeak.wav"
                _run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), segment.text])
                _run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(piece)])
            else:
                tone = ["synth", str(segment.seconds), "sine", str(segment.hz), "vol", "0.5"]
                _run(["sox", "-n", "-r", str(RATE), "-c", "1", "-b", "16", str(piece), *tone])
            parts += [piece, _silence(Path(tmp), i, segment.pause)]
        tmp_out = Path(tmp) / out.name
        _run(["sox", *map(str, parts), "-t", "ul", "-r", str(RATE), "-c", "1", str(tmp_out)])
        tmp_out.replace(out)


def _silence(tmp: Path, index: int, seconds: float) -> Path:
    path = tmp / f"silence-{index}.wav"
    _run(
        ["sox", "-n", "-r", str(RATE), "-c", "1", "-b", "16", str(path), "trim", "0", str(seconds)]
    )
    return path


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DevstackError(f"making phone audio failed: {cmd[0]}: {result.stderr.strip()}")
