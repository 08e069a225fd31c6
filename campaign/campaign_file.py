"""The campaign file (`campaigns/<name>.yaml`), validated.

Every field is documented in `docs/campaigns.md` and shown in
`campaigns/example.yaml`; keep the three in step. Errors name the field:
`campaigns/x.yaml: calling_hours.start: '25:00' is not a time of day (HH:MM)`.
A key written twice is an error (YAML would keep the last silently), and every script
placeholder must name a column of each sheet (or `{name}`), ignoring case.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from campaign.contacts import SheetError, variable_columns
from campaign.contract import Script
from campaign.errors import UserError, validation_problems
from campaign.retry import RetryPolicy, parse_duration
from campaign.windows import CallingWindow, WindowError, format_clock, parse_clock, parse_days, zone


class CampaignFileError(UserError, ValueError):
    """The campaign file is missing, not YAML, or fails validation; one line per problem."""


#: the longest disposition the ledger keeps
MAX_DISPOSITION = 50
#: what a campaign may be called: it names a file, a folder and the ledger's row
CAMPAIGN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_campaign_name(name: str) -> str:
    """The name itself, or CampaignFileError; every way into a campaign checks it here."""
    if not CAMPAIGN_NAME.fullmatch(name):
        raise CampaignFileError(
            f"campaign name {name!r}: use 1-100 letters, digits, '_', '.' or '-',"
            " starting with a letter or digit"
        )
    return name


class CallingHours(BaseModel):
    """When calls may be placed, in each contact's local time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: str = "09:00"
    end: str = "20:00"
    days: str | list[str] = "mon-sat"
    #: allow a window outside 08:00-21:00 local (tests, demos, consented contacts)
    override_legal_limits: bool = False

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock(cls, value: Any) -> str:
        if isinstance(value, int):  # YAML 1.1 reads an unquoted 09:00 as 540 (sexagesimal)
            value = format_clock(value)
        return str(value)

    @model_validator(mode="after")
    def _valid(self) -> CallingHours:
        self.window("UTC")
        return self

    def window(self, fallback_zone: str) -> CallingWindow:
        return CallingWindow(
            start=parse_clock(self.start),
            end=parse_clock(self.end, allow_midnight_end=True),
            days=parse_days(self.days),
            fallback_zone=fallback_zone,
            override_legal_limits=self.override_legal_limits,
        )


