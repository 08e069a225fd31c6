"""The baseline of both AMD benchmarks (`benchmarks.amd`, `benchmarks.amd_offline`): the
greeting-length rule, the classic telephony AMD. Speech longer than GREETING_RULE_S before
the first pause is a machine (a voicemail, the only machine it knows), a shorter greeting
a person, no speech silence. Cheap to import: no devstack, no agent worker.
"""

from __future__ import annotations

from campaign.outcomes import AmdResult

GREETING_RULE_S = 2.5


def greeting_rule(first_speech_s: float | None) -> AmdResult:
    """The rule's verdict from the seconds of speech before the first pause (None: nobody
    spoke)."""
    if first_speech_s is None:
        return AmdResult.SILENCE
    return AmdResult.VOICEMAIL if first_speech_s > GREETING_RULE_S else AmdResult.HUMAN
