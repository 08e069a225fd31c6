"""The one typed contract between the dialer and the agent.

The dialer serialises a `DialRequest` into the explicit agent dispatch's
metadata; the agent parses it with `DialRequest.model_validate_json`.
"""

from __future__ import annotations

import re
from string import Formatter

from pydantic import BaseModel, ConfigDict, Field

#: The agent's participant attribute that changes every `AGENT_HEARTBEAT_S` while its
#: job runs: a killed job's participant lingers in the room for a while (LiveKit waits
#: for it to reconnect), so the dialer judges the agent by this beat, not by presence.
AGENT_HEARTBEAT_ATTR = "dialer.heartbeat"
AGENT_HEARTBEAT_S = 2.0


class Script(BaseModel):
    """What the agent says. The local scripted LLM follows it literally; a cloud LLM
    receives it as instructions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instructions: str = Field(
        default="You are a polite assistant calling on behalf of a company.",
        description="System instructions for a cloud LLM.",
    )
    greeting: str = Field(default="Hello {name}, this is an automated call. Do you have a minute?")
    question: str = Field(default="Would you be interested in hearing more?")
    goodbye: str = Field(default="Thank you for your time. Goodbye.")
    #: keyword -> disposition, checked in order on what the callee says (local LLM)
    keywords: dict[str, str] = Field(
        default_factory=lambda: {
            "not interested": "not_interested",
            "interested": "interested",
            "tomorrow": "callback",
            "later": "callback",
            "wrong": "wrong_person",
        }
    )
    #: phrases that mean "never call me again" (local LLM)
    do_not_call_phrases: list[str] = Field(
        default_factory=lambda: ["do not call", "don't call", "stop calling", "remove me"]
    )
    voicemail_message: str | None = Field(
        default=None, description="Left after the beep when a machine answers; None hangs up."
    )
    screener_message: str = Field(
        default="This is an automated call for {name} with a short question; please put me "
        "through.",
        description="Said to a call-screening service: who is calling and why, in one sentence.",
    )
    silence_prompt: str = Field(
        default="Hello? Can you hear me?",
        description="Said once when nobody speaks after the answer.",
    )
    dispositions: list[str] = Field(
        default_factory=lambda: ["interested", "not_interested", "callback", "wrong_person"]
    )

    def placeholders(self) -> dict[str, str]:
        """Each `{placeholder}` of the texts the agent says, by name, with the first field
        that uses it. ValueError names a text that is not a valid template."""
        found: dict[str, str] = {}
        for field_name in TEMPLATE_FIELDS:
            text = getattr(self, field_name)
            if not text:
                continue
            try:
                parsed = list(Formatter().parse(text))
            except ValueError as exc:
                raise ValueError(
                    f"script.{field_name}: {exc} (write {{{{ and }}}} for a literal brace)"
                ) from None
            for _literal, placeholder, _spec, _conversion in parsed:
                if placeholder is None:
                    continue
                name = re.split(r"[.\[]", placeholder, maxsplit=1)[0]
                if not name or name.isdigit():
                    raise ValueError(
                        f"script.{field_name}: {{{placeholder}}} is not a placeholder;"
                        " name a column, such as {name}"
                    )
                found.setdefault(name, field_name)
        return found

    def render(self, text: str, variables: dict[str, str]) -> str:
        """Fill `{name}`-style placeholders, matching names regardless of case (`{plan}`
        takes the `Plan` column); unknown ones are left as written."""
        folded = {key.casefold(): value for key, value in variables.items()}

        class _Fill(dict[str, str]):
            def __missing__(self, key: str) -> str:
                return folded.get(key.casefold(), "{" + key + "}")

        return text.format_map(_Fill(variables))


#: the script's texts whose `{placeholders}` are filled per contact
TEMPLATE_FIELDS = ("instructions", "greeting", "question", "goodbye", "voicemail_message")


class DialRequest(BaseModel):
    """Dispatch metadata for one call attempt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    campaign: str
    contact_id: int
    attempt_id: int
    phone_masked: str = Field(description="The callee's number, masked, for logs only.")
    name: str | None = None
    variables: dict[str, str] = Field(default_factory=dict)
    script: Script = Field(default_factory=Script)
    store_transcripts: bool = True
    max_call_duration_s: float = 600.0
    is_test: bool = False
    #: a `dialer doctor` probe, not a call: the agent joins, logs, and leaves when the
    #: room closes, writing nothing (contact and attempt ids are 0)
    probe: bool = False
