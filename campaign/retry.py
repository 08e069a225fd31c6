"""Retry rules: what happens to a contact after each attempt's outcome.

Each retryable outcome has a rule (delay, backoff multiplier, its own attempt cap);
the campaign caps the attempts per contact. Decisions are pure functions of the
outcome, the counts so far and the current time (injected), so they are unit-tested
with a fake clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from campaign.outcomes import ContactStatus, Outcome

NEXT_DAY = "next_day"
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|d|h|m|s)")
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as `"90s"`, `"15m"`, `"2h"`, `"1h30m"`."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 15m or 2h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(
                    f"{value!r} is not a duration (use seconds or e.g. 30s, 15m, 2h, 1h30m)"
                ) from None
            seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    else:
        raise ValueError("expected a duration such as 30s, 15m or 2h")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


class RetryRule(BaseModel):
    """When to try again after one outcome.

    `delay` is seconds or a duration string, or `next_day` (the calling window's start
    on the contact's next local day). The n-th retry after this outcome waits
    `delay * backoff ** (n - 1)`. `max_attempts` caps how many attempts may end with
    this outcome (the campaign-wide cap applies too).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    delay: float | Literal["next_day"]
    backoff: float = Field(default=1.0, ge=1.0)
    max_attempts: int | None = Field(default=None, ge=1)

    @field_validator("delay", mode="before")
    @classmethod
    def _delay(cls, value: Any) -> float | str:
        if isinstance(value, str) and value.strip().lower().replace("-", "_") == NEXT_DAY:
            return NEXT_DAY
        return parse_duration(value)


#: a rule, or "never" for outcomes that close the contact
RuleOrNever = RetryRule | Literal["never"]


def _rule(delay: float | str, **kw: Any) -> RetryRule:
    return RetryRule.model_validate({"delay": delay, **kw})


class RetryPolicy(BaseModel):
    """The campaign's retry rules, one field per outcome that can be retried."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=3, ge=1, description="Dials per contact, at most.")
    busy: RuleOrNever = Field(default_factory=lambda: _rule("15m"))
    no_answer: RuleOrNever = Field(default_factory=lambda: _rule("2h"))
    voicemail: RuleOrNever = Field(default_factory=lambda: _rule(NEXT_DAY))
    #: a screening service heard who called and why; try once more another day
    screened: RuleOrNever = Field(default_factory=lambda: _rule(NEXT_DAY, max_attempts=2))
    #: a phone menu: the number is probably a business line, not the contact's own
    ivr: RuleOrNever = "never"
    #: nobody spoke: a bad line or a pocket answer; soon, once more
    no_speech: RuleOrNever = Field(default_factory=lambda: _rule("1h", max_attempts=2))
    failed: RuleOrNever = Field(default_factory=lambda: _rule("5m", backoff=2.0))
    #: the agent left a live call (crashed, was killed): retried like `failed`
    agent_lost: RuleOrNever = Field(default_factory=lambda: _rule("5m", backoff=2.0))
    #: a dial whose result was lost (the phone may have rung): a dial, retried later
    unknown: RuleOrNever = Field(default_factory=lambda: _rule("1h"))
    #: no agent joined, so nobody was dialed: not counted against max_attempts
    agent_unavailable: RuleOrNever = Field(
        default_factory=lambda: _rule("1m", backoff=2.0, max_attempts=5)
    )
    declined: Literal["never"] = "never"
    invalid_number: Literal["never"] = "never"
    do_not_call: Literal["never"] = "never"

    @model_validator(mode="before")
    @classmethod
    def _never_aliases(cls, data: Any) -> Any:
        # YAML users write `declined: never`, `busy: no`, or `busy: false`; all mean never.
        if isinstance(data, dict):
            return {
                k: "never" if k != "max_attempts" and (v is False or v in ("no", "none")) else v
                for k, v in data.items()
            }
        return data

    def rule_for(self, outcome: Outcome) -> RetryRule | None:
        value = getattr(self, outcome.value, "never")
        return value if isinstance(value, RetryRule) else None


#: outcomes after which nobody was actually dialed
NOT_DIALED = frozenset({Outcome.AGENT_UNAVAILABLE, Outcome.DO_NOT_CALL, Outcome.CANCELLED})

#: outcomes that close the contact with a status of their own
_CLOSING = {
    Outcome.ANSWERED: ContactStatus.COMPLETED,
    Outcome.DECLINED: ContactStatus.DECLINED,
    Outcome.INVALID_NUMBER: ContactStatus.INVALID,
    Outcome.DO_NOT_CALL: ContactStatus.DNC,
}


@dataclass(frozen=True)
class Decision:
    """The contact's next status and, for a retry, when it is due."""

    status: ContactStatus
    next_attempt_at: datetime | None = None


def decide(
    policy: RetryPolicy,
    outcome: Outcome,
    *,
    dials: int,
    same_outcome: int,
    now: datetime,
    next_day_start: Callable[[datetime], datetime],
) -> Decision:
    """What to do with a contact after an attempt ended with `outcome`.

    `dials` counts this contact's attempts that reached the network, this one included;
    `same_outcome` counts its attempts that ended with `outcome`, this one included.
    `next_day_start(now)` gives the contact's next-day window start.
    """
    if outcome in _CLOSING:
        return Decision(_CLOSING[outcome])
    if outcome == Outcome.CANCELLED:
        # The operator stopped the call: nobody decided anything about the contact.
        return Decision(ContactStatus.RETRY, now)
    # A voicemail that will not be retried still reached the contact's mailbox.
    spent = ContactStatus.COMPLETED if outcome == Outcome.VOICEMAIL else ContactStatus.EXHAUSTED
    rule = policy.rule_for(outcome)
    if rule is None:
        return Decision(spent)
    if outcome not in NOT_DIALED and dials >= policy.max_attempts:
        return Decision(spent)
    if rule.max_attempts is not None and same_outcome >= rule.max_attempts:
        return Decision(spent)
    if isinstance(rule.delay, str):  # next_day
        return Decision(ContactStatus.RETRY, next_day_start(now))
    wait = rule.delay * rule.backoff ** max(0, same_outcome - 1)
    return Decision(ContactStatus.RETRY, now + timedelta(seconds=wait))
