"""Settings: environment, validation messages, secrets, and the documented example."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from campaign.config import ProviderMode, Settings, SettingsError, load_settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_env_example_documents_every_variable() -> None:
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    variables = {field.alias for field in Settings.model_fields.values()}
    assert variables - documented == set(), "undocumented in .env.example"
    assert documented - variables == set(), ".env.example names variables nobody reads"


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEKIT_URL", "wss://example.livekit.cloud")
    monkeypatch.setenv("AGENT_PROVIDERS", "local")
    monkeypatch.setenv("DIALER_DATABASE_URL", "postgresql://db/x")
    monkeypatch.setenv("OPENAI_BASE_URL", "")  # empty means unset
    settings = load_settings()
    assert settings.livekit_url == "wss://example.livekit.cloud"
    assert settings.livekit_http_url == "https://example.livekit.cloud"
    assert settings.agent_providers is ProviderMode.LOCAL
    assert settings.database_url == "postgresql://db/x"
    assert settings.openai_base_url is None


def test_explicit_arguments_beat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_NAME", "from-env")
    assert load_settings(AGENT_NAME="explicit").agent_name == "explicit"


def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEKIT_URL", "127.0.0.1:7880")
    monkeypatch.setenv("AGENT_PROVIDERS", "cheap")
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert "LIVEKIT_URL" in message
    assert "AGENT_PROVIDERS" in message


def test_require_lists_missing_names_and_never_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEKIT_API_KEY", "key")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "s3cr3t-value")
    monkeypatch.delenv("SIP_OUTBOUND_TRUNK_ID", raising=False)
    settings = load_settings()
    with pytest.raises(SettingsError, match="SIP_OUTBOUND_TRUNK_ID") as err:
        settings.require("livekit_api_key", "livekit_api_secret", "sip_outbound_trunk_id")
    assert "LIVEKIT_API_SECRET" not in str(err.value)
    assert "s3cr3t-value" not in repr(settings)


def test_local_providers_without_pocketsphinx_name_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without the `[local]` extra, AGENT_PROVIDERS=local says what to install (one line)."""
    from agent.providers import build_providers
    from campaign.contract import Script

    monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # `import pocketsphinx` now fails
    monkeypatch.delitem(sys.modules, "agent.local.stt", raising=False)
    settings = load_settings(AGENT_PROVIDERS="local")
    with pytest.raises(
        SettingsError, match=r"pip install 'livekit-campaign-dialer\[local\]'"
    ) as err:
        build_providers(settings, script=Script(), variables={}, vad_model=None)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)
