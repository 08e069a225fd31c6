"""The corpus phones: a second sipp UAS that plays any clip of a labelled corpus.

It sits behind its own LiveKit outbound trunk (`DEVSTACK_CORPUS_TRUNK_ID`) on its
own ports, beside the seven-behaviour phones. A call to `corpus.number_for_clip(N)`
(+1 212 737 NNNN) is answered, hears clip N (the N-th row of the corpus's
`labels.csv`), then silence, and the phone hangs up `HOLD_S` after the clip ends
unless the far end hangs up first. Unknown numbers get 404.

sipp 3.6 reads every `rtp_stream` file when it loads the scenario and takes no
variables in the file name, so the scenario is generated from the labels file:
one branch per clip, picked by a regular expression on the dialed number.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devstack import config, corpus
from devstack.errors import DevstackError

TEMPLATE_FILE = Path(__file__).resolve().parent / "corpus-phones.xml.in"

#: How long a phone stays on the line after its clip, unless hung up on.
HOLD_S = 12.0
#: sipp 3.6's XML reader takes files up to 64 KiB (XP_MAX_FILE_LEN): about 240 clips.
SIPP_MAX_SCENARIO_BYTES = 65535
#: Silence sent after the clip (RTP keeps flowing while the phone listens).
PAD_S = HOLD_S + 5.0


@dataclass(frozen=True)
class CorpusEvent:
    """One line of the corpus phones' log."""

    timestamp: float  #: seconds since the epoch
    lk_call_id: str  #: LiveKit's call id (the From tag)
    dialed: str
    clip: int  #: 1-based row of labels.csv (0 for an unknown number)
    event: str  #: received, answered, bye_received, bye_sent, rejected


def source() -> Path:
    """The corpus the phones play: the one `serve_corpus` named last while it still has
    its labels file, else the generated one (so a deleted folder never stops `up`)."""
    try:
        named = Path(config.CORPUS_SOURCE_FILE.read_text().strip())
    except OSError:
        return config.CORPUS_DIR
    return named if (named / corpus.LABELS_FILE).is_file() else config.CORPUS_DIR


def set_source(directory: Path) -> None:
    config.RUN_DIR.mkdir(parents=True, exist_ok=True)
    config.CORPUS_SOURCE_FILE.write_text(f"{directory.resolve()}\n")


def prepare() -> None:
    """Audio and scenario for the current source (the generated corpus made if missing)."""
    directory = source()
    if directory == config.CORPUS_DIR:
        corpus.generate(directory)
    labels = corpus.read_labels(directory)
    config.CORPUS_AUDIO_DIR.mkdir(parents=True, exist_ok=True)
    stamp_file = config.CORPUS_AUDIO_DIR / "clips.json"
    try:
        stamps = json.loads(stamp_file.read_text())
    except (OSError, ValueError):
        stamps = {}
    lengths: list[float] = []
    for index, label in enumerate(labels, start=1):
        clip = directory / label.clip
        stat = clip.stat()
        key = f"{index:04d}.ulaw"
        digest = hashlib.sha256(
            f"{clip.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{PAD_S}".encode()
        ).hexdigest()
        if stamps.get(key) != digest or not (config.CORPUS_AUDIO_DIR / key).exists():
            _to_ulaw(clip, config.CORPUS_AUDIO_DIR / key)
            stamps[key] = digest
        lengths.append(corpus.clip_seconds(clip))
    stamp_file.write_text(json.dumps(stamps, indent=2, sort_keys=True) + "\n")
    scenario = scenario_xml(lengths)
    if (
        not config.CORPUS_SCENARIO_FILE.exists()
        or config.CORPUS_SCENARIO_FILE.read_text() != scenario
    ):
        config.CORPUS_SCENARIO_FILE.write_text(scenario)


def log_path() -> Path:
    return config.PHONES_DIR / "corpus-phones.log"


def read_log(lk_call_id: str | None = None, path: Path | None = None) -> list[CorpusEvent]:
    """The corpus phones' log, oldest first, optionally for one call."""
    try:
        text = (path or log_path()).read_text(errors="replace")
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) != 5:
            continue
        stamp, _call_id, lk_call, dialed, event = fields
        clip = dialed[-4:] if dialed.lstrip("+").startswith(corpus.NUMBER_PREFIX[1:]) else "0"
        if lk_call_id is not None and lk_call != lk_call_id:
            continue
        try:
            events.append(
                CorpusEvent(
                    timestamp=float(stamp.split("\t")[-1]),
                    lk_call_id=lk_call,
                    dialed=dialed,
                    clip=int(clip),
                    event=event.strip(),
                )
            )
        except ValueError:
            continue
    return events


def _to_ulaw(clip: Path, out: Path) -> None:
    tmp = out.with_suffix(".tmp")
    cmd = ["sox", str(clip), "-r", "8000", "-c", "1", "-t", "ul", str(tmp), "pad", "0", f"{PAD_S}"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise DevstackError(f"corpus phones: cannot convert {clip}: {result.stderr.strip()}")
    tmp.replace(out)


def scenario_xml(lengths: list[float]) -> str:
    """The sipp scenario for clips of these lengths (seconds), clip 1 first."""
    prefix = corpus.NUMBER_PREFIX.lstrip("+")
    clips = list(enumerate(lengths, start=1))
    match = "\n".join(
        f'      <ereg regexp="{prefix}{i:04d}@" search_in="msg" check_it="false" assign_to="c{i}"/>'
        for i, _ in clips
    )
    route = "\n".join(f'  <nop next="p{i}" test="c{i}"/>' for i, _ in clips)
    plays = "\n".join(
        f'  <label id="p{i}"/><nop><action><exec rtp_stream="{i:04d}.ulaw,1,0"/></action></nop>'
        f'<recv request="BYE" timeout="{int((length + HOLD_S) * 1000)}" ontimeout="bye_send"'
        ' next="bye_received"/>'
        for i, length in clips
    )
    text = TEMPLATE_FILE.read_text().format(match=match, route=route, plays=plays)
    if len(text.encode()) > SIPP_MAX_SCENARIO_BYTES:
        raise DevstackError(
            f"a corpus of {len(lengths)} clips is more than one sipp scenario can hold "
            f"({SIPP_MAX_SCENARIO_BYTES} bytes); split it"
        )
    return text
