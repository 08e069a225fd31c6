"""Call outcomes, the one table from SIP responses to outcomes, and contact states."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """How one attempt ended, from the dialer's point of view."""

    ANSWERED = "answered"  #: a human answered and the agent held the conversation
    VOICEMAIL = "voicemail"  #: an answering machine picked up
    SCREENED = "screened"  #: a call-screening service answered and nobody took the call
    IVR = "ivr"  #: a phone menu answered ("press 1 for ..."); the agent hung up
    NO_SPEECH = "no_speech"  #: answered, but nobody spoke, even after a prompt
    BUSY = "busy"  #: 486 Busy Here / 600 Busy Everywhere
    NO_ANSWER = "no_answer"  #: rang out: 408, 480, 487 or our ringing timeout
    DECLINED = "declined"  #: 603 Decline: the callee rejected the call
    INVALID_NUMBER = "invalid_number"  #: 404, 484, 410, 604: the number does not exist
    FAILED = "failed"  #: any other SIP failure or an API fault after our retries
    AGENT_UNAVAILABLE = "agent_unavailable"  #: no agent joined the room, so we did not dial
    DO_NOT_CALL = "do_not_call"  #: the number was on the DNC list at dial time
    CANCELLED = "cancelled"  #: not placed and no verdict: the operator, a stop, a part down
    AGENT_LOST = "agent_lost"  #: the agent left a live call; hung up, retried like failed
    UNKNOWN = "unknown"  #: dialed, but what the phone did cannot be known (dialer died)


#: SIP final response code -> outcome. Codes not listed map to FAILED.
SIP_STATUS_OUTCOMES: dict[int, Outcome] = {
    486: Outcome.BUSY,
    600: Outcome.BUSY,
    408: Outcome.NO_ANSWER,
    480: Outcome.NO_ANSWER,
    487: Outcome.NO_ANSWER,
    603: Outcome.DECLINED,
    404: Outcome.INVALID_NUMBER,
    410: Outcome.INVALID_NUMBER,
    484: Outcome.INVALID_NUMBER,
    604: Outcome.INVALID_NUMBER,
}


def outcome_for_sip_status(code: int | None) -> Outcome:
    """Map a SIP final response to an outcome (unknown or missing -> FAILED)."""
    if code is None:
        return Outcome.FAILED
    return SIP_STATUS_OUTCOMES.get(code, Outcome.FAILED)


class ContactStatus(StrEnum):
    """Where a contact stands in its campaign."""

    PENDING = "pending"  #: never attempted
    RETRY = "retry"  #: attempted, another attempt is due at next_attempt_at
    IN_PROGRESS = "in_progress"  #: an attempt is being dialed or is in a call
    COMPLETED = "completed"  #: reached (human or voicemail left); no more attempts
    EXHAUSTED = "exhausted"  #: max attempts used without reaching anyone
    DNC = "dnc"  #: on the do-not-call list; never dialed again
    INVALID = "invalid"  #: the network said the number does not exist
    DECLINED = "declined"  #: the callee declined; not retried
    CANCELLED = "cancelled"  #: the campaign was cancelled before this contact finished
    #: its zones never share a moment inside the calling hours (reopened if they change)
    NO_CALLING_HOURS = "no_calling_hours"


#: Statuses from which a contact is never dialed again.
FINAL_CONTACT_STATUSES = frozenset(
    {
        ContactStatus.COMPLETED,
        ContactStatus.EXHAUSTED,
        ContactStatus.DNC,
        ContactStatus.INVALID,
        ContactStatus.DECLINED,
        ContactStatus.CANCELLED,
        ContactStatus.NO_CALLING_HOURS,
    }
)


class AttemptStatus(StrEnum):
    """Lifecycle of one attempt row; written before each side effect it describes."""

    DIALING = "dialing"  #: claimed; room, dispatch and SIP call are being set up
    IN_CALL = "in_call"  #: the callee answered; the agent is talking
    DONE = "done"  #: finalised with an outcome


#: An answered attempt's error while the agent's record is missing; a record that comes
#: later (`store.calls`) clears it.
NO_CALL_RECORD = "the agent wrote no call record"


class CampaignStatus(StrEnum):
    """Operator-visible state of a campaign."""

    ACTIVE = "active"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


class EndReason(StrEnum):
    """Why a connected call ended, as the agent saw it."""

    AGENT_HANGUP = "agent_hangup"
    CALLEE_HANGUP = "callee_hangup"
    MAX_DURATION = "max_duration"
    ERROR = "error"
    NEVER_ANSWERED = "never_answered"


class AmdResult(StrEnum):
    """What answering machine detection decided (the call record's `amd_result`)."""

    HUMAN = "human"  #: a person (also one who took the call after a screener)
    VOICEMAIL = "voicemail"  #: a mailbox greeting, personal or the carrier's
    SCREENER = "screener"  #: a call-screening service, and no person took the call
    IVR = "ivr"  #: a phone menu
    SILENCE = "silence"  #: nobody spoke, even after the agent's prompt
    MACHINE = "machine"  #: an answering machine (records written before the classes above)
    UNCERTAIN = "uncertain"
    NOT_RUN = "not_run"


#: What answered -> the attempt's outcome; anything else is a conversation (ANSWERED).
AMD_OUTCOMES: dict[str, Outcome] = {
    AmdResult.VOICEMAIL: Outcome.VOICEMAIL,
    AmdResult.MACHINE: Outcome.VOICEMAIL,
    AmdResult.SCREENER: Outcome.SCREENED,
    AmdResult.IVR: Outcome.IVR,
    AmdResult.SILENCE: Outcome.NO_SPEECH,
}


def outcome_for_call(amd_result: str | None) -> Outcome:
    """The outcome of an answered call, from its call record's `amd_result`."""
    return AMD_OUTCOMES.get(amd_result or "", Outcome.ANSWERED)
