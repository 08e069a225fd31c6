"""A stand-in for Deepgram's streaming speech-to-text websocket on loopback.

Speaks the live API the Deepgram plugin uses: `GET /v1/listen?encoding=linear16&
sample_rate=...&channels=...&interim_results=...&endpointing=...&vad_events=...`
upgraded to a websocket, `Authorization: Token <key>` (401 before the upgrade
otherwise); binary frames of raw linear16 audio; JSON control messages `KeepAlive`,
`Finalize` and `CloseStream`. It answers as the real service does: `SpeechStarted`
(with `vad_events`), interim and final `Results` (`is_final`, `speech_final`,
`from_finalize`, `start`, `duration`, `channel.alternatives[0]` with `transcript`,
`confidence` and timed `words`), `UtteranceEnd` (with `utterance_end_ms`), and a
closing `Metadata` message with the audio duration before it closes the socket.

It does not recognise speech. It finds speech by signal energy in the audio it
receives and ends an utterance after `endpointing` ms of silence, exactly as the
query asked; each utterance's words come from a fixed script, in order. Every
connection records its query, auth header, the audio bytes and the messages sent,
so a test can check what the plugin streamed (e.g. N seconds at the announced rate).
"""

from __future__ import annotations

import array
import hashlib
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from ._loopback import LoopbackServer

#: RMS (of int16 samples) above which a 20 ms window counts as speech.
SPEECH_RMS = 300.0
_WINDOW_S = 0.02
_INTERIM_EVERY_S = 1.0
_WORDS_PER_SECOND = 2.5
_MODEL_UUID = "40bd3654-e622-47c4-a111-63a61b23bfe8"


@dataclass
class ListenConnection:
    """One `/v1/listen` websocket: what the plugin sent and what the stand-in answered."""

    query: dict[str, str]
    authorization: str | None
    request_id: str
    sample_rate: int
    channels: int
    audio: bytearray = field(default_factory=bytearray)
    binary_frames: int = 0
    control: list[str] = field(default_factory=list)  # KeepAlive / Finalize / CloseStream
    sent: list[dict[str, Any]] = field(default_factory=list)

    @property
    def audio_seconds(self) -> float:
        return len(self.audio) / 2 / self.channels / self.sample_rate


