"""The cloud providers (Deepgram, OpenAI, Cartesia) against local wire-protocol stand-ins.

The real plugins, built by `agent.cloud`, are pointed at servers on 127.0.0.1 that
speak each provider's protocol (tests/standins). Nothing here reaches the network.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
import time
import wave
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from livekit import rtc
from livekit.agents import (
    Agent,
    AgentSession,
    APIConnectOptions,
    APIStatusError,
    ChatMessage,
    RunContext,
    function_tool,
    llm,
    stt,
    utils,
)
from livekit.agents.metrics import LLMMetrics, STTMetrics, TTSMetrics
from livekit.agents.metrics.usage import LLMModelUsage, STTModelUsage, TTSModelUsage
from livekit.agents.voice.events import (
    AgentStateChangedEvent,
    ConversationItemAddedEvent,
    SessionUsageUpdatedEvent,
)
from livekit.agents.voice.io import AudioInput, AudioOutput, AudioOutputCapabilities
from livekit.plugins import silero

from agent import cloud
from agent.cloud import CloudProviders, build_cloud_providers, noise_cancellation_for
from campaign.config import Settings, SettingsError, load_settings
from tests.standins.cartesia_server import SECONDS_PER_CHAR, CartesiaStandIn
from tests.standins.deepgram_server import DeepgramStandIn
from tests.standins.openai_server import OpenAIStandIn, Reply, Responder, ToolCall

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

DG_KEY, OA_KEY, CA_KEY = "dg-test-key", "sk-test-key", "ca-test-key"
SPOKEN = "yes I am interested in the offer"
HEARD = "Yes, I am interested in the offer."
GOODBYE = "Great, I have noted that you are interested. Goodbye!"
NO_RETRY = APIConnectOptions(max_retry=0, timeout=5.0)
FRAME_S = 0.01


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> list[rtc.AudioFrame]:
    """The callee's words, spoken by espeak-ng, as 10 ms frames."""
    espeak = shutil.which("espeak-ng")
    assert espeak, "espeak-ng is required (apt-get install espeak-ng)"
    path = tmp_path_factory.mktemp("speech") / "callee.wav"
    subprocess.run([espeak, "-w", str(path), SPOKEN], check=True, timeout=30)
    return wav_frames(path)


