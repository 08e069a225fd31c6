"""A stand-in for OpenAI's Chat Completions API on loopback.

Speaks what the OpenAI plugin uses: `POST /v1/chat/completions` with `stream: true`,
answered with server-sent `chat.completion.chunk` events (text deltas, tool-call
deltas with streamed arguments, a final usage chunk when
`stream_options.include_usage` is set, then `data: [DONE]`), and `GET /v1/models`
(the plugin's prewarm). Bearer auth is checked like the real API (401 otherwise).

Replies are scripted: a list consumed in order, or a function of the request body.
Token counts are deterministic (words and punctuation marks), recorded per request so
tests can compare them with what the plugin reports.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ._loopback import LoopbackServer

_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class ToolCall:
    """A function call the scripted model makes."""

    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    """One scripted assistant turn: text, tool calls, or both."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


Responder = Callable[[dict[str, Any]], Reply]


@dataclass
class ChatRequest:
    """What one chat-completions request carried and what the stand-in answered."""

    body: dict[str, Any]
    authorization: str | None
    reply: Reply
    prompt_tokens: int
    completion_tokens: int
    response_id: str


@dataclass
class _Script:
    replies: list[Reply] = field(default_factory=list)

    def __call__(self, body: dict[str, Any]) -> Reply:
        if not self.replies:
            raise LookupError("the scripted replies are used up")
        return self.replies.pop(0)


def count_tokens(text: str) -> int:
    """The stand-in's tokenizer: one token per word or punctuation mark."""
    return len(_TOKEN.findall(text))


class OpenAIStandIn(LoopbackServer):
    """Chat completions on 127.0.0.1; point the plugin's `base_url` at `api_url`."""

    def __init__(
        self,
        replies: Responder | Sequence[Reply],
        *,
        api_key: str,
        chunk_delay: float = 0.005,
    ) -> None:
        super().__init__()
        self._responder: Responder = (
            replies if callable(replies) else _Script(replies=list(replies))
        )
        self._api_key = api_key
        self._chunk_delay = chunk_delay
        self.requests: list[ChatRequest] = []
        self.rejected: list[int] = []  # HTTP status of each refused request
        self.app.router.add_post("/v1/chat/completions", self._chat_completions)
        self.app.router.add_get("/v1/models", self._models)

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v1"

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self._api_key}"

    def _error(self, status: int, message: str, code: str | None) -> web.Response:
        self.rejected.append(status)
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
        return web.json_response({"error": error}, status=status)

    async def _models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error(401, "Incorrect API key provided.", "invalid_api_key")
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "system"}
                ],
            }
        )

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._error(401, "Incorrect API key provided.", "invalid_api_key")
        body = await request.json()
        if not body.get("model") or not body.get("messages"):
            return self._error(400, "'model' and 'messages' are required.", None)
        if body.get("stream") is not True:
            return self._error(400, "this stand-in serves streaming requests only", None)

        reply = self._responder(body)
        prompt_tokens = count_tokens(json.dumps(body["messages"]))
        prompt_tokens += count_tokens(json.dumps(body.get("tools", [])))
        completion_tokens = count_tokens(reply.text) + sum(
            count_tokens(call.name + json.dumps(call.arguments)) for call in reply.tool_calls
        )
        response_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.requests.append(
            ChatRequest(
                body=body,
                authorization=request.headers.get("Authorization"),
                reply=reply,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                response_id=response_id,
            )
        )

        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "x-request-id": f"req_{uuid.uuid4().hex}",
            }
        )
        await response.prepare(request)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        created = int(time.time())

        async def send(choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> None:
            chunk: dict[str, Any] = {
                "id": response_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body["model"],
                "service_tier": "default",
                "system_fingerprint": "fp_standin",
                "choices": choices,
            }
            if include_usage:
                chunk["usage"] = usage
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(self._chunk_delay)

        def delta(content: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {"index": 0, "delta": content, "logprobs": None, "finish_reason": finish_reason}

        await send([delta({"role": "assistant", "content": "", "refusal": None})], None)
        for piece in re.findall(r"\S+\s*", reply.text):
            await send([delta({"content": piece})], None)
        for index, call in enumerate(reply.tool_calls):
            head = {
                "index": index,
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            await send([delta({"tool_calls": [head]})], None)
            arguments = json.dumps(call.arguments)
            # real responses stream arguments in small fragments
            for start in range(0, len(arguments), 8):
                fragment = {"index": index, "function": {"arguments": arguments[start : start + 8]}}
                await send([delta({"tool_calls": [fragment]})], None)
        await send([delta({}, "tool_calls" if reply.tool_calls else "stop")], None)
        if include_usage:
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            }
            await send([], usage)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
