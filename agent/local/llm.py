"""An offline LLM that follows the campaign script literally.

It reads the conversation so far and answers as the script says: greeting and
question first, then a tool call when the callee's words match a keyword
(`set_disposition`) or a do-not-call phrase (`add_to_do_not_call`), the question
again when nothing matched, and goodbye with `end_call` once the outcome is known.
Tool calls are real `FunctionToolCall`s, so the session runs the agent's tools,
and each reply reports usage (one token per word) like any provider.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions, NotGivenOr
from livekit.agents import llm as lk_llm

from agent.local.vocabulary import contains_phrase
from campaign.contract import Script

#: Said before the question when the callee's answer matched nothing.
REASK_PREFIX = "Sorry, I did not catch that."

#: The agent's tools (see `agent.assistant`).
END_CALL = "end_call"
SET_DISPOSITION = "set_disposition"
ADD_TO_DO_NOT_CALL = "add_to_do_not_call"
_OUTCOME_TOOLS = frozenset({SET_DISPOSITION, ADD_TO_DO_NOT_CALL})


@dataclass(frozen=True)
class Reply:
    """What one LLM turn says and which tools it calls (name, arguments)."""

    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


class CannedStream(lk_llm.LLMStream):
    """Streams a reply decided up front: text, then tool calls, then usage."""

    def __init__(
        self,
        llm: lk_llm.LLM[Any],
        *,
        reply: Reply,
        chat_ctx: lk_llm.ChatContext,
        tools: list[lk_llm.Tool],
        conn_options: APIConnectOptions,
    ) -> None:
        super().__init__(llm, chat_ctx=chat_ctx, tools=tools, conn_options=conn_options)
        self._reply = reply

    async def _run(self) -> None:
        request_id = uuid.uuid4().hex
        if self._reply.text:
            self._event_ch.send_nowait(
                lk_llm.ChatChunk(
                    id=request_id,
                    delta=lk_llm.ChoiceDelta(role="assistant", content=self._reply.text),
                )
            )
        calls = [
            lk_llm.FunctionToolCall(
                name=name, arguments=json.dumps(arguments), call_id=f"call_{uuid.uuid4().hex[:12]}"
            )
            for name, arguments in self._reply.tool_calls
        ]
        if calls:
            self._event_ch.send_nowait(
                lk_llm.ChatChunk(
                    id=request_id, delta=lk_llm.ChoiceDelta(role="assistant", tool_calls=calls)
                )
            )
        prompt = sum(_words(item) for item in self._chat_ctx.items)
        completion = len(self._reply.text.split()) + sum(len(c.arguments.split()) for c in calls)
        self._event_ch.send_nowait(
            lk_llm.ChatChunk(
                id=request_id,
                usage=lk_llm.CompletionUsage(
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    total_tokens=prompt + completion,
                ),
            )
        )


def _words(item: lk_llm.ChatItem) -> int:
    if item.type == "message":
        return len((item.text_content or "").split())
    if item.type == "function_call":
        return len(item.arguments.split()) + 1
    if item.type == "function_call_output":
        return len(item.output.split())
    return 0


def tool_names(tools: list[lk_llm.Tool] | None) -> set[str]:
    return set(lk_llm.ToolContext(tools or []).function_tools)


class ScriptedLLM(lk_llm.LLM[Any]):
    """Follows `Script`: greeting and question, keyword branches, goodbye and tool calls."""

    def __init__(self, *, script: Script, variables: dict[str, str], max_reasks: int = 1) -> None:
        super().__init__()
        self._script = script
        self._variables = variables
        self._max_reasks = max_reasks
        # the greeting joins the conversation only once spoken; until then, this says
        # it is on its way, so a turn that completes meanwhile does not greet again
        self._greeted = False

    @property
    def model(self) -> str:
        return "scripted"

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
        reply = self.decide(chat_ctx, tool_names(tools))
        return CannedStream(
            self, reply=reply, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options
        )

    def decide(self, chat_ctx: lk_llm.ChatContext, tools: set[str]) -> Reply:
        """The script's next line for this conversation."""
        items = [
            item
            for item in chat_ctx.items
            if item.type in ("function_call", "function_call_output")
            or (item.type == "message" and item.role in ("user", "assistant"))
        ]
        called = {item.name for item in items if item.type == "function_call"}
        if END_CALL in called:
            return Reply()
        if called & _OUTCOME_TOOLS or (items and items[-1].type == "function_call_output"):
            return self._goodbye(tools)

        spoken = [i for i in items if i.type == "message" and i.role == "assistant"]
        if not spoken and not self._greeted:
            self._greeted = True
            return Reply(
                text=self._say(self._script.greeting) + " " + self._say(self._script.question)
            )

        # what the callee said since the agent last spoke (all of it before the greeting)
        last_spoken = items.index(spoken[-1]) + 1 if spoken else 0
        heard = " ".join(
            item.text_content or ""
            for item in items[last_spoken:]
            if item.type == "message" and item.role == "user"
        )
        if heard:
            if ADD_TO_DO_NOT_CALL in tools and any(
                contains_phrase(heard, phrase) for phrase in self._script.do_not_call_phrases
            ):
                return Reply(
                    text="I understand, we will not call you again.",
                    tool_calls=[(ADD_TO_DO_NOT_CALL, {"reason": heard})],
                )
            for keyword, disposition in self._script.keywords.items():
                if SET_DISPOSITION in tools and contains_phrase(heard, keyword):
                    arguments: dict[str, Any] = {"disposition": disposition}
                    if disposition == "callback":
                        arguments["callback_at"] = keyword
                    return Reply(tool_calls=[(SET_DISPOSITION, arguments)])

        if not spoken:
            return Reply()  # the greeting is still being spoken
        if len(spoken) <= self._max_reasks:
            return Reply(text=f"{REASK_PREFIX} {self._say(self._script.question)}")
        return self._goodbye(tools)

    def _goodbye(self, tools: set[str]) -> Reply:
        calls: list[tuple[str, dict[str, Any]]] = [(END_CALL, {})] if END_CALL in tools else []
        return Reply(text=self._say(self._script.goodbye), tool_calls=calls)

    def _say(self, text: str) -> str:
        return self._script.render(text, self._variables)