def wav_frames(path: Path) -> list[rtc.AudioFrame]:
    with wave.open(str(path)) as wav:
        rate = wav.getframerate()
        data = wav.readframes(wav.getnframes())
    step = int(rate * FRAME_S) * 2
    return [
        rtc.AudioFrame(data[i : i + step], rate, 1, len(data[i : i + step]) // 2)
        for i in range(0, len(data), step)
    ]


def silence(seconds: float, rate: int) -> list[rtc.AudioFrame]:
    samples = int(rate * FRAME_S)
    return [
        rtc.AudioFrame(b"\0\0" * samples, rate, 1, samples) for _ in range(round(seconds / FRAME_S))
    ]


def cloud_settings(dg: DeepgramStandIn, oa: OpenAIStandIn, ca: CartesiaStandIn) -> Settings:
    return load_settings(
        DEEPGRAM_API_KEY=DG_KEY,
        OPENAI_API_KEY=OA_KEY,
        CARTESIA_API_KEY=CA_KEY,
        DEEPGRAM_BASE_URL=dg.base_url,
        OPENAI_BASE_URL=oa.api_url,
        CARTESIA_BASE_URL=ca.base_url,
    )


@asynccontextmanager
async def providers_on_standins(
    replies: Responder | Sequence[Reply], transcripts: list[str]
) -> AsyncIterator[tuple[CloudProviders, DeepgramStandIn, OpenAIStandIn, CartesiaStandIn]]:
    """The three stand-ins, and the providers `agent.cloud` builds against them."""
    async with (
        utils.http_context.open(),
        DeepgramStandIn(transcripts, api_key=DG_KEY) as dg,
        OpenAIStandIn(replies, api_key=OA_KEY) as oa,
        CartesiaStandIn(api_key=CA_KEY) as ca,
    ):
        providers = build_cloud_providers(cloud_settings(dg, oa, ca))
        try:
            yield providers, dg, oa, ca
        finally:
            await providers.stt.aclose()
            await providers.llm.aclose()
            await providers.tts.aclose()


@function_tool
async def set_disposition(disposition: str) -> str:
    """Record how the call went.

    Args:
        disposition: interested, not_interested or call_back
    """
    return "recorded"


async def test_deepgram_stream_transcribes_and_reports_audio_seconds(
    speech: list[rtc.AudioFrame],
) -> None:
    rate = speech[0].sample_rate
    audio = silence(0.3, rate) + speech + silence(0.6, rate)
    pushed = sum(frame.duration for frame in audio)
    async with providers_on_standins([], [HEARD]) as (providers, dg, _, _):
        metrics: list[STTMetrics] = []
        providers.stt.on("metrics_collected", metrics.append)
        events: list[stt.SpeechEvent] = []
        stream = providers.stt.stream()

        async def collect() -> None:
            async for event in stream:
                events.append(event)

        reader = asyncio.create_task(collect())
        for frame in audio:
            stream.push_frame(frame)
        stream.flush()
        stream.end_input()
        # the plugin's keepalive loop sleeps 5 s before it notices the closed socket
        await asyncio.wait_for(reader, 15)

    [conn] = dg.connections
    assert conn.authorization == f"Token {DG_KEY}"
    assert conn.query["encoding"] == "linear16"
    assert conn.query["sample_rate"] == "16000"
    assert conn.query["model"] == "nova-3"
    assert conn.query["language"] == "en-US"
    assert conn.query["interim_results"] == "true"
    assert conn.query["endpointing"] == str(cloud.DEEPGRAM_ENDPOINTING_MS)
    assert conn.control[-1] == "CloseStream" and "Finalize" in conn.control
    assert conn.audio_seconds == pytest.approx(pushed, abs=0.01)
    assert conn.sent[-1]["type"] == "Metadata"

    kinds = [e.type for e in events]
    assert kinds.index(stt.SpeechEventType.START_OF_SPEECH) < kinds.index(
        stt.SpeechEventType.FINAL_TRANSCRIPT
    )
    assert stt.SpeechEventType.INTERIM_TRANSCRIPT in kinds
    assert stt.SpeechEventType.END_OF_SPEECH in kinds
    finals = [e for e in events if e.type == stt.SpeechEventType.FINAL_TRANSCRIPT]
    assert [e.alternatives[0].text for e in finals] == [HEARD]
    assert finals[0].request_id == conn.request_id
    # the speech starts after 0.3 s of silence; the stand-in's timing reaches the plugin
    assert finals[0].alternatives[0].start_time == pytest.approx(0.3, abs=0.1)

    usage = [m.audio_duration for m in metrics if m.audio_duration > 0]
    # the flush reports exactly the audio streamed; closing adds the socket's remaining
    # lifetime, because Deepgram bills connection time
    assert usage[0] == pytest.approx(conn.audio_seconds, abs=0.01)
    assert sum(usage) >= conn.audio_seconds
    assert all(m.metadata and m.metadata.model_provider == "Deepgram" for m in metrics)


async def test_openai_chat_streams_text_and_tool_call_with_usage() -> None:
    call = ToolCall("set_disposition", {"disposition": "interested"})
    async with providers_on_standins([Reply(text=GOODBYE, tool_calls=(call,))], []) as (
        providers,
        _,
        oa,
        _,
    ):
        metrics: list[LLMMetrics] = []
        providers.llm.on("metrics_collected", metrics.append)
        chat_ctx = llm.ChatContext.empty()
        chat_ctx.add_message(role="system", content="You call people about an offer.")
        chat_ctx.add_message(role="user", content=HEARD)
        text = ""
        calls: list[llm.FunctionToolCall] = []

        async def collect() -> None:
            nonlocal text
            async with providers.llm.chat(
                chat_ctx=chat_ctx, tools=[set_disposition], conn_options=NO_RETRY
            ) as stream:
                async for chunk in stream:
                    if chunk.delta is not None:
                        text += chunk.delta.content or ""
                        calls.extend(chunk.delta.tool_calls)

        await asyncio.wait_for(collect(), 10)
        await asyncio.wait_for(wait_until(lambda: bool(metrics)), 5)

    [request] = oa.requests
    assert request.authorization == f"Bearer {OA_KEY}"
    assert request.body["model"] == "gpt-4o-mini"
    assert request.body["stream_options"] == {"include_usage": True}
    assert [t["function"]["name"] for t in request.body["tools"]] == ["set_disposition"]
    assert request.body["messages"][-1] == {"role": "user", "content": HEARD}

    assert text == GOODBYE
    assert [(c.name, c.arguments) for c in calls] == [
        ("set_disposition", '{"disposition": "interested"}')
    ]
    [m] = metrics
    assert m.prompt_tokens == request.prompt_tokens > 0
    assert m.completion_tokens == request.completion_tokens > 0
    assert m.total_tokens == request.prompt_tokens + request.completion_tokens
    assert m.request_id == request.response_id
    assert 0 < m.ttft <= m.duration


async def test_cartesia_stream_returns_the_audio_it_was_sent_with_metrics() -> None:
    async with providers_on_standins([], []) as (providers, _, _, ca):
        metrics: list[TTSMetrics] = []
        providers.tts.on("metrics_collected", metrics.append)
        stream = providers.tts.stream()
        stream.push_text(GOODBYE)
        stream.end_input()
        frames: list[rtc.AudioFrame] = []

        async def collect() -> None:
            async for event in stream:
                frames.append(event.frame)

        await asyncio.wait_for(collect(), 10)
        await asyncio.wait_for(wait_until(lambda: bool(metrics)), 5)

    [conn] = ca.connections
    assert conn.api_key_header == CA_KEY
    assert conn.query["cartesia_version"]
    [context] = ca.contexts.values()
    assert context.done
    assert context.transcript.strip() == GOODBYE
    first = context.requests[0]
    assert first["output_format"] == {
        "container": "raw",
        "encoding": "pcm_s16le",
        "sample_rate": 24000,
    }
    assert first["model_id"] == cloud.CARTESIA_MODEL and first["continue"] is True
    assert context.requests[-1]["continue"] is False

    played = sum(f.duration for f in frames)
    assert all(f.sample_rate == 24000 and f.num_channels == 1 for f in frames)
    assert played == pytest.approx(context.audio_seconds, abs=0.011)
    # the stand-in speaks SECONDS_PER_CHAR per character: proof the audio is the server's
    chars = sum(len(r["transcript"].strip()) for r in context.requests)
    assert played == pytest.approx(chars * SECONDS_PER_CHAR, abs=0.011)
    [m] = metrics
    assert m.characters_count == len(GOODBYE)
    assert m.audio_duration == pytest.approx(played, abs=0.011)
    assert 0 < m.ttfb <= m.duration
    assert m.segment_id == context.context_id


async def test_cartesia_one_shot_synthesis_uses_the_bytes_endpoint() -> None:
    async with providers_on_standins([], []) as (providers, _, _, ca):
        frames: list[rtc.AudioFrame] = []

        async def collect() -> None:
            async for event in providers.tts.synthesize("Hello there."):
                frames.append(event.frame)

        await asyncio.wait_for(collect(), 10)

    [request] = ca.bytes_requests
    assert request["transcript"] == "Hello there."
    played = sum(f.duration for f in frames)
    assert played == pytest.approx(len("Hello there.") * SECONDS_PER_CHAR, abs=0.011)


async def test_standins_refuse_a_wrong_key() -> None:
    async with (
        utils.http_context.open(),
        DeepgramStandIn([HEARD], api_key=DG_KEY) as dg,
        OpenAIStandIn([Reply(text="never sent")], api_key=OA_KEY) as oa,
        CartesiaStandIn(api_key=CA_KEY) as ca,
    ):
        wrong = load_settings(
            DEEPGRAM_API_KEY="wrong",
            OPENAI_API_KEY="wrong",
            CARTESIA_API_KEY="wrong",
            DEEPGRAM_BASE_URL=dg.base_url,
            OPENAI_BASE_URL=oa.api_url,
            CARTESIA_BASE_URL=ca.base_url,
        )
        providers = build_cloud_providers(wrong)
        chat_ctx = llm.ChatContext.empty()
        chat_ctx.add_message(role="user", content="hello")
        with pytest.raises(APIStatusError) as llm_error:
            async with providers.llm.chat(chat_ctx=chat_ctx, conn_options=NO_RETRY) as stream:
                await asyncio.wait_for(drain(stream), 10)
        assert llm_error.value.status_code == 401

        with pytest.raises(APIStatusError) as stt_error:
            async with providers.stt.stream(conn_options=NO_RETRY) as stt_stream:
                stt_stream.push_frame(silence(0.1, 16000)[0])
                stt_stream.end_input()
                await asyncio.wait_for(drain(stt_stream), 10)
        assert stt_error.value.status_code == 401

        with pytest.raises(APIStatusError) as tts_error:
            async with providers.tts.stream(conn_options=NO_RETRY) as tts_stream:
                tts_stream.push_text("hello")
                tts_stream.end_input()
                await asyncio.wait_for(drain(tts_stream), 10)
        assert tts_error.value.status_code == 401
        await providers.stt.aclose()
        await providers.llm.aclose()
        await providers.tts.aclose()

    assert (dg.rejected, oa.rejected, ca.rejected) == ([401], [401], [401])
    assert not dg.connections and not oa.requests and not ca.contexts


class MemoryAudioInput(AudioInput):
    """The callee's side of the line: frames pushed by the test."""

    def __init__(self) -> None:
        super().__init__(label="memory")
        self._frames = utils.aio.Chan[rtc.AudioFrame]()

    def push(self, frame: rtc.AudioFrame) -> None:
        self._frames.send_nowait(frame)

    async def __anext__(self) -> rtc.AudioFrame:
        return await self._frames.__anext__()


class MemoryAudioOutput(AudioOutput):
    """The agent's side of the line: keeps every frame and reports it played at once."""

    def __init__(self) -> None:
        super().__init__(label="memory", capabilities=AudioOutputCapabilities(pause=False))
        self.frames: list[rtc.AudioFrame] = []
        self._segment = 0.0

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        if not self._segment:
            self.on_playback_started(created_at=time.time())
        self._segment += frame.duration
        self.frames.append(frame)

    def flush(self) -> None:
        super().flush()
        if self._segment:
            played, self._segment = self._segment, 0.0
            asyncio.get_running_loop().call_soon(
                lambda: self.on_playback_finished(playback_position=played, interrupted=False)
            )

    def clear_buffer(self) -> None:
        if self._segment:
            played, self._segment = self._segment, 0.0
            self.on_playback_finished(playback_position=played, interrupted=True)


class CallAgent(Agent):
    def __init__(self) -> None:
        super().__init__(instructions="You call people about an offer. Record the outcome.")
        self.dispositions: list[str] = []

    @function_tool
    async def set_disposition(self, context: RunContext[None], disposition: str) -> str:
        """Record how the call went.

        Args:
            disposition: interested, not_interested or call_back
        """
        self.dispositions.append(disposition)
        return "recorded"


def scripted_model(body: dict[str, Any]) -> Reply:
    """Record the outcome first; once the tool has answered, say goodbye."""
    if body["messages"][-1]["role"] == "tool":
        return Reply(text=GOODBYE)
    return Reply(tool_calls=(ToolCall("set_disposition", {"disposition": "interested"}),))


@dataclass
class SessionLog:
    items: list[ChatMessage] = field(default_factory=list)
    usage_updates: list[SessionUsageUpdatedEvent] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    replied: asyncio.Event = field(default_factory=asyncio.Event)


async def test_whole_session_runs_through_the_three_standins(
    speech: list[rtc.AudioFrame],
) -> None:
    rate = speech[0].sample_rate
    async with providers_on_standins(scripted_model, [HEARD]) as (providers, dg, oa, ca):
        session: AgentSession[None] = AgentSession(
            stt=providers.stt,
            llm=providers.llm,
            tts=providers.tts,
            vad=silero.VAD.load(),
            # VAD interruption: the adaptive detector would reach for LiveKit Cloud
            turn_handling={"interruption": {"mode": "vad"}},
        )
        line_in, line_out = MemoryAudioInput(), MemoryAudioOutput()
        session.input.audio = line_in
        session.output.audio = line_out
        log = SessionLog()

        def on_item(ev: ConversationItemAddedEvent) -> None:
            if isinstance(ev.item, ChatMessage):
                log.items.append(ev.item)

        def on_state(ev: AgentStateChangedEvent) -> None:
            log.states.append(ev.new_state)
            if ev.old_state == "speaking":
                log.replied.set()

        session.on("conversation_item_added", on_item)
        session.on("agent_state_changed", on_state)
        session.on("session_usage_updated", log.usage_updates.append)
        agent = CallAgent()
        await asyncio.wait_for(session.start(agent), 10)

        hang_up = asyncio.Event()

        async def phone_line() -> None:
            # real time, like a call: a pause, the callee's words, then line silence
            for frame in [*silence(0.5, rate), *speech]:
                line_in.push(frame)
                await asyncio.sleep(frame.duration)
            quiet = silence(FRAME_S, rate)[0]
            while not hang_up.is_set():
                line_in.push(quiet)
                await asyncio.sleep(FRAME_S)

        stt_reports: list[STTMetrics] = []
        providers.stt.on("metrics_collected", stt_reports.append)
        line = asyncio.create_task(phone_line())
        try:
            await asyncio.wait_for(log.replied.wait(), 20)
            # the Deepgram plugin reports audio seconds in 5 s batches: keep the line
            # open until the session has counted one
            await asyncio.wait_for(wait_until(lambda: stt_seconds(session) > 0), 10)
        finally:
            hang_up.set()
            await asyncio.wait_for(line, 5)
        usage_before_close = session.usage
        await asyncio.wait_for(session.aclose(), 15)

    # the callee's words went through Deepgram, the tool and the reply through OpenAI
    assert agent.dispositions == ["interested"]
    assert [(m.role, m.text_content) for m in log.items] == [
        ("user", HEARD),
        ("assistant", GOODBYE),
    ]
    first, second = oa.requests
    assert first.body["messages"][-1] == {"role": "user", "content": HEARD}
    assert second.body["messages"][-1]["role"] == "tool"
    assert second.body["messages"][-1]["content"] == "recorded"
    assert log.states[:3] == ["listening", "thinking", "speaking"]

    # ... and the reply was spoken by Cartesia and played on the line
    [context] = ca.contexts.values()
    assert context.transcript.strip() == GOODBYE
    played = sum(f.duration for f in line_out.frames)
    assert played == pytest.approx(context.audio_seconds, abs=0.011)

    # Deepgram heard the whole line (pause, words, silence) as 16 kHz linear16
    [conn] = dg.connections
    assert conn.query["sample_rate"] == "16000" and conn.query["encoding"] == "linear16"
    spoken = 0.5 + sum(f.duration for f in speech)
    assert conn.audio_seconds > spoken

    # usage reflects all three: LLM tokens as the server counted them, TTS characters
    # and audio, and STT seconds no more than the audio Deepgram received
    assert log.usage_updates
    by_type = {type(u): u for u in usage_before_close.model_usage}
    llm_usage = by_type[LLMModelUsage]
    assert isinstance(llm_usage, LLMModelUsage)
    assert llm_usage.input_tokens == sum(r.prompt_tokens for r in oa.requests)
    assert llm_usage.output_tokens == sum(r.completion_tokens for r in oa.requests)
    tts_usage = by_type[TTSModelUsage]
    assert isinstance(tts_usage, TTSModelUsage)
    assert tts_usage.characters_count == len(GOODBYE)
    assert tts_usage.audio_duration == pytest.approx(context.audio_seconds, abs=0.011)
    stt_usage = by_type[STTModelUsage]
    assert isinstance(stt_usage, STTModelUsage)
    assert stt_usage.provider == "Deepgram"
    assert 0 < stt_usage.audio_duration <= conn.audio_seconds + 0.01
    assert log.usage_updates[-1].usage.model_usage == usage_before_close.model_usage
    # the batch in flight and the connection-lifetime remainder are reported when the
    # stream closes, after the session stopped listening: only the plugin's own events
    # carry the billed total
    billed = sum(m.audio_duration for m in stt_reports)
    assert billed >= conn.audio_seconds >= stt_usage.audio_duration


def stt_seconds(session: AgentSession[None]) -> float:
    return sum(u.audio_duration for u in session.usage.model_usage if isinstance(u, STTModelUsage))


def test_missing_api_keys_are_named() -> None:
    settings = load_settings(OPENAI_API_KEY="sk", DEEPGRAM_API_KEY="", CARTESIA_API_KEY="")
    with pytest.raises(SettingsError, match="DEEPGRAM_API_KEY, CARTESIA_API_KEY"):
        build_cloud_providers(settings)


def test_deepgram_base_url_takes_an_api_root_or_the_listen_url() -> None:
    assert cloud.deepgram_listen_url(None) == "https://api.deepgram.com/v1/listen"
    assert cloud.deepgram_listen_url("http://127.0.0.1:9/") == "http://127.0.0.1:9/v1/listen"
    assert cloud.deepgram_listen_url("wss://dg.example/v1/listen") == "wss://dg.example/v1/listen"


_CLOUD_NOISE_CANCELLATION = """
import json
from agent.cloud import noise_cancellation_for
options = noise_cancellation_for("wss://my-project-a1b2.livekit.cloud")
print(json.dumps({"type": type(options).__name__, "model": options.options["modelPath"]}))
"""


def test_noise_cancellation_on_livekit_cloud_uses_the_bundled_bvc_telephony_model() -> None:
    # in a child process: once loaded, the native filter would log licence errors on
    # every later room connection in this one
    out = subprocess.run(
        [sys.executable, "-c", _CLOUD_NOISE_CANCELLATION],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["type"] == "NoiseCancellationOptions"
    # the model file ships inside the plugin: nothing is downloaded
    assert Path(result["model"]).name.startswith("inb.bvc")
    assert Path(result["model"]).is_file()


def test_noise_cancellation_off_livekit_cloud_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(cloud, "_warned_no_noise_cancellation", False)
    plugin_loaded = "livekit.plugins.noise_cancellation" in sys.modules
    with caplog.at_level(logging.WARNING, logger="agent.cloud"):
        assert noise_cancellation_for("ws://127.0.0.1:7880") is None
        assert noise_cancellation_for("wss://livekit.example.com") is None
        assert noise_cancellation_for("wss://livekit.cloud.evil.example") is None
    warnings = [r.getMessage() for r in caplog.records if r.name == "agent.cloud"]
    assert warnings == [
        "noise cancellation needs LiveKit Cloud; continuing without it on 127.0.0.1"
    ]
    # off Cloud the native filter is never loaded
    assert ("livekit.plugins.noise_cancellation" in sys.modules) == plugin_loaded


async def drain(stream: AsyncIterable[object]) -> None:
    async for _ in stream:
        pass


async def wait_until(condition: Callable[[], bool], interval: float = 0.01) -> None:
    """Poll `condition` (callers bound this with `asyncio.wait_for`)."""
    while not condition():
        await asyncio.sleep(interval)
