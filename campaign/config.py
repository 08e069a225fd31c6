"""Process settings from the environment (and `.env`).

Explicit arguments beat the environment, the environment beats defaults.
`load_dotenv` is called only by entry points (the CLI, the agent worker),
never at import time. Secrets are `SecretStr`, so they never print.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from campaign.errors import UserError, validation_problems


class ProviderMode(StrEnum):
    """Which speech and language providers the agent uses."""

    CLOUD = "cloud"  #: Deepgram STT, OpenAI LLM, Cartesia TTS (network required)
    LOCAL = "local"  #: pocketsphinx STT, espeak-ng TTS, scripted LLM (fully offline)


class SettingsError(UserError, ValueError):
    """Settings failed validation; the message names each variable and the problem."""


class Settings(BaseSettings):
    """Everything the dialer and the agent read from the environment.

    Every field is documented in `.env.example`; keep the two in step.
    """

    model_config = SettingsConfigDict(
        env_prefix="", extra="ignore", case_sensitive=False, env_ignore_empty=True
    )

    livekit_url: str = Field(default="ws://127.0.0.1:7880", alias="LIVEKIT_URL")
    livekit_api_key: str = Field(default="", alias="LIVEKIT_API_KEY")
    livekit_api_secret: SecretStr = Field(default=SecretStr(""), alias="LIVEKIT_API_SECRET")
    sip_outbound_trunk_id: str = Field(default="", alias="SIP_OUTBOUND_TRUNK_ID")

    database_url: str = Field(default="sqlite:///dialer.db", alias="DIALER_DATABASE_URL")
    reports_dir: Path = Field(default=Path("metrics_reports"), alias="DIALER_REPORTS_DIR")
    log_level: str = Field(default="INFO", alias="DIALER_LOG_LEVEL")
    # A contact sheet with more rows, or more bytes read (an XLSX's unpacked XML), is
    # refused with one line saying so, before it can fill the memory.
    sheet_max_rows: int = Field(default=1_000_000, ge=1, alias="DIALER_SHEET_MAX_ROWS")
    sheet_max_mb: int = Field(default=512, ge=1, alias="DIALER_SHEET_MAX_MB")
    # false: every number goes through phonenumbers itself, not the fast path that follows
    # its internals (for a phonenumbers release newer than the one pinned in pyproject.toml).
    number_fast_path: bool = Field(default=True, alias="DIALER_NUMBER_FAST_PATH")

    agent_name: str = Field(default="campaign-agent", alias="AGENT_NAME")
    agent_providers: ProviderMode = Field(default=ProviderMode.CLOUD, alias="AGENT_PROVIDERS")
    # The worker's health endpoint; 0 picks a free port (tests run several workers).
    agent_http_port: int = Field(default=8081, ge=0, le=65535, alias="AGENT_HTTP_PORT")
    # CPU load (0..1) above which the worker stops taking calls; LiveKit's default is 0.7.
    agent_load_threshold: float = Field(default=0.7, gt=0, alias="AGENT_LOAD_THRESHOLD")
    # 0: the worker's load is the machine's CPU use (LiveKit's default). N: calls in progress
    # / N, for hosts shared with busy processes; LiveKit routes while load < 0.7 (N=10: 7 calls).
    agent_max_calls: int = Field(default=0, ge=0, alias="AGENT_MAX_CALLS")

    deepgram_api_key: SecretStr = Field(default=SecretStr(""), alias="DEEPGRAM_API_KEY")
    openai_api_key: SecretStr = Field(default=SecretStr(""), alias="OPENAI_API_KEY")
    cartesia_api_key: SecretStr = Field(default=SecretStr(""), alias="CARTESIA_API_KEY")
    # Base URLs exist so a self-hosted or test endpoint can stand in for the cloud API.
    deepgram_base_url: str | None = Field(default=None, alias="DEEPGRAM_BASE_URL")
    openai_base_url: str | None = Field(default=None, alias="OPENAI_BASE_URL")
    cartesia_base_url: str | None = Field(default=None, alias="CARTESIA_BASE_URL")
    openai_model: str = Field(default="gpt-4o-mini", alias="OPENAI_MODEL")
    deepgram_model: str = Field(default="nova-3", alias="DEEPGRAM_MODEL")
    cartesia_voice: str | None = Field(default=None, alias="CARTESIA_VOICE")

    # The desk (`dialer serve`): where it listens, what it accepts, how long a sign-in lasts.
    desk_host: str = Field(default="127.0.0.1", alias="DESK_HOST")
    desk_port: int = Field(default=8700, ge=0, le=65535, alias="DESK_PORT")
    desk_max_upload_mb: float = Field(default=20.0, gt=0, alias="DESK_MAX_UPLOAD_MB")
    desk_session_hours: float = Field(default=12.0, gt=0, alias="DESK_SESSION_HOURS")
    # Failed sign-ins per user name in 15 minutes before further tries are refused (429).
    desk_login_attempts: int = Field(default=5, ge=1, alias="DESK_LOGIN_ATTEMPTS")
    # Proxies whose X-Forwarded-Proto/For are believed (HTTPS termination: Secure cookies).
    desk_trusted_proxies: str = Field(default="127.0.0.1", alias="DESK_TRUSTED_PROXIES")

    @field_validator("livekit_url")
    @classmethod
    def _url_scheme(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://", "http://", "https://")):
            raise ValueError("must start with ws://, wss://, http:// or https://")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level

    @property
    def livekit_http_url(self) -> str:
        """The server API URL (livekit-api accepts ws(s) too, but logs and docs read better)."""
        return self.livekit_url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)

    def require(self, *names: str) -> None:
        """Fail with one message naming every listed variable that is unset."""
        missing = []
        for name in names:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if not value:
                alias = type(self).model_fields[name].alias or name.upper()
                missing.append(alias)
        if missing:
            raise SettingsError(f"missing environment variable(s): {', '.join(missing)}")


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's error into one readable line per variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = [f"{name}: {message}" for name, message in validation_problems(exc)]
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once."""
    return load_settings()
