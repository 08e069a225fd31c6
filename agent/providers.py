"""Speech, language and turn-taking models for one call, chosen by settings.

`cloud`: Deepgram STT, OpenAI LLM, Cartesia TTS (built in `agent.cloud`), with
BVC telephony noise cancellation on LiveKit Cloud. `local`: pocketsphinx,
the scripted LLM and espeak-ng, fully offline. Both use the Silero VAD, the
local turn-detector model and VAD interruption, so on a self-hosted server
nothing reaches LiveKit Cloud.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from livekit import rtc
from livekit.agents import inference
from livekit.agents import llm as lk_llm
from livekit.agents import stt as lk_stt
from livekit.agents import tts as lk_tts
from livekit.agents import vad as lk_vad
from livekit.agents.voice.turn import TurnDetectionMode, TurnHandlingOptions

from campaign.config import ProviderMode, Settings, SettingsError
from campaign.contract import Script

logger = logging.getLogger(__name__)

#: Room input rate: the offline STT and the VAD work at 16 kHz, so resample once.
LOCAL_INPUT_SAMPLE_RATE = 16000
CLOUD_INPUT_SAMPLE_RATE = 24000

_turn_detector_failed: str | None = None


@dataclass(frozen=True)
class Providers:
    """Everything an `AgentSession` runs on."""

    stt: lk_stt.STT[Any]
    llm: lk_llm.LLM[Any]
    tts: lk_tts.TTS[Any]
    vad: lk_vad.VAD
    noise_cancellation: rtc.NoiseCancellationOptions | None
    input_sample_rate: int
    turn_handling: TurnHandlingOptions


def preload_turn_detector() -> None:
    """Load the local turn-detector model now (it ships inside livekit-local-inference).

    Called from the worker's process prewarm. If it cannot load, calls fall back to
    VAD-only turn detection and this logs one warning per process.
    """
    global _turn_detector_failed
    from livekit import local_inference

    try:
        local_inference.init_eot()
    except (RuntimeError, OSError, ValueError) as exc:
        _turn_detector_failed = str(exc)
        logger.warning(
            "the local turn-detector model cannot load (%s); using VAD-only turn detection",
            exc,
        )


def turn_handling(*, preemptive: bool) -> TurnHandlingOptions:
    """Local turn detector (or VAD when it cannot load) and VAD interruption."""
    detection: TurnDetectionMode = (
        "vad" if _turn_detector_failed else inference.TurnDetector(version="v1-mini")
    )
    return {
        "turn_detection": detection,
        # one word ("Hello?", "OK") does not cut the agent off; a sentence does
        "interruption": {"mode": "vad", "min_words": 2},
        "preemptive_generation": {"enabled": preemptive},
    }


def build_providers(
    settings: Settings,
    *,
    script: Script,
    variables: dict[str, str],
    vad_model: lk_vad.VAD,
) -> Providers:
    """The providers `settings.agent_providers` names, for one call following `script`."""
    if settings.agent_providers is ProviderMode.LOCAL:
        try:  # the offline speech to text is the `[local]` extra
            from agent.local import EspeakTTS, PocketsphinxSTT, ScriptedLLM
        except ModuleNotFoundError as exc:
            raise SettingsError(
                f"AGENT_PROVIDERS=local needs {exc.name}, which is not installed:"
                " pip install 'livekit-campaign-dialer[local]'"
            ) from None
        from agent.local.vocabulary import corpus

        return Providers(
            stt=PocketsphinxSTT(phrases=corpus(script)),
            llm=ScriptedLLM(script=script, variables=variables),
            tts=EspeakTTS(),
            vad=vad_model,
            noise_cancellation=None,
            input_sample_rate=LOCAL_INPUT_SAMPLE_RATE,
            # the scripted LLM answers in microseconds: nothing to gain from guessing early
            turn_handling=turn_handling(preemptive=False),
        )

    from agent.cloud import build_cloud_providers, noise_cancellation_for

    cloud = build_cloud_providers(settings)
    return Providers(
        stt=cloud.stt,
        llm=cloud.llm,
        tts=cloud.tts,
        vad=vad_model,
        noise_cancellation=noise_cancellation_for(settings.livekit_url),
        input_sample_rate=CLOUD_INPUT_SAMPLE_RATE,
        turn_handling=turn_handling(preemptive=True),
    )
