"""Offline providers: pocketsphinx STT, espeak-ng TTS and a scripted LLM.

Each implements the framework's own interface (`stt.STT`, `tts.TTS`, `llm.LLM`), so
the session measures and reports them exactly as it does the cloud providers.
"""

from __future__ import annotations

from agent.local.llm import ScriptedLLM
from agent.local.stt import PocketsphinxSTT
from agent.local.tts import EspeakTTS

__all__ = ["EspeakTTS", "PocketsphinxSTT", "ScriptedLLM"]