class Pricing(BaseModel):
    """Per-unit prices for the workbook's cost estimate; a missing price counts as 0.

    Telephony minutes are connected minutes (answer to hang-up), unrounded.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    llm_prompt_per_1k_tokens: float = 0.0
    llm_completion_per_1k_tokens: float = 0.0
    tts_per_1k_characters: float = 0.0
    stt_per_minute: float = 0.0
    telephony_per_minute: float = 0.0

    @field_validator("*", mode="before")
    @classmethod
    def _price(cls, value: Any, info: ValidationInfo) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"pricing.{info.field_name} must be a number >= 0, got {value!r}")
        return float(value)

    @classmethod
    def from_config(cls, config: Any) -> Pricing:
        """The prices in a stored campaign config (`Campaign.config`), one-line errors."""
        raw = config.get("pricing") if isinstance(config, dict) else None
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise CampaignFileError("campaign pricing must be a mapping of price names to numbers")
        unknown = sorted(set(map(str, raw)) - set(cls.model_fields))
        if unknown:
            raise CampaignFileError(
                f"unknown price(s) in campaign pricing: {', '.join(unknown)}; "
                f"known: {', '.join(sorted(cls.model_fields))}"
            )
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            _, first = validation_problems(exc)[0]
            raise CampaignFileError(first) from None


class CampaignConfig(BaseModel):
    """One campaign: what to dial, how fast, when, how to retry, what the agent says."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    #: contact sheet(s), relative to the campaign file
    contacts: list[Path] = Field(min_length=1)
    region: str = Field(default="US", pattern=r"^[A-Z]{2}$")
    #: outbound SIP trunk; SIP_OUTBOUND_TRUNK_ID when unset
    trunk_id: str | None = None
    #: the agent worker's registered name; AGENT_NAME when unset
    agent_name: str | None = None
    #: the number callees see (the trunk's number when unset)
    caller_id: str | None = None
    max_concurrent_calls: int = Field(default=5, ge=1, le=1000)
    calls_per_second: float = Field(default=1.0, gt=0, le=100)
    calling_hours: CallingHours = Field(default_factory=CallingHours)
    #: IANA zone for contacts whose number gives none
    time_zone: str = "UTC"
    ringing_timeout: float = Field(default=30.0, ge=1, le=300)
    max_call_duration: float = Field(default=600.0, ge=10, le=86400)
    #: how long to wait for the agent to join the room before giving up on the attempt
    agent_join_timeout: float = Field(default=15.0, ge=1, le=300)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    script: Script = Field(default_factory=Script)
    voicemail_message: str | None = None
    dispositions: list[str] | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    store_transcripts: bool = True
    #: mark every attempt and call as a test (kept apart in reports)
    is_test: bool = False
    #: per-unit prices for the workbook's estimated cost
    pricing: Pricing = Field(default_factory=Pricing)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            return check_campaign_name(value)
        except CampaignFileError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("contacts", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | Path) else value

    @field_validator("ringing_timeout", "max_call_duration", "agent_join_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone(value)
        return value

    @field_validator("start_at", "end_at")
    @classmethod
    def _aware(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        # Naive times are read in the campaign's fallback zone.
        if value is None or value.tzinfo is not None:
            return value
        return value.replace(tzinfo=zone(info.data.get("time_zone", "UTC")))

    @model_validator(mode="after")
    def _consistent(self) -> CampaignConfig:
        if self.script.voicemail_message and self.voicemail_message:
            raise ValueError("set voicemail_message at the top level or in script, not both")
        if self.dispositions is not None and not self.dispositions:
            raise ValueError("dispositions: give at least one value")
        for disposition in self.agent_script.dispositions:
            if not disposition.strip() or len(disposition) > MAX_DISPOSITION:
                raise ValueError(
                    f"dispositions: {disposition!r}: give 1 to {MAX_DISPOSITION} characters"
                )
        if self.start_at and self.end_at and self.end_at <= self.start_at:
            raise ValueError("end_at must be after start_at")
        return self

    @property
    def window(self) -> CallingWindow:
        return self.calling_hours.window(self.time_zone)

    @property
    def agent_script(self) -> Script:
        """The script the agent receives, with the top-level voicemail and dispositions."""
        update: dict[str, Any] = {}
        if self.voicemail_message:
            update["voicemail_message"] = self.voicemail_message
        if self.dispositions:
            update["dispositions"] = list(self.dispositions)
        return self.script.model_copy(update=update) if update else self.script

    def with_defaults(self, *, trunk_id: str, agent_name: str) -> CampaignConfig:
        """Fill the trunk and agent from the environment when the file leaves them out."""
        if not (self.trunk_id or trunk_id):
            raise CampaignFileError(
                f"campaign {self.name}: trunk_id is not set and SIP_OUTBOUND_TRUNK_ID is empty"
            )
        return self.model_copy(
            update={
                "trunk_id": self.trunk_id or trunk_id,
                "agent_name": self.agent_name or agent_name,
            }
        )


def parse_campaign(data: Any, *, base_dir: Path, source: str) -> CampaignConfig:
    """Validate already-parsed YAML; sheet paths are resolved against `base_dir`."""
    if not isinstance(data, dict):
        raise CampaignFileError(f"{source}: expected a mapping of fields at the top level")
    try:
        config = CampaignConfig.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{where or '(file)'}: {message}" for where, message in validation_problems(exc)
        ]
        raise CampaignFileError(f"{source}: " + "; ".join(problems)) from None
    except WindowError as exc:
        raise CampaignFileError(f"{source}: calling_hours: {exc}") from None
    sheets = [(p if p.is_absolute() else (base_dir / p)).resolve() for p in config.contacts]
    config = config.model_copy(update={"contacts": sheets})
    try:
        placeholders = config.agent_script.placeholders()
    except ValueError as exc:
        raise CampaignFileError(f"{source}: {exc}") from None
    for sheet in sheets:
        _check_placeholders(placeholders, sheet, config.region, source)
    return config


def _check_placeholders(
    placeholders: dict[str, str], sheet: Path, region: str, source: str
) -> None:
    """Each placeholder must be `{name}` or a variable column of the sheet, ignoring case.

    A sheet that is missing or unreadable is left to the import, which reports it."""
    wanted = {name for name in placeholders if name.casefold() != "name"}
    if not wanted or not sheet.is_file():
        return
    try:
        columns = variable_columns(sheet, region)
    except SheetError:
        return
    known = {column.casefold() for column in columns}
    for name in sorted(wanted):
        if name.casefold() not in known:
            listed = ", ".join(["name", *columns])
            raise CampaignFileError(
                f"{source}: script.{placeholders[name]}: no column {name!r} in {sheet.name};"
                f" placeholders: {listed} (case does not matter)"
            )


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that names a key twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} at line {line}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_campaign(path: str | Path) -> CampaignConfig:
    """Read and validate `campaigns/<name>.yaml`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CampaignFileError(f"{path}: no such campaign file") from None
    except OSError as exc:
        raise CampaignFileError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.constructor.ConstructorError as exc:
        raise CampaignFileError(f"{path}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise CampaignFileError(f"{path}: not valid YAML{where}") from None
    return parse_campaign(data, base_dir=path.parent, source=str(path))
