"""The campaign form: every field of a campaign file, as flat inputs, and back.

The form holds dotted names (`calling_hours.start`, `retry.busy.delay`); filled-in
inputs become the nested mapping a YAML file would hold, validated by the same
`CampaignConfig` model, whose one-line messages are shown next to each field.
Empty inputs are left out, so the model's defaults apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from campaign.campaign_file import CampaignConfig
from campaign.errors import validation_problems
from campaign.windows import WindowError

#: outcomes with a retry rule of their own
RETRY_OUTCOMES = ("busy", "no_answer", "voicemail", "failed", "agent_unavailable")
PRICES = (
    "llm_prompt_per_1k_tokens",
    "llm_completion_per_1k_tokens",
    "tts_per_1k_characters",
    "stt_per_minute",
    "telephony_per_minute",
)
#: what a desk campaign's `contacts` holds: its sheets are uploaded into the ledger
DESK_CONTACTS = "desk-uploads"


@dataclass(frozen=True)
class Field:
    name: str  #: dotted path in the campaign file
    label: str
    kind: str = "text"  #: text | number | textarea | checkbox | time
    help: str = ""
    placeholder: str = ""


@dataclass(frozen=True)
class Group:
    title: str
    fields: tuple[Field, ...]


GROUPS: tuple[Group, ...] = (
    Group(
        "Campaign",
        (
            Field("name", "Name", help="Letters, digits, . _ - (the campaign's key)"),
            Field("region", "Default region", placeholder="US", help="For numbers without +"),
            Field("time_zone", "Fallback time zone", placeholder="UTC", help="IANA zone"),
            Field("is_test", "Test campaign", "checkbox", "Attempts are marked as tests"),
            Field("store_transcripts", "Store transcripts", "checkbox"),
        ),
    ),
    Group(
        "Calling hours (each contact's local time)",
        (
            Field("calling_hours.start", "From", placeholder="09:00"),
            Field("calling_hours.end", "Until", placeholder="20:00"),
            Field(
                "calling_hours.days", "Days", placeholder="mon-sat", help="all, weekdays, mon-fri"
            ),
            Field(
                "calling_hours.override_legal_limits",
                "Allow hours outside 08:00-21:00",
                "checkbox",
            ),
            Field("start_at", "Start at", placeholder="2026-03-02 09:00", help="Optional"),
            Field("end_at", "End at", help="Optional: no new calls from then on"),
        ),
    ),
    Group(
        "Pace",
        (
            Field("max_concurrent_calls", "Calls at once (cap)", "number", placeholder="5"),
            Field("calls_per_second", "Calls per second", "number", placeholder="1.0"),
            Field("ringing_timeout", "Ring for", placeholder="30s"),
            Field("max_call_duration", "Longest call", placeholder="10m"),
            Field("agent_join_timeout", "Wait for the agent", placeholder="15s"),
        ),
    ),
    Group(
        "Retries",
        (
            Field("retry.max_attempts", "Dials per contact, at most", "number", placeholder="3"),
            *(
                Field(
                    f"retry.{outcome}.delay",
                    f"{outcome.replace('_', ' ')}: retry after",
                    placeholder="15m, 2h, next_day or never",
                )
                for outcome in RETRY_OUTCOMES
            ),
            *(
                Field(f"retry.{outcome}.backoff", f"{outcome.replace('_', ' ')}: backoff", "number")
                for outcome in RETRY_OUTCOMES
            ),
        ),
    ),
    Group(
        "Script",
        (
            Field("script.greeting", "Greeting", "textarea", "Placeholders: {name}, sheet columns"),
            Field("script.question", "Question", "textarea"),
            Field("script.goodbye", "Goodbye", "textarea"),
            Field("script.instructions", "Instructions (cloud LLM)", "textarea"),
            Field("voicemail_message", "Voicemail message", "textarea", "Empty: hang up"),
            Field(
                "dispositions",
                "Dispositions",
                placeholder="interested, not_interested, callback",
                help="Comma-separated",
            ),
        ),
    ),
    Group(
        "Telephony",
        (
            Field("trunk_id", "SIP trunk", help="Empty: SIP_OUTBOUND_TRUNK_ID"),
            Field("agent_name", "Agent name", help="Empty: AGENT_NAME"),
            Field("caller_id", "Caller ID"),
        ),
    ),
    Group(
        "Pricing (for the workbook's cost estimate)",
        tuple(Field(f"pricing.{price}", price.replace("_", " "), "number") for price in PRICES),
    ),
)
FIELDS = {field.name: field for group in GROUPS for field in group.fields}
_CHECKBOXES = {name for name, field in FIELDS.items() if field.kind == "checkbox"}
_DEFAULT_ON = {"store_transcripts"}


class FormErrors(ValueError):
    """The form does not validate: one line per field (dotted name; "" for the whole form)."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k or 'campaign'}: {v}" for k, v in errors.items()))
        self.errors = errors


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def form_to_mapping(form: Mapping[str, str]) -> dict[str, Any]:
    """The filled-in inputs as the nested mapping a campaign file would hold."""
    data: dict[str, Any] = {}
    for name in FIELDS:
        if name in _CHECKBOXES:
            # A checkbox sends "on" or nothing; the hidden twin says the form showed it.
            if f"{name}.shown" in form or name in form:
                _set(data, name, form.get(name) == "on")
            continue
        value = str(form.get(name, "")).strip()
        if not value:
            continue
        if name == "dispositions":
            _set(data, name, [item.strip() for item in value.split(",") if item.strip()])
        elif name.startswith("retry.") and name.endswith(".delay") and value.lower() == "never":
            _set(data, name.removesuffix(".delay"), "never")
        elif FIELDS[name].kind == "number":
            _set(data, name, _number(value))
        else:
            _set(data, name, value)
    retry = data.get("retry", {})
    for outcome in RETRY_OUTCOMES:
        rule = retry.get(outcome)
        if isinstance(rule, dict) and "delay" not in rule:
            raise FormErrors({f"retry.{outcome}.delay": "give a delay with the backoff"})
    return data


