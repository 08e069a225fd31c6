"""The AMD corpus: its plan, its labels file, and the corpus phones' scenario."""

from __future__ import annotations

import wave
import xml.dom.minidom
from collections import Counter
from pathlib import Path

import pytest

from devstack import DevstackError, config, corpus, corpus_phones

pytestmark = pytest.mark.unit


def test_the_plan_has_150_clips_or_more_over_the_five_classes() -> None:
    clips = corpus.specs()
    counts = Counter(c.label for c in clips)
    assert len(clips) >= 150
    assert set(counts) == set(corpus.CLASSES)
    assert all(n >= 20 for n in counts.values())
    assert len({c.name for c in clips}) == len(clips)
    beeps = [c for c in clips if c.beep is not None]
    assert beeps and all(c.label == "voicemail" for c in beeps)
    assert any(c.label == "voicemail" and c.beep is None for c in clips)
    assert corpus.specs() == clips  # the same seed makes the same corpus


def test_clip_numbers_index_the_labels_file() -> None:
    assert corpus.number_for_clip(1) == "+12127370001"
    assert corpus.number_for_clip(160) == "+12127370160"
    with pytest.raises(ValueError):
        corpus.number_for_clip(0)


def write_clip(path: Path, seconds: float = 0.5) -> None:
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(8000)
        handle.writeframes(b"\0\0" * round(8000 * seconds))


def test_labels_round_trip_and_a_foreign_corpus_needs_two_columns(tmp_path: Path) -> None:
    write_clip(tmp_path / "a.wav")
    write_clip(tmp_path / "b.wav")
    labels = [
        corpus.Label("a.wav", "voicemail", speech_end=2.5, beep_start=3.0, beep_end=3.4),
        corpus.Label("b.wav", "silence"),
    ]
    corpus.write_labels(tmp_path, labels)
    assert corpus.read_labels(tmp_path) == labels
    (tmp_path / corpus.LABELS_FILE).write_text("clip,class\nb.wav,human\n")
    assert corpus.read_labels(tmp_path) == [corpus.Label("b.wav", "human")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("clip,label\na.wav,human\n", "clip,class"),
        ("clip,class\na.wav,robot\n", "labels.csv:2: class 'robot' is not one of"),
        ("clip,class\nmissing.wav,human\n", "labels.csv:2: clip 'missing.wav' is not a file"),
        ("clip,class,speech_end\na.wav,human,soon\n", "'soon' is not a number of seconds"),
    ],
)
def test_a_bad_labels_file_gets_one_clear_line(tmp_path: Path, content: str, message: str) -> None:
    write_clip(tmp_path / "a.wav")
    (tmp_path / corpus.LABELS_FILE).write_text(content)
    with pytest.raises(DevstackError, match=message.replace("(", r"\(")) as caught:
        corpus.read_labels(tmp_path)
    assert "\n" not in str(caught.value)


def test_no_labels_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DevstackError, match="no corpus labels at"):
        corpus.read_labels(tmp_path)


def test_the_scenario_has_one_branch_per_clip_and_fits_sipp() -> None:
    text = corpus_phones.scenario_xml([2.0] * 160)
    xml.dom.minidom.parseString(text.encode())  # well formed
    assert len(text.encode()) <= corpus_phones.SIPP_MAX_SCENARIO_BYTES
    assert text.count('exec rtp_stream="') == 160
    assert 'rtp_stream="0160.ulaw,1,0"' in text
    assert 'timeout="14000"' in text  # the clip's 2 s, then HOLD_S
    with pytest.raises(DevstackError, match="more than one sipp scenario can hold"):
        corpus_phones.scenario_xml([2.0] * 400)


def test_the_log_names_the_clip_of_each_call(tmp_path: Path) -> None:
    log = tmp_path / "corpus-phones.log"
    log.write_text(
        "2026-12-01\t10:00:00.1\t1796119200.100000|cid@x|SCL_abc|+12127370042|answered\n"
        "garbage line\n"
        "2026-12-01\t10:00:05.1\t1796119205.100000|cid@x|SCL_abc|12127370042|bye_received\n"
    )
    events = corpus_phones.read_log(lk_call_id="SCL_abc", path=log)
    assert [(e.clip, e.event) for e in events] == [(42, "answered"), (42, "bye_received")]
    assert events[0].timestamp == pytest.approx(1796119200.1)


def test_the_phones_fall_back_to_the_generated_corpus_when_theirs_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "RUN_DIR", tmp_path / "run")
    monkeypatch.setattr(config, "CORPUS_SOURCE_FILE", tmp_path / "run" / "corpus-source")
    assert corpus_phones.source() == config.CORPUS_DIR
    mine = tmp_path / "mine"
    mine.mkdir()
    write_clip(mine / "a.wav")
    corpus.write_labels(mine, [corpus.Label("a.wav", "human")])
    corpus_phones.set_source(mine)
    assert corpus_phones.source() == mine.resolve()
    (mine / corpus.LABELS_FILE).unlink()
    assert corpus_phones.source() == config.CORPUS_DIR
