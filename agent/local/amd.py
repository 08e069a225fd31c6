"""Rule-based answering machine detection for the offline stack.

The framework's AMD asks an LLM to classify the greeting by calling its
`save_prediction` tool. This LLM answers from phrases instead: a mailbox that is
full, a key-press menu, a voicemail greeting ("leave a message", "after the
tone"), and anything else is a person.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr
from livekit.agents import llm as lk_llm
from livekit.agents.voice.amd import AMDCategory

from agent.local.llm import CannedStream, Reply, tool_names
from agent.local.vocabulary import (
    IVR_PHRASES,
    UNAVAILABLE_PHRASES,
    VOICEMAIL_PHRASES,
    contains_phrase,
)

#: The AMD classifier's tool (livekit.agents.voice.amd.classifier).
SAVE_PREDICTION = "save_prediction"


def classify_greeting(transcript: str) -> AMDCategory:
    """What answered, judged from the words of its greeting."""
    if any(contains_phrase(transcript, p) for p in UNAVAILABLE_PHRASES):
        return AMDCategory.MACHINE_UNAVAILABLE
    if any(contains_phrase(transcript, p) for p in IVR_PHRASES):
        return AMDCategory.MACHINE_IVR
    if any(contains_phrase(transcript, p) for p in VOICEMAIL_PHRASES):
        return AMDCategory.MACHINE_VM
    return AMDCategory.HUMAN


class VoicemailRules(lk_llm.LLM[Any]):
    """An LLM for the framework's AMD that classifies greetings by phrase."""

    @property
    def model(self) -> str:
        return "voicemail-rules"

    @property
    def provider(self) -> str:
        return "local"

    def chat(
        self,
        *,
        chat_ctx: lk_llm.ChatContext,
        tools: list[lk_llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
        tool_choice: NotGivenOr[lk_llm.ToolChoice] = NOT_GIVEN,
        extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN,
    ) -> lk_llm.LLMStream:
        transcript = " ".join(
            item.text_content or ""
            for item in chat_ctx.items
            if item.type == "message" and item.role == "user"
        )
        reply = Reply()
        if SAVE_PREDICTION in tool_names(tools):
            label = classify_greeting(transcript)
            reply = Reply(tool_calls=[(SAVE_PREDICTION, {"label": label.value})])
        return CannedStream(
            self, reply=reply, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options
        )
