"""The cloud providers: Deepgram STT, OpenAI LLM, Cartesia TTS, and noise cancellation.

Each plugin gets its key and, when set, its base URL from `Settings`, so a proxy, a
self-hosted endpoint or a local stand-in speaking the provider's protocol can take
the provider's place without code changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from livekit import rtc
from livekit.agents import NOT_GIVEN, llm, stt, tts
from livekit.plugins import cartesia, deepgram, openai
from livekit.plugins.cartesia.models import TTSDefaultVoiceId

from campaign.config import Settings

logger = logging.getLogger(__name__)

#: Deepgram's streaming endpoint; `DEEPGRAM_BASE_URL` may give just the API root.
DEEPGRAM_LISTEN_PATH = "/v1/listen"
DEEPGRAM_DEFAULT_URL = "https://api.deepgram.com" + DEEPGRAM_LISTEN_PATH
CARTESIA_DEFAULT_URL = "https://api.cartesia.ai"
CARTESIA_MODEL = "sonic-3"
#: Silence (ms) before Deepgram marks speech final. Longer than the plugin's 25 ms so a
#: short pause on a noisy phone line does not cut a sentence in two.
DEEPGRAM_ENDPOINTING_MS = 100
#: LiveKit Cloud hosts; noise cancellation is licensed only there.
_CLOUD_HOST_SUFFIXES = (".livekit.cloud", ".livekit.run")

_warned_no_noise_cancellation = False


@dataclass(frozen=True)
class CloudProviders:
    """The three network models the agent session runs on (VAD stays local: Silero)."""

    stt: stt.STT[Any]
    llm: llm.LLM[Any]
    tts: tts.TTS[Any]


def build_cloud_providers(settings: Settings) -> CloudProviders:
    """Build Deepgram, OpenAI and Cartesia from settings.

    Raises `SettingsError` naming every missing API key.
    """
    settings.require("deepgram_api_key", "openai_api_key", "cartesia_api_key")
    return CloudProviders(
        stt=deepgram.STT(
            model=settings.deepgram_model,
            language="en-US",
            interim_results=True,
            punctuate=True,
            # numbers, dates and amounts arrive as digits, which tools can parse
            smart_format=True,
            endpointing_ms=DEEPGRAM_ENDPOINTING_MS,
            api_key=settings.deepgram_api_key.get_secret_value(),
            base_url=deepgram_listen_url(settings.deepgram_base_url),
        ),
        llm=openai.LLM(
            model=settings.openai_model,
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url or NOT_GIVEN,
        ),
        tts=cartesia.TTS(
            api_key=settings.cartesia_api_key.get_secret_value(),
            model=CARTESIA_MODEL,
            language="en",
            voice=settings.cartesia_voice or TTSDefaultVoiceId,
            base_url=(settings.cartesia_base_url or CARTESIA_DEFAULT_URL).rstrip("/"),
        ),
    )


def deepgram_listen_url(base_url: str | None) -> str:
    """The streaming endpoint for `DEEPGRAM_BASE_URL`: an API root or the full listen URL."""
    if not base_url:
        return DEEPGRAM_DEFAULT_URL
    base = base_url.rstrip("/")
    if base.endswith("/listen"):
        return base
    return base + DEEPGRAM_LISTEN_PATH


def is_livekit_cloud(livekit_url: str) -> bool:
    """Whether the server is LiveKit Cloud (a `*.livekit.cloud` host)."""
    host = urlparse(livekit_url).hostname or ""
    return host.endswith(_CLOUD_HOST_SUFFIXES)


def noise_cancellation_for(livekit_url: str) -> rtc.NoiseCancellationOptions | None:
    """BVC telephony noise cancellation on LiveKit Cloud, else None (warned once per process).

    The model ships inside the plugin, but the filter asks the room's server for a
    licence on every connection; a self-hosted server refuses it (the stream then runs
    unfiltered), so there the call carries on without it rather than failing.
    """
    global _warned_no_noise_cancellation
    if is_livekit_cloud(livekit_url):
        # imported only here: once loaded, the native filter asks every room's server
        # for a licence and logs errors on a self-hosted one
        from livekit.plugins import noise_cancellation

        return noise_cancellation.BVCTelephony()
    if not _warned_no_noise_cancellation:
        _warned_no_noise_cancellation = True
        logger.warning(
            "noise cancellation needs LiveKit Cloud; continuing without it on %s",
            urlparse(livekit_url).hostname or livekit_url,
        )
    return None
