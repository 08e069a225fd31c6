"""The agent that talks to whoever answers: its instructions and its tools."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from livekit.agents import (
    Agent,
    ChatContext,
    ChatMessage,
    RunContext,
    StopResponse,
    ToolError,
    function_tool,
)
from livekit.agents.voice import SpeechHandle

from campaign.contract import DialRequest
from campaign.outcomes import AmdResult, EndReason
from campaign.store import Ledger
from campaign.store.calls import add_contact_to_dnc

logger = logging.getLogger(__name__)

#: Ends the call for everyone (the worker deletes the room).
HangUp = Callable[[], Awaitable[object]]


@dataclass
class CallState:
    """What the call has established so far; the recorder writes it when the session ends."""

    amd_result: AmdResult = AmdResult.NOT_RUN
    answered_at: datetime | None = None
    #: wall-clock seconds (time.time()) of the answer, for latencies
    answered_clock: float | None = None
    greeted: bool = False
    disposition: str | None = None
    disposition_note: str | None = None
    callback_at: str | None = None
    added_to_dnc: bool = False
    voicemail_left: bool = False
    #: seconds after the answer: the verdict, the end of the beep, the message's start
    amd_latency: float | None = None
    beep_latency: float | None = None
    message_latency: float | None = None
    end_reason: EndReason | None = None
    error: str | None = None

    def end(self, reason: EndReason) -> None:
        """Record why the call ended; the first reason given wins."""
        if self.end_reason is None:
            self.end_reason = reason


def script_variables(request: DialRequest) -> dict[str, str]:
    """Placeholders the script may use: `{name}` plus the contact's own variables."""
    return {"name": request.name or "there", **request.variables}


def instructions(request: DialRequest) -> str:
    """System instructions for an LLM that is not scripted (the cloud one)."""
    script = request.script
    variables = script_variables(request)
    return "\n".join(
        [
            script.render(script.instructions, variables),
            "You are on a phone call. Speak in short, plain sentences with no formatting.",
            f"Open with: {script.render(script.greeting, variables)}",
            f"Then ask: {script.render(script.question, variables)}",
            "When the callee's answer is clear, call set_disposition with one of: "
            + ", ".join(script.dispositions)
            + ". For a callback, pass the time they asked for as callback_at.",
            "If the callee asks not to be called again, call add_to_do_not_call at once.",
            f"To finish, say: {script.render(script.goodbye, variables)} and then call end_call.",
        ]
    )


class Assistant(Agent):
    """Follows the campaign's script; records the outcome through its tools."""

    def __init__(
        self, *, request: DialRequest, call: CallState, ledger: Ledger, hang_up: HangUp
    ) -> None:
        self._request = request
        self._call = call
        self._ledger = ledger
        self._hang_up = hang_up
        allowed = ", ".join(request.script.dispositions)
        super().__init__(
            instructions=instructions(request),
            tools=[
                function_tool(
                    self._end_call,
                    name="end_call",
                    description="End the call for everyone once your goodbye has been said.",
                ),
                function_tool(
                    self._set_disposition,
                    name="set_disposition",
                    description=(
                        f"Record the outcome of the call: one of {allowed}. "
                        "For a callback, give the time the callee asked for in callback_at."
                    ),
                ),
                function_tool(
                    self._add_to_do_not_call,
                    name="add_to_do_not_call",
                    description="The callee asked never to be called again: list them now.",
                ),
            ],
        )

    @property
    def call(self) -> CallState:
        return self._call

    def greet(self) -> SpeechHandle:
        """Open the conversation (once AMD has heard a person).

        It starts uninterruptible: AMD judges the callee's "Hello?" as soon as it ends,
        and the framework, completing that same turn a moment later, would cut the
        greeting off to answer it. `hello_heard` then makes it interruptible."""
        self._call.greeted = True
        return self.session.generate_reply(allow_interruptions=False)

    def hello_heard(self, greeting: SpeechHandle) -> None:
        """The callee's hello has reached the session: drop that turn (AMD has answered
        it) and let the callee interrupt the greeting from now on."""
        self.session.clear_user_turn()
        if not greeting.done():
            greeting.allow_interruptions = True

    async def on_user_turn_completed(self, turn_ctx: ChatContext, new_message: ChatMessage) -> None:
        # Until the greeting starts, words are AMD's to judge ("Hello?"), not ours to answer.
        if not self._call.greeted:
            raise StopResponse()

    async def _end_call(self, context: RunContext[Any]) -> None:
        self._call.end(EndReason.AGENT_HANGUP)
        await context.wait_for_playout()
        logger.info("agent ends the call")
        await self._hang_up()

    async def _set_disposition(
        self,
        context: RunContext[Any],
        disposition: str,
        callback_at: str | None = None,
        note: str | None = None,
    ) -> str:
        """
        Args:
            disposition: the campaign's word for the outcome
            callback_at: when to call back, as the callee said it (callbacks only)
            note: anything worth keeping, in a few words
        """
        if disposition not in self._request.script.dispositions:
            raise ToolError(
                f"unknown disposition {disposition!r}; use one of "
                + ", ".join(self._request.script.dispositions)
            )
        self._call.disposition = disposition
        self._call.callback_at = callback_at
        self._call.disposition_note = note
        logger.info("disposition %s", disposition)
        return f"Recorded {disposition}. Now say goodbye and end the call."

    async def _add_to_do_not_call(self, context: RunContext[Any], reason: str | None = None) -> str:
        """
        Args:
            reason: the callee's words, briefly
        """
        await asyncio.to_thread(
            add_contact_to_dnc, self._ledger, self._request.contact_id, note=reason
        )
        self._call.added_to_dnc = True
        logger.info("added %s to the do-not-call list", self._request.phone_masked)
        return "They will not be called again. Now say goodbye and end the call."
