"""The sipp phones: which number does what, and what each phone saw.

One sipp UAS (`phones.xml`) sits behind one LiveKit outbound trunk; the last digit
of the dialed number picks the behaviour, so a contact list of distinct numbers can
reach every behaviour through that one trunk (any number ending in 1 talks, and so on).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from devstack import config


class Behaviour(StrEnum):
    """What the phone does with a call; the value is the name its log uses."""

    TALKS = "talks"  #: answers, "Hello?", pause, "Yes, I am interested...", stays <= 60 s
    HANGS_UP = "hangs_up"  #: answers, "Sorry, I can't talk right now", hangs up after 4 s
    BUSY = "busy"  #: 486 Busy Here
    NO_ANSWER = "no_answer"  #: 180 Ringing for 60 s (then 480), or 487 when cancelled
    DECLINES = "declines"  #: 603 Decline
    ANSWERING_MACHINE = "answering_machine"  #: answers, greeting + beep, listens <= 30 s
    UNKNOWN_NUMBER = "unknown_number"  #: 404 Not Found


#: Last digit of the dialed number -> behaviour (digits 0, 8, 9 also get 404).
LAST_DIGIT: dict[str, Behaviour] = {
    "1": Behaviour.TALKS,
    "2": Behaviour.HANGS_UP,
    "3": Behaviour.BUSY,
    "4": Behaviour.NO_ANSWER,
    "5": Behaviour.DECLINES,
    "6": Behaviour.ANSWERING_MACHINE,
    "7": Behaviour.UNKNOWN_NUMBER,
}

#: Seconds the no-answer phone rings before giving up with 480 itself.
NO_ANSWER_RING_SECONDS = 60


def number_for(behaviour: Behaviour, index: int = 0) -> str:
    """A distinct number with the given behaviour, for contact lists longer than the table.

    Valid New York numbers (phonenumbers accepts them; time zone America/New_York), so
    the dialer takes them like any sheet row: +1 212 736 NNND, NNN = 010 + index, D the
    behaviour's digit. index 0 is NUMBERS[behaviour].
    """
    if not 0 <= index <= 989:
        raise ValueError("index must be between 0 and 989")
    digit = next(d for d, b in LAST_DIGIT.items() if b is behaviour)
    return f"+1212736{index + 10:03d}{digit}"


#: One number per behaviour: +1 212 736 0101 talks ... +1 212 736 0107 is unknown.
NUMBERS: dict[Behaviour, str] = {behaviour: number_for(behaviour) for behaviour in Behaviour}


def behaviour_for(number: str) -> Behaviour:
    """The behaviour a dialed number gets (by its last digit)."""
    return LAST_DIGIT.get(number.strip()[-1:], Behaviour.UNKNOWN_NUMBER)


class Event(StrEnum):
    """One step a phone logs."""

    RECEIVED = "received"  #: an INVITE arrived
    ANSWERED = "answered"  #: 200 OK sent and ACKed; audio starts
    BYE_RECEIVED = "bye_received"  #: the far end (LiveKit, the agent) hung up
    BYE_SENT = "bye_sent"  #: the phone hung up
    REJECTED = "rejected"  #: final error response sent (detail: the code)
    CANCELLED = "cancelled"  #: the caller cancelled while ringing (487 sent)


@dataclass(frozen=True)
class PhoneEvent:
    """One line of the phones' log."""

    timestamp: float  #: seconds since the epoch
    call_id: str  #: the SIP Call-ID livekit-sip chose
    lk_call_id: str  #: LiveKit's call id (SIPParticipantInfo.sip_call_id), the From tag
    dialed: str  #: the Request-URI user, as livekit-sip sent it
    behaviour: Behaviour
    event: Event
    detail: str  #: the SIP code for rejected/cancelled, else empty

    @property
    def number(self) -> str:
        """The dialed number in E.164 (livekit-sip may drop the leading +)."""
        return self.dialed if self.dialed.startswith("+") else "+" + self.dialed


def log_path() -> Path:
    """Where the phones write their log (appended to for the life of the stack)."""
    return config.PHONES_DIR / "phones.log"


def read_log(
    number: str | None = None,
    since: float | None = None,
    lk_call_id: str | None = None,
    path: Path | None = None,
) -> list[PhoneEvent]:
    """Parse the phones' log, oldest first, keeping only events that match every filter
    given: the dialed number (E.164), at or after `since` (epoch seconds), one call."""
    try:
        text = (path or log_path()).read_text(errors="replace")
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines():
        event = _parse(line)
        if event is None:
            continue
        if number is not None and event.number != number:
            continue
        if since is not None and event.timestamp < since:
            continue
        if lk_call_id is not None and event.lk_call_id != lk_call_id:
            continue
        events.append(event)
    return events


def _parse(line: str) -> PhoneEvent | None:
    # sipp's [timestamp] is "date<TAB>time<TAB>epoch.micros"; our fields follow, "|"-separated.
    fields = line.split("|")
    if len(fields) != 7:
        return None
    stamp, call_id, lk_call_id, dialed, behaviour, event, detail = fields
    try:
        return PhoneEvent(
            timestamp=float(stamp.split("\t")[-1]),
            call_id=call_id,
            lk_call_id=lk_call_id,
            dialed=dialed,
            behaviour=Behaviour(behaviour),
            event=Event(event),
            detail=detail.strip(),
        )
    except ValueError:
        return None
