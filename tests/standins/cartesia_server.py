"""A stand-in for Cartesia's text-to-speech API on loopback.

Speaks what the Cartesia plugin uses:
- the websocket `GET /tts/websocket?cartesia_version=...` (key in the `X-API-Key`
  header or an `api_key` query parameter, 401 before the upgrade otherwise), taking
  generation requests (`model_id`, `voice`, `output_format`, `language`,
  `add_timestamps`, `context_id`, `transcript`, `continue`) and `cancel` messages,
  and answering per context with `chunk` messages (base64 raw PCM), `timestamps`
  messages (`word_timestamps` with `words`, `start`, `end`) when asked, and `done`
  once the context's input ends (`continue: false`);
- `POST /tts/bytes`, answering with the raw PCM body.

The audio is real PCM in the requested format: a tone whose length is proportional to
the text (`SECONDS_PER_CHAR`). Each context records its transcripts and the audio it
was sent, so a test can compare what the plugin emitted with what the server produced.
"""

from __future__ import annotations

import array
import base64
import json
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from ._loopback import LoopbackServer

SECONDS_PER_CHAR = 0.06
_TONE_HZ = 220.0
_CHUNK_S = 0.1


@dataclass
class SpeechContext:
    """One `context_id`: the text the plugin streamed in and the audio it got back."""

    context_id: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    sample_rate: int = 0
    audio_bytes: int = 0
    done: bool = False
    cancelled: bool = False

    @property
    def transcript(self) -> str:
        return "".join(r.get("transcript", "") for r in self.requests)

    @property
    def audio_seconds(self) -> float:
        return self.audio_bytes / 2 / self.sample_rate if self.sample_rate else 0.0


@dataclass
class TTSConnection:
    """One websocket: how the plugin connected."""

    query: dict[str, str]
    api_key_header: str | None
    messages_sent: list[dict[str, Any]] = field(default_factory=list)


def synthesize(text: str, sample_rate: int) -> bytes:
    """Mono int16 PCM for `text`: a tone `SECONDS_PER_CHAR` long per non-blank character."""
    count = int(len(text.strip()) * SECONDS_PER_CHAR * sample_rate)
    amplitude = 0.3 * 32767
    step = 2 * math.pi * _TONE_HZ / sample_rate
    samples = array.array("h", (int(amplitude * math.sin(step * i)) for i in range(count)))
    return samples.tobytes()


def _format_error(request: dict[str, Any]) -> str | None:
    output = request.get("output_format") or {}
    if output.get("container") != "raw" or output.get("encoding") != "pcm_s16le":
        return "this stand-in produces raw pcm_s16le only"
    if not isinstance(output.get("sample_rate"), int):
        return "output_format.sample_rate is required"
    if not request.get("model_id"):
        return "model_id is required"
    return None


class CartesiaStandIn(LoopbackServer):
    """Cartesia TTS on 127.0.0.1; give the plugin `base_url` as its `base_url`."""

    def __init__(self, *, api_key: str) -> None:
        super().__init__()
        self._api_key = api_key
        self.connections: list[TTSConnection] = []
        self.contexts: dict[str, SpeechContext] = {}
        self.bytes_requests: list[dict[str, Any]] = []
        self.rejected: list[int] = []
        self.app.router.add_get("/tts/websocket", self._websocket)
        self.app.router.add_post("/tts/bytes", self._bytes)

    def _authorized(self, request: web.Request) -> bool:
        key = request.headers.get("X-API-Key") or request.query.get("api_key")
        return key == self._api_key

    def _reject(self, status: int, message: str) -> web.Response:
        self.rejected.append(status)
        return web.json_response({"error": message}, status=status)

    async def _bytes(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._reject(401, "Invalid API key")
        if not request.headers.get("Cartesia-Version"):
            return self._reject(400, "Cartesia-Version header is required")
        body = await request.json()
        if error := _format_error(body):
            return self._reject(400, error)
        self.bytes_requests.append(body)
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        pcm = synthesize(body.get("transcript", ""), body["output_format"]["sample_rate"])
        chunk = int(body["output_format"]["sample_rate"] * _CHUNK_S) * 2
        for start in range(0, len(pcm), chunk):
            await response.write(pcm[start : start + chunk])
        await response.write_eof()
        return response

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return self._reject(401, "Invalid API key")
        if not request.query.get("cartesia_version"):
            return self._reject(400, "cartesia_version is required")
        conn = TTSConnection(
            query=dict(request.query), api_key_header=request.headers.get("X-API-Key")
        )
        self.connections.append(conn)
        ws = web.WebSocketResponse()
        ws.headers["X-Request-Id"] = str(uuid.uuid4())
        await ws.prepare(request)
        self.track(ws)

        async def send(message: dict[str, Any]) -> None:
            conn.messages_sent.append(message)
            await ws.send_str(json.dumps(message))

        offsets: dict[str, float] = {}  # audio seconds already produced per context
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                req = json.loads(msg.data)
                context_id = req.get("context_id") or ""
                ctx = self.contexts.setdefault(context_id, SpeechContext(context_id))
                if req.get("cancel"):
                    ctx.cancelled = True
                    continue
                ctx.requests.append(req)
                if error := _format_error(req):
                    await send(
                        {
                            "type": "error",
                            "context_id": context_id,
                            "status_code": 400,
                            "done": True,
                            "error": error,
                        }
                    )
                    continue
                ctx.sample_rate = req["output_format"]["sample_rate"]
                text = req.get("transcript", "")
                if text.strip():
                    offset = offsets.get(context_id, 0.0)
                    pcm = synthesize(text, ctx.sample_rate)
                    chunk = int(ctx.sample_rate * _CHUNK_S) * 2
                    for start in range(0, len(pcm), chunk):
                        data = pcm[start : start + chunk]
                        ctx.audio_bytes += len(data)
                        await send(
                            {
                                "type": "chunk",
                                "data": base64.b64encode(data).decode(),
                                "done": False,
                                "status_code": 206,
                                "step_time": 1.0,
                                "context_id": context_id,
                            }
                        )
                    duration = len(pcm) / 2 / ctx.sample_rate
                    if req.get("add_timestamps"):
                        await send(_timestamps(context_id, text, offset, duration))
                    offsets[context_id] = offset + duration
                if req.get("continue") is False:
                    ctx.done = True
                    await send(
                        {"type": "done", "done": True, "status_code": 206, "context_id": context_id}
                    )
        finally:
            self.untrack(ws)
        return ws


def _timestamps(context_id: str, text: str, offset: float, duration: float) -> dict[str, Any]:
    words = text.split()
    step = duration / len(words)
    return {
        "type": "timestamps",
        "done": False,
        "status_code": 206,
        "context_id": context_id,
        "word_timestamps": {
            "words": words,
            "start": [round(offset + i * step, 3) for i in range(len(words))],
            "end": [round(offset + (i + 1) * step, 3) for i in range(len(words))],
        },
    }