def _number(text: str) -> int | float | str:
    """A number input's value as YAML would read it; anything else goes to the model as is
    (and comes back with its message)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def mapping_to_form(config: Mapping[str, Any]) -> dict[str, str]:
    """A stored campaign's settings as form values (for editing)."""
    values: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
            return
        if prefix.startswith("retry.") and node == "never" and f"{prefix}.delay" in FIELDS:
            values[f"{prefix}.delay"] = "never"
        elif prefix in FIELDS:
            if isinstance(node, bool):
                values[prefix] = "on" if node else ""
            elif isinstance(node, list):
                values[prefix] = ", ".join(map(str, node))
            elif node is not None:
                values[prefix] = str(node)

    walk("", dict(config))
    return values


def default_form() -> dict[str, str]:
    return {name: "on" for name in _DEFAULT_ON}


def parse_yaml(text: str) -> dict[str, Any]:
    """A pasted campaign file; `contacts` is ignored (sheets are uploaded)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise FormErrors({"": f"not valid YAML{where}"}) from None
    if not isinstance(data, dict):
        raise FormErrors({"": "expected a mapping of fields at the top level"})
    return data


def validate(data: Mapping[str, Any]) -> CampaignConfig:
    """The same model as a campaign file; the desk's sheets live in the ledger."""
    mapping = {**data, "contacts": [DESK_CONTACTS]}
    try:
        return CampaignConfig.model_validate(mapping)
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for where, message in validation_problems(exc):
            key = where if where in FIELDS else _nearest(where)
            errors.setdefault(key, f"{where}: {message}" if key != where else message)
        raise FormErrors(errors) from None
    except WindowError as exc:
        raise FormErrors({"calling_hours.start": str(exc)}) from None


def _nearest(where: str) -> str:
    """The form field to show an error beside (a rule's error goes beside its delay)."""
    for name in FIELDS:
        if name.startswith(where + ".") or where.startswith(name):
            return name
    return ""


def stored(config: CampaignConfig) -> dict[str, Any]:
    """What the ledger keeps for a desk campaign (`Campaign.config`)."""
    return config.model_dump(mode="json")
