"""Offline providers: pocketsphinx STT, espeak-ng TTS and a scripted LLM.

Each implements the framework's own interface (`stt.STT`, `tts.TTS`, `llm.LLM`), so
the session measures and reports them exactly as it does the cloud providers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.local.llm import ScriptedLLM
    from agent.local.stt import PocketsphinxSTT
    from agent.local.tts import EspeakTTS

__all__ = ["EspeakTTS", "PocketsphinxSTT", "ScriptedLLM"]

_MODULES = {"EspeakTTS": "tts", "PocketsphinxSTT": "stt", "ScriptedLLM": "llm"}


def __getattr__(name: str) -> Any:
    """Import each provider when it is asked for: `agent.local.vocabulary` (which the cloud
    agent's answering-machine rules use) must not need pocketsphinx, the `[local]` extra."""
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"agent.local.{_MODULES[name]}"), name)