class _Segmenter:
    """Energy-based speech detection and endpointing over one connection's audio."""

    def __init__(self, conn: ListenConnection, standin: DeepgramStandIn) -> None:
        self._conn = conn
        self._standin = standin
        self._pending = bytearray()
        self._window_bytes = int(conn.sample_rate * _WINDOW_S) * 2 * conn.channels
        self._pos = 0.0  # seconds of audio examined
        self._in_speech = False
        self._start = 0.0
        self._last_voice = 0.0
        self._last_interim = 0.0
        self._words: list[str] = []
        self._awaiting_utterance_end = False
        query = conn.query
        self._interim = query.get("interim_results") == "true"
        self._vad_events = query.get("vad_events") == "true"
        endpointing = query.get("endpointing", "10")
        self._endpointing = None if endpointing == "false" else int(endpointing) / 1000
        utterance_end = query.get("utterance_end_ms")
        self._utterance_end = int(utterance_end) / 1000 if utterance_end else None

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._pending.extend(data)
        out: list[dict[str, Any]] = []
        while len(self._pending) >= self._window_bytes:
            window = bytes(self._pending[: self._window_bytes])
            del self._pending[: self._window_bytes]
            self._pos += _WINDOW_S
            out.extend(self._step(_rms(window) >= SPEECH_RMS))
        return out

    def finalize(self) -> list[dict[str, Any]]:
        """Flush what was heard so far (the `Finalize` and `CloseStream` messages)."""
        if self._pending:
            self._pos += len(self._pending) / 2 / self._conn.channels / self._conn.sample_rate
            self._pending.clear()
        if self._in_speech:
            self._in_speech = False
            return [self._result(final=True, speech_final=False, from_finalize=True)]
        return [self._empty_final()]

    def _step(self, voiced: bool) -> list[dict[str, Any]]:
        t = self._pos
        out: list[dict[str, Any]] = []
        if voiced:
            self._awaiting_utterance_end = False
            if not self._in_speech:
                self._in_speech = True
                self._start = t - _WINDOW_S
                self._last_interim = t
                self._words = self._standin.next_transcript().split()
                if self._vad_events:
                    out.append(
                        {"type": "SpeechStarted", "channel": [0, 1], "timestamp": self._start}
                    )
            self._last_voice = t
            if self._interim and t - self._last_interim >= _INTERIM_EVERY_S:
                self._last_interim = t
                out.append(self._result(final=False, speech_final=False))
            return out
        silence = t - self._last_voice
        if (
            self._in_speech
            and self._endpointing is not None
            and silence >= self._endpointing - 1e-9
        ):
            self._in_speech = False
            self._awaiting_utterance_end = self._utterance_end is not None
            out.append(self._result(final=True, speech_final=True))
        if (
            self._awaiting_utterance_end
            and self._utterance_end is not None
            and silence >= self._utterance_end - 1e-9
        ):
            self._awaiting_utterance_end = False
            out.append(
                {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": self._last_voice}
            )
        return out

    def _result(
        self, *, final: bool, speech_final: bool, from_finalize: bool = False
    ) -> dict[str, Any]:
        if final:
            words = self._words
        else:
            heard = self._last_voice - self._start
            count = max(1, int(heard * _WORDS_PER_SECOND))
            words = self._words[: min(count, max(1, len(self._words) - 1))]
        end = self._last_voice
        step = (end - self._start) / max(1, len(words))
        timed = [
            {
                "word": w.strip(".,!?").lower(),
                "start": round(self._start + i * step, 3),
                "end": round(self._start + (i + 1) * step, 3),
                "confidence": 0.98,
                "punctuated_word": w,
            }
            for i, w in enumerate(words)
        ]
        return self._results_message(
            transcript=" ".join(words),
            words=timed,
            start=self._start,
            duration=self._pos - self._start,
            final=final,
            speech_final=speech_final,
            from_finalize=from_finalize,
        )

    def _empty_final(self) -> dict[str, Any]:
        return self._results_message(
            transcript="",
            words=[],
            start=self._pos,
            duration=0.0,
            final=True,
            speech_final=False,
            from_finalize=True,
        )

    def _results_message(
        self,
        *,
        transcript: str,
        words: list[dict[str, Any]],
        start: float,
        duration: float,
        final: bool,
        speech_final: bool,
        from_finalize: bool,
    ) -> dict[str, Any]:
        return {
            "type": "Results",
            "channel_index": [0, 1],
            "duration": round(duration, 3),
            "start": round(start, 3),
            "is_final": final,
            "speech_final": speech_final,
            "from_finalize": from_finalize,
            "channel": {
                "alternatives": [
                    {"transcript": transcript, "confidence": 0.98 if words else 0.0, "words": words}
                ]
            },
            "metadata": {
                "request_id": self._conn.request_id,
                "model_info": {"name": "general-nova-3", "version": "2024-12-20", "arch": "nova-3"},
                "model_uuid": _MODEL_UUID,
            },
        }


def _rms(window: bytes) -> float:
    samples = array.array("h", window)
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


class DeepgramStandIn(LoopbackServer):
    """Deepgram live transcription on 127.0.0.1; give the plugin `listen_url` as `base_url`."""

    def __init__(self, transcripts: Sequence[str], *, api_key: str) -> None:
        super().__init__()
        self._transcripts = list(transcripts)
        self._api_key = api_key
        self.connections: list[ListenConnection] = []
        self.rejected: list[int] = []
        self.app.router.add_get("/v1/listen", self._listen)

    @property
    def listen_url(self) -> str:
        return f"{self.base_url}/v1/listen"

    def next_transcript(self) -> str:
        """The scripted words of the next utterance (the last one repeats)."""
        if len(self._transcripts) > 1:
            return self._transcripts.pop(0)
        return self._transcripts[0] if self._transcripts else ""

    async def _listen(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization")
        if auth not in (f"Token {self._api_key}", f"Bearer {self._api_key}"):
            self.rejected.append(401)
            return web.json_response(
                {
                    "err_code": "INVALID_AUTH",
                    "err_msg": "Invalid credentials.",
                    "request_id": str(uuid.uuid4()),
                },
                status=401,
                headers={"dg-error": "Invalid credentials."},
            )
        query = dict(request.query)
        if query.get("encoding", "linear16") != "linear16" or "sample_rate" not in query:
            self.rejected.append(400)
            return web.json_response(
                {"err_code": "Bad Request", "err_msg": "this stand-in takes linear16 only"},
                status=400,
            )
        conn = ListenConnection(
            query=query,
            authorization=auth,
            request_id=str(uuid.uuid4()),
            sample_rate=int(query["sample_rate"]),
            channels=int(query.get("channels", "1")),
        )
        self.connections.append(conn)
        ws = web.WebSocketResponse()
        ws.headers["dg-request-id"] = conn.request_id
        await ws.prepare(request)
        self.track(ws)
        segmenter = _Segmenter(conn, self)

        async def send(messages: list[dict[str, Any]]) -> None:
            for message in messages:
                conn.sent.append(message)
                await ws.send_str(json.dumps(message))

        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    conn.audio.extend(msg.data)
                    conn.binary_frames += 1
                    await send(segmenter.feed(msg.data))
                elif msg.type == WSMsgType.TEXT:
                    kind = json.loads(msg.data).get("type", "")
                    conn.control.append(kind)
                    if kind == "Finalize":
                        await send(segmenter.finalize())
                    elif kind == "CloseStream":
                        await send(segmenter.finalize())
                        await send([self._metadata(conn)])
                        await ws.close()
                        break
        finally:
            self.untrack(ws)
        return ws

    def _metadata(self, conn: ListenConnection) -> dict[str, Any]:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": conn.request_id,
            "sha256": hashlib.sha256(conn.audio).hexdigest(),
            "created": datetime.now(UTC).isoformat(),
            "duration": round(conn.audio_seconds, 3),
            "channels": conn.channels,
            "models": [_MODEL_UUID],
            "model_info": {
                _MODEL_UUID: {"name": "general-nova-3", "version": "2024-12-20", "arch": "nova-3"}
            },
        }
