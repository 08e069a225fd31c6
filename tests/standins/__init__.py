"""Local servers that speak the cloud AI providers' wire protocols on 127.0.0.1.

The one permitted replacement in the tests: Deepgram, OpenAI and Cartesia cannot be
reached here, so the real plugins talk to these instead (see DESIGN.md, Testing).
"""

from __future__ import annotations

from .cartesia_server import CartesiaStandIn
from .deepgram_server import DeepgramStandIn
from .openai_server import OpenAIStandIn, Reply, ToolCall

__all__ = ["CartesiaStandIn", "DeepgramStandIn", "OpenAIStandIn", "Reply", "ToolCall"]
