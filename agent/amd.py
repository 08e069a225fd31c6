"""Answering-machine detection: who answered, judged in the first seconds of the call.

Five classes (`campaign.outcomes.AmdResult`): human, voicemail, screener, ivr and
silence. The verdict rests on what the session already measures: how long the
callee spoke before the first pause (its VAD) and the words of that greeting (its
STT). A person answering says a few words and waits; a machine speaks on, and its
words say which machine it is, weighed with two weak signals: a key named, and a
beep ending the greeting (heard in the audio, so no misheard word fakes it). The
mailbox's beep is found in the raw audio (`BeepDetector`), so the voicemail message
starts after it.

`classify_greeting` and `BeepDetector` are pure and unit-tested; the
`AnsweringMachineDetector` wires them to one call's session and audio track.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice.events import UserInputTranscribedEvent, UserStateChangedEvent

from agent.local.vocabulary import (
    IVR_PHRASES,
    KEY_NAMES,
    MACHINE_PHRASES,
    PERSON_PHRASES,
    SCREENER_PHRASES,
    UNAVAILABLE_PHRASES,
    VOICEMAIL_PHRASES,
    contains_phrase,
)
from campaign.outcomes import AmdResult

logger = logging.getLogger(__name__)

#: Speech before the first pause up to this long is a person, unless its words say
#: otherwise (a person answering says "Hello?" or their name and waits).
HUMAN_MAX_SPEECH_S = 1.8
#: A greeting up to this long that says a person's words ("Hello? Sorry, I can't talk
#: right now.") is a person when no machine words or beep say otherwise: length alone
#: does not make it a machine (a busy CPU stretches the pauses the VAD sees).
PERSON_MAX_SPEECH_S = 3.5
#: A greeting this long that neither beeps nor says a mailbox's (or any class's) words is
#: a menu or an announcement, not a mailbox: mailboxes ask for the message or beep.
UNNAMED_MENU_FROM_S = 6.0
#: Below this, no words make it a machine (a misheard "Hello" is still a person).
WORDS_DECIDE_FROM_S = 1.3
#: Distinct machine phrases that make a short greeting a machine.
MACHINE_CUES = 2
#: What a key named ("press one") scores for a menu: a number read out names keys too.
KEY_CUE = 0.5
#: The session's VAD reports the end of speech after this much silence (Silero's
#: default min_silence_duration); it is taken off the measured speech.
VAD_SILENCE_S = 0.55
#: Shorter bursts with no words are line noise, not speech.
MIN_SPEECH_S = 0.25
#: The STT's final transcript follows the VAD's end of speech once the utterance is
#: decoded: allow this much, plus a share of the utterance's length.
TRANSCRIPT_WAIT_S = 1.5
TRANSCRIPT_WAIT_PER_SPEECH_S = 0.4
#: A machine's greeting is over once it has been quiet this long (speech ends at a
#: pause of VAD_SILENCE_S, but recorded greetings pause between sentences too).
MACHINE_SILENCE_S = 1.0
#: A beep is evidence of a mailbox when it lasts this long (mailbox beeps last 0.3-1 s;
#: a sung vowel can pass for a shorter tone) and ends the greeting: nothing but this
#: much of its own tail after it.
BEEP_CUE_MIN_S = 0.25
BEEP_LAST_S = 0.35
#: No audio arriving for this long is quiet, not a lagging stream: a far end may stop
#: sending once its greeting has played. A stall on a loaded machine is shorter, but
#: not by much: one of 2 s in CI hid a mailbox's beep, which came 0.4 s after it.
AUDIO_GONE_S = 3.0
#: Nobody has spoken this long after the answer (or the agent's prompt): silence.
NO_SPEECH_S = 3.5
#: A greeting still going this long after listening began is a machine. Counted in
#: the audio received while it arrives (a loaded CPU delivers it seconds late, and a
#: greeting judged before its end is judged without its beep), up to VERDICT_LAG_S
#: more of the clock.
VERDICT_MAX_S = 20.0
VERDICT_LAG_S = 10.0
_TICK_S = 0.02
#: the callee's audio as the detector reads it: the telephone band is all there is
AUDIO_RATE = 8000


@dataclass(frozen=True)
class Verdict:
    """What answered, when it was known (time.time()) and why."""

    result: AmdResult
    at: float
    reason: str
    #: False for a mailbox that says it takes no messages
    accepts_message: bool = True


def _cues(text: str, phrases: tuple[str, ...]) -> list[str]:
    """The phrases heard, leaving out those inside a longer one heard ("the tone" in
    "at the tone"), so one phrase counts once."""
    heard = [p for p in phrases if contains_phrase(text, p)]
    return [p for p in heard if not any(p != q and contains_phrase(q, p) for q in heard)]


_KEY = re.compile(r"\b(?:" + "|".join((*KEY_NAMES, "[0-9]")) + r")\b")


def classify_greeting(
    transcript: str, speech_s: float, *, beep: bool = False, words_known: bool = True
) -> tuple[AmdResult, str]:
    """What answered, from the words heard, the seconds of speech before a pause and
    whether a beep followed the greeting. `words_known=False`: the transcript of the
    last speech is still to come, so naming nothing is no evidence of a menu.

    Length says person or machine; each class's phrases heard score the machine
    classes, with two weak signals beside them: a key named ("one", "9") is half a cue
    for a menu, and a beep counts as MACHINE_CUES cues for a mailbox (menus and
    screeners do not beep before they listen). Phrases any machine says ("you have
    reached") make a machine without choosing one.
    """
    if _cues(transcript, UNAVAILABLE_PHRASES):
        return AmdResult.VOICEMAIL, "a mailbox that takes no messages"
    person = _cues(transcript, PERSON_PHRASES)

    def cues(phrases: tuple[str, ...]) -> list[str]:
        # "can't talk" inside a person's "can't talk right now" is not a mailbox's
        return [
            c for c in _cues(transcript, phrases) if not any(contains_phrase(p, c) for p in person)
        ]

    found = {
        AmdResult.IVR: cues(IVR_PHRASES),
        AmdResult.SCREENER: cues(SCREENER_PHRASES),
        AmdResult.VOICEMAIL: cues(VOICEMAIL_PHRASES),
    }
    machine = cues(MACHINE_PHRASES)
    machine_cues = max(len(cues) for cues in found.values()) + len(machine)
    if speech_s < WORDS_DECIDE_FROM_S or (
        speech_s < HUMAN_MAX_SPEECH_S and machine_cues < MACHINE_CUES
    ):
        return AmdResult.HUMAN, f"{speech_s:.1f} s of speech, then a pause"
    if person and not beep and speech_s < PERSON_MAX_SPEECH_S and machine_cues < MACHINE_CUES:
        said = ", ".join(repr(p) for p in person)
        return AmdResult.HUMAN, f"{speech_s:.1f} s of speech; a person's words: {said}"
    score = {result: float(len(cues)) for result, cues in found.items()}
    keys = _KEY.findall(transcript.lower())
    if keys:
        score[AmdResult.IVR] += KEY_CUE
    if beep:
        score[AmdResult.VOICEMAIL] += MACHINE_CUES
    strongest = max(score.values())
    if strongest == 0:
        heard = f"; heard {', '.join(repr(c) for c in machine)}" if machine else ""
        if speech_s >= UNNAMED_MENU_FROM_S and words_known:
            return AmdResult.IVR, f"{speech_s:.1f} s of speech, no beep, no mailbox words{heard}"
        return AmdResult.VOICEMAIL, f"{speech_s:.1f} s of speech without a pause{heard}"
    # ties go to the class with the more specific phrases: a menu, then a screener
    result = next(r for r, points in score.items() if points == strongest)
    evidence = [repr(c) for c in (*machine, *found[result])]
    if result is AmdResult.IVR and keys:
        evidence.append(f"key {keys[0]!r}")
    if result is AmdResult.VOICEMAIL and beep:
        evidence.append("a beep")
    return result, f"{speech_s:.1f} s of speech; heard " + ", ".join(evidence)


def accepts_message(transcript: str) -> bool:
    """False when the greeting says the mailbox cannot take a message."""
    return not _cues(transcript, UNAVAILABLE_PHRASES)


class BeepDetector:
    """Finds a mailbox beep: a steady pure tone (300-3000 Hz) of at least `min_s`.

    Audio is cut into 40 ms windows every 20 ms; a window is tonal when nearly all its
    energy sits within +-60 Hz of one peak (speech spreads its energy over harmonics).
    `push` returns the end of a beep (seconds of audio pushed so far) once the tone stops.
    """

    WINDOW_S = 0.04
    HOP_S = 0.02
    #: share of a window's energy near its peak that makes it tonal
    PURITY = 0.8
    #: quieter windows (RMS, 16-bit) are not judged at all
    MIN_RMS = 150.0
    BAND_HZ = (300.0, 3000.0)
    PEAK_HALF_WIDTH_HZ = 60.0
    MAX_DRIFT_HZ = 30.0

    def __init__(self, sample_rate: int, *, min_s: float = 0.16) -> None:
        self.sample_rate = sample_rate
        self._window = round(self.WINDOW_S * sample_rate)
        self._hop = round(self.HOP_S * sample_rate)
        self._fft = 1 << (self._window * 4 - 1).bit_length()  # zero-padded: finer peaks
        self._taper = np.hanning(self._window)
        freqs = np.fft.rfftfreq(self._fft, 1.0 / sample_rate)
        self._freqs = freqs
        self._band = (freqs >= self.BAND_HZ[0] - 100) & (freqs <= self.BAND_HZ[1] + 300)
        self._min_windows = max(1, round((min_s - self.WINDOW_S) / self.HOP_S) + 1)
        self._buffer = np.zeros(0, dtype=np.float64)
        #: seconds of audio pushed so far
        self.pushed_s = 0.0
        self._consumed = 0  #: samples dropped from the buffer's front
        self._run = 0
        self._run_start = 0.0
        self._run_hz = 0.0
        #: (start, end, Hz) of every beep found, in seconds of audio
        self.beeps: list[tuple[float, float, float]] = []

    def push(self, samples: np.ndarray) -> tuple[float, float, float] | None:
        """Feed 16-bit mono samples; returns (start, end, Hz) of a beep that just ended."""
        self._buffer = np.concatenate([self._buffer, samples.astype(np.float64)])
        self.pushed_s += len(samples) / self.sample_rate
        ended = None
        while len(self._buffer) >= self._window:
            at = self._consumed / self.sample_rate
            hz = self._tone(self._buffer[: self._window])
            if hz is not None and (self._run == 0 or abs(hz - self._run_hz) <= self.MAX_DRIFT_HZ):
                if self._run == 0:
                    self._run_start = at
                self._run += 1
                self._run_hz = hz
            else:
                ended = self._close(at) or ended
                if hz is not None:  # a new tone right after another one
                    self._run, self._run_start, self._run_hz = 1, at, hz
            self._buffer = self._buffer[self._hop :]
            self._consumed += self._hop
        return ended

    def _close(self, at: float) -> tuple[float, float, float] | None:
        beep = None
        if self._run >= self._min_windows:
            # the tone stopped somewhere in the last window's second half
            beep = (self._run_start, at + self.WINDOW_S - self.HOP_S, self._run_hz)
            self.beeps.append(beep)
        self._run = 0
        return beep

    def _tone(self, window: np.ndarray) -> float | None:
        if float(np.sqrt(np.mean(window**2))) < self.MIN_RMS:
            return None
        power = np.abs(np.fft.rfft(window * self._taper, self._fft)) ** 2
        power[~self._band] = 0.0
        total = float(power.sum())
        if total <= 0.0:
            return None
        peak = int(np.argmax(power))
        hz = float(self._freqs[peak])
        if not self.BAND_HZ[0] <= hz <= self.BAND_HZ[1]:
            return None
        near = np.abs(self._freqs - hz) <= self.PEAK_HALF_WIDTH_HZ
        return hz if float(power[near].sum()) / total >= self.PURITY else None


class SpeechMeter:
    """How long the callee spoke, measured in the audio itself (not in event times, which
    lag when the CPU is busy): 20 ms frames louder than the line's noise floor, joined
    across gaps shorter than `HANGOVER_S`.

    The floor is a low percentile of the last few seconds of frames: words have gaps,
    so it stays at the line's noise through a long greeting; digital silence (before
    the far end sends audio) tells nothing about the line and is left out.
    """

    FRAME_S = 0.02
    #: a frame this far above the noise floor (and above MIN_DBFS) is speech
    ABOVE_FLOOR_DB = 6.0
    MIN_DBFS = -50.0
    HANGOVER_S = 0.3
    FLOOR_WINDOW_S = 3.0
    FLOOR_PERCENTILE = 10.0
    #: quieter than this is digital silence, not a line
    DIGITAL_SILENCE_DBFS = -85.0

    def __init__(self, sample_rate: int) -> None:
        self._frame = round(self.FRAME_S * sample_rate)
        self._buffer = np.zeros(0, dtype=np.float64)
        self._recent: deque[float] = deque(maxlen=round(self.FLOOR_WINDOW_S / self.FRAME_S))
        self.pushed_s = 0.0
        #: [start, end] of each stretch of speech, in seconds of audio
        self.regions: list[list[float]] = []

    def push(self, samples: np.ndarray) -> None:
        self._buffer = np.concatenate([self._buffer, samples.astype(np.float64)])
        while len(self._buffer) >= self._frame:
            frame, self._buffer = self._buffer[: self._frame], self._buffer[self._frame :]
            rms = float(np.sqrt(np.mean(frame**2)))
            db = 20.0 * float(np.log10(rms / 32768.0 + 1e-9))
            at = self.pushed_s
            self.pushed_s += self.FRAME_S
            if db < self.DIGITAL_SILENCE_DBFS:
                continue
            self._recent.append(db)
            floor = float(np.percentile(self._recent, self.FLOOR_PERCENTILE))
            if len(self._recent) < 5 or db < max(self.MIN_DBFS, floor + self.ABOVE_FLOOR_DB):
                continue
            if self.regions and at - self.regions[-1][1] <= self.HANGOVER_S:
                self.regions[-1][1] = self.pushed_s
            else:
                self.regions.append([at, self.pushed_s])

    def speech_s(self, since: float) -> float:
        """Seconds of speech from `since` (seconds of audio) on."""
        return sum(max(0.0, end - max(start, since)) for start, end in self.regions)


class AnsweringMachineDetector:
    """Judges one call: listens to the session's VAD and STT and to the callee's audio.

    `start(answered_at)` begins a listening window; `verdict()` waits for the judgement
    of that window. `listen_again()` opens a new window (after the agent's prompt or its
    answer to a screener). Beeps are heard from `listen_to()` on, for the whole call.
    """

    def __init__(self, session: AgentSession[Any], *, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._changed = asyncio.Event()
        self._window_start: float | None = None
        self._speaking_since: float | None = None
        #: speech in this window (seconds): measured in the audio, or failing that from
        #: the VAD's events
        self._speech_s = 0.0
        self._vad_speech_s = 0.0
        self._heard: list[str] = []
        self._segment_ended_at: float | None = None
        self._transcribed = False
        #: the greeting already sounds like a machine: judge it once it is over
        self._machine = False
        #: the last pause the audio showed that was judged (time.time())
        self._pause_seen = 0.0
        #: the VAD heard speech in this window
        self._heard_any = False
        #: the judged utterance's transcript is still to come, and what waits for it
        self._transcript_due = False
        self._after_transcript: list[Callable[[], None]] = []
        self._last_speech_end: float | None = None
        #: (end as time.time(), seconds) of each beep heard
        self._beeps_heard: list[tuple[float, float]] = []
        self._meter: SpeechMeter | None = None
        self._beeps = BeepDetector(AUDIO_RATE)
        #: wall clock of the audio's second 0: the earliest (least delayed) frame's arrival
        #: less the audio before it
        self._audio_epoch: float | None = None
        #: when the last frame of the callee's audio arrived (the clock's time)
        self._heard_at = 0.0
        self._audio_task: asyncio.Task[None] | None = None
        session.on("user_state_changed", self._on_user_state)
        session.on("user_input_transcribed", self._on_transcript)

    @property
    def heard(self) -> str:
        """The words of the current listening window."""
        return " ".join(self._heard)

    def after_transcript(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the judged utterance's transcript is in: at once if it is,
        else right after the session has taken it in (bounded by TRANSCRIPT_WAIT_S)."""
        loop = asyncio.get_running_loop()
        if not self._transcript_due:
            loop.call_soon(callback)
            return
        self._after_transcript.append(callback)
        loop.call_later(TRANSCRIPT_WAIT_S, self._release_waiters)

    def _release_waiters(self) -> None:
        self._transcript_due = False
        waiting, self._after_transcript = self._after_transcript, []
        for callback in waiting:
            callback()

    def listen_to(self, participant: rtc.RemoteParticipant) -> None:
        """Watch the callee's audio for speech and beeps (until `aclose`)."""
        self._audio_task = asyncio.create_task(self._read_audio(participant))

    async def aclose(self) -> None:
        if self._audio_task is not None:
            self._audio_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._audio_task

    def start(self, at: float) -> None:
        """Open a listening window at `at` (time.time(): the answer, or the end of a prompt)."""
        self._window_start = at
        self._speech_s = 0.0
        self._vad_speech_s = 0.0
        self._heard = []
        self._segment_ended_at = None
        self._transcribed = False
        self._machine = False
        self._heard_any = self.speaking
        if self._speaking_since is not None:
            self._speaking_since = max(self._speaking_since, at)
        self._changed.set()

    def listen_again(self) -> None:
        self.start(self._clock())

    @property
    def speaking(self) -> bool:
        return self._speaking_since is not None

    @property
    def quiet_since(self) -> float | None:
        """When the callee last stopped speaking (None while speaking or if never heard)."""
        return None if self.speaking else self._last_speech_end

    async def verdict(self) -> Verdict:
        """The judgement of the current listening window."""
        start = self._window_start
        if start is None:
            raise RuntimeError("start() the detector before asking for a verdict")
        while True:
            verdict = self._judge(self._clock(), start)
            if verdict is not None:
                return verdict
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=_TICK_S)

    async def beep_or_quiet(
        self, *, after: float, quiet_s: float, max_wait_s: float
    ) -> float | None:
        """Wait for a beep that ends after `after` and is followed by no speech; returns its
        end. Without one, return None once the callee has been quiet `quiet_s` (a mailbox
        without a beep) or after `max_wait_s` at most."""
        deadline = self._clock() + max_wait_s
        while self._clock() < deadline:
            now = self._clock()
            beeps = [end for end, _ in self._beeps_heard if end > after]
            if beeps and not self.speaking and now - beeps[-1] >= _TICK_S:
                return beeps[-1]
            quiet = self.quiet_since
            if not self.speaking and now - max(quiet or after, after) >= quiet_s:
                return None
            await asyncio.sleep(_TICK_S)
        return None

    def _beeped(self, start: float, greeting_end: float) -> bool:
        """A mailbox's beep ended this window's greeting (time.time()s): a tone long
        enough that was the last sound heard (a tonal vowel mid-speech is not one)."""
        return any(
            end > start and seconds >= BEEP_CUE_MIN_S and end >= greeting_end - BEEP_LAST_S
            for end, seconds in self._beeps_heard
        )

    def _measured_speech(self, start: float) -> float:
        """Speech in this window: from the audio when it is there, else from the VAD."""
        if self._meter is None or self._audio_epoch is None:
            return self._vad_speech_s
        return self._meter.speech_s(start - self._audio_epoch)

    def _meter_pause(self, start: float) -> float | None:
        """The end (time.time()) of speech the audio shows in this window, once the audio
        after it has been quiet for VAD_SILENCE_S; None while speaking or before speech."""
        meter, epoch = self._meter, self._audio_epoch
        if meter is None or epoch is None or not meter.regions:
            return None
        end = meter.regions[-1][1]
        if end + epoch <= start or meter.pushed_s - end < VAD_SILENCE_S:
            return None
        return end + epoch

    def _quiet(self, start: float) -> bool:
        """Nobody is speaking now: the audio says so once the VAD heard speech, else the VAD."""
        if self._meter is None or self._audio_epoch is None or not self._heard_any:
            return not self.speaking
        meter = self._meter
        return not meter.regions or meter.pushed_s - meter.regions[-1][1] >= VAD_SILENCE_S

    def _audio_quiet_s(self, now: float) -> float:
        """Seconds of quiet at the end of the audio received so far (unbounded without
        audio): under load the audio lags the wall clock, and a beep that starts just
        before the greeting's quiet has lasted MACHINE_SILENCE_S must not be missed.
        Audio that stopped arriving for AUDIO_GONE_S is quiet: a far end may send no
        packets at all once its greeting has played."""
        meter = self._meter
        if meter is None or not meter.regions or now - self._heard_at >= AUDIO_GONE_S:
            return float("inf")
        return meter.pushed_s - meter.regions[-1][1]

    def _listened_s(self, now: float, start: float) -> float:
        """How long this window has listened: in the audio received while it arrives,
        by the clock once it stops (AUDIO_GONE_S) or lags by more than VERDICT_LAG_S."""
        meter, epoch = self._meter, self._audio_epoch
        clock = now - start
        if meter is None or epoch is None or now - self._heard_at >= AUDIO_GONE_S:
            return clock
        return max(meter.pushed_s - (start - epoch), clock - VERDICT_LAG_S)

    def _judge(self, now: float, start: float) -> Verdict | None:
        # the VAD says whether anyone spoke (line noise can fool the meter); the audio
        # says how long, and shows a pause the VAD has not reported yet (it lags under load)
        self._speech_s = self._measured_speech(start) if self._heard_any else 0.0
        paused = self._meter_pause(start) if self._heard_any else None
        if paused is not None and paused > self._pause_seen and self._segment_ended_at is None:
            self._pause_seen = paused
            self._segment_ended_at = now
            self._transcribed = False
        ended = self._segment_ended_at
        wait = TRANSCRIPT_WAIT_S + TRANSCRIPT_WAIT_PER_SPEECH_S * self._speech_s
        # below WORDS_DECIDE_FROM_S the words change nothing: no need to wait for them
        short = MIN_SPEECH_S <= self._speech_s < WORDS_DECIDE_FROM_S and not self._heard
        if ended is not None and (self._transcribed or short or now - ended >= wait):
            self._transcript_due = short and not self._transcribed
            self._segment_ended_at = None
            self._transcribed = False
            text = self.heard
            if text or self._speech_s >= MIN_SPEECH_S:
                result, reason = classify_greeting(text, self._speech_s)
                if result is AmdResult.HUMAN and self._quiet(start):
                    return Verdict(result, now, reason)
                if result is not AmdResult.HUMAN:
                    self._machine = True
        quiet = self._meter_pause(start) if self._meter is not None else self.quiet_since
        if (
            self._machine
            and self._segment_ended_at is None
            and quiet is not None
            and now - quiet >= MACHINE_SILENCE_S
            and self._audio_quiet_s(now) >= MACHINE_SILENCE_S
        ):
            # a machine: judged on its whole greeting, once it is over
            text = self.heard
            beep = self._beeped(start, quiet)
            result, reason = classify_greeting(text, self._speech_s, beep=beep)
            if result is AmdResult.HUMAN:  # cannot be: speech only grows; keep it a machine
                result = AmdResult.VOICEMAIL
            return Verdict(result, now, reason, accepts_message(text))
        heard_nothing = not self._heard and self._speech_s < MIN_SPEECH_S
        if heard_nothing and self._quiet(start) and now - start >= NO_SPEECH_S:
            return Verdict(AmdResult.SILENCE, now, f"nobody spoke for {NO_SPEECH_S:.1f} s")
        if self._listened_s(now, start) >= VERDICT_MAX_S:
            if heard_nothing and self._quiet(start):
                return Verdict(AmdResult.SILENCE, now, "nobody spoke")
            text = self.heard
            result, reason = classify_greeting(
                text,
                max(self._speech_s, HUMAN_MAX_SPEECH_S),
                beep=self._beeped(start, now if quiet is None else quiet),
                words_known=self._segment_ended_at is None or self._transcribed,
            )
            return Verdict(
                result,
                now,
                f"still speaking after {VERDICT_MAX_S:.0f} s; {reason}",
                accepts_message(text),
            )
        return None

    def _on_user_state(self, event: UserStateChangedEvent) -> None:
        if event.new_state == "speaking" and self._speaking_since is None:
            self._speaking_since = event.created_at
            self._heard_any = True
        elif event.new_state != "speaking" and self._speaking_since is not None:
            began = self._speaking_since
            if self._window_start is not None:
                began = max(began, self._window_start)
            self._vad_speech_s += max(0.0, event.created_at - began - VAD_SILENCE_S)
            self._speaking_since = None
            self._last_speech_end = event.created_at - VAD_SILENCE_S
            self._segment_ended_at = event.created_at
            self._transcribed = False
        self._changed.set()

    def _on_transcript(self, event: UserInputTranscribedEvent) -> None:
        if not event.is_final:
            return
        if event.transcript.strip():
            self._heard.append(event.transcript.strip())
        self._transcribed = True
        if self._after_transcript:
            # the session adds this transcript to its user turn after this event: act after
            asyncio.get_running_loop().call_soon(self._release_waiters)
        self._changed.set()

    async def _read_audio(self, participant: rtc.RemoteParticipant) -> None:
        stream = rtc.AudioStream.from_participant(
            participant=participant,
            track_source=rtc.TrackSource.SOURCE_MICROPHONE,
            sample_rate=AUDIO_RATE,
            num_channels=1,
        )
        try:
            async for event in stream:
                self.hear(np.frombuffer(event.frame.data, dtype=np.int16))
        finally:
            await stream.aclose()

    def hear(self, samples: np.ndarray) -> None:
        """One frame of the callee's audio (16-bit mono at AUDIO_RATE), as it arrives."""
        if self._meter is None:
            self._meter, self._beeps = SpeechMeter(AUDIO_RATE), BeepDetector(AUDIO_RATE)
        meter = self._meter
        meter.push(samples)
        self._heard_at = self._clock()
        epoch = self._heard_at - meter.pushed_s
        self._audio_epoch = min(epoch, self._audio_epoch or epoch)
        beep = self._beeps.push(samples)
        if beep is not None:
            start, end, hz = beep
            # when the agent heard it end: this frame's arrival, less the audio since
            heard_end = self._clock() - (self._beeps.pushed_s - end)
            self._beeps_heard.append((heard_end, end - start))
            logger.info("beep heard: %.0f Hz, %.2f s", hz, end - start)
        self._changed.set()
