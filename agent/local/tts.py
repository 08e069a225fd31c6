"""Offline text to speech: espeak-ng in a subprocess, streamed as it speaks.

A `tts.TTS` whose `ChunkedStream` pushes espeak-ng's PCM as it arrives, so the
framework measures time to first byte and counts characters as for any TTS.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import uuid
from typing import Any

from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectionError,
    APIConnectOptions,
    APIError,
    tts,
)

#: espeak-ng's native rate for its standard voices.
SAMPLE_RATE = 22050
_READ_SIZE = 4096
_WAV_FMT_END = 12  # "RIFF" size "WAVE"


class EspeakTTS(tts.TTS[Any]):
    """espeak-ng speaking one voice at one speed (words per minute)."""

    def __init__(self, *, voice: str = "en-us", words_per_minute: int = 165) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=SAMPLE_RATE,
            num_channels=1,
        )
        self._voice = voice
        self._words_per_minute = words_per_minute

    @property
    def model(self) -> str:
        return f"espeak-ng-{self._voice}"

    @property
    def provider(self) -> str:
        return "espeak-ng"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return _EspeakStream(tts=self, input_text=text, conn_options=conn_options)

    def command(self) -> list[str]:
        """The espeak-ng command line; text is written to its stdin."""
        binary = shutil.which("espeak-ng")
        if binary is None:
            raise APIConnectionError("espeak-ng is not installed", retryable=False)
        return [binary, "--stdout", "-v", self._voice, "-s", str(self._words_per_minute)]


class _EspeakStream(tts.ChunkedStream):
    def __init__(self, *, tts: EspeakTTS, input_text: str, conn_options: APIConnectOptions):
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._espeak = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=uuid.uuid4().hex,
            sample_rate=SAMPLE_RATE,
            num_channels=1,
            mime_type="audio/pcm",
        )
        process = await asyncio.create_subprocess_exec(
            *self._espeak.command(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(self.input_text.encode())
            process.stdin.close()
            header = b""
            pcm_started = False
            while chunk := await process.stdout.read(_READ_SIZE):
                if pcm_started:
                    output_emitter.push(chunk)
                    continue
                header += chunk
                body = _pcm_after_header(header)
                if body is not None:
                    pcm_started = True
                    if body:
                        output_emitter.push(body)
            returncode = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        if returncode != 0 or not pcm_started:
            stderr = (
                (await process.stderr.read()).decode(errors="replace") if process.stderr else ""
            )
            raise APIError(
                f"espeak-ng failed (exit {returncode}): {stderr.strip()[:200]}", retryable=False
            )
        output_emitter.flush()


def _pcm_after_header(data: bytes) -> bytes | None:
    """The PCM after a WAV header once the header is complete, else None.

    espeak-ng streams, so its header carries placeholder sizes; only the chunk
    layout is read.
    """
    offset = _WAV_FMT_END
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack("<I", data[offset + 4 : offset + 8])
        if chunk_id == b"data":
            return data[offset + 8 :]
        offset += 8 + size
    return None
