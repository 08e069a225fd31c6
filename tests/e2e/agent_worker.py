"""The real agent worker as a subprocess, and calls placed straight to it (no dialer).

A plain module, not a conftest: e2e tests and benchmarks import what they need.
`start_agent_worker` runs `python -m agent start` with the local providers under a
unique agent name (so no other session's dispatches reach it) and stops it after.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from livekit import api

from campaign.contract import DialRequest, Script
from campaign.store import Attempt, Campaign, Contact, Ledger, open_ledger

ROOT = Path(__file__).resolve().parents[2]
READY = "Agent is ready"
READY_TIMEOUT_S = 90.0
AGENT_JOIN_TIMEOUT_S = 30.0


@dataclass
class AgentWorker:
    agent_name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


@contextmanager
def start_agent_worker(
    *, database_url: str, env: dict[str, str], extra_env: dict[str, str] | None = None
) -> Iterator[AgentWorker]:
    """`python -m agent start` with local providers, ready (registered) when yielded."""
    name = f"test-agent-{uuid.uuid4().hex[:8]}"
    log = Path(tempfile.mkdtemp(prefix="agent-worker-")) / "agent.log"
    full = {
        **os.environ,
        **env,
        "AGENT_PROVIDERS": "local",
        "AGENT_NAME": name,
        "AGENT_HTTP_PORT": "0",  # several workers may run at once
        # the box's CPU is shared with the whole stack; load by calls, or LiveKit stops
        # routing calls to a worker whenever the CPU is busy
        "AGENT_MAX_CALLS": "20",
        "DIALER_DATABASE_URL": database_url,
        **(extra_env or {}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "agent", "start"],
            cwd=ROOT,
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    worker = AgentWorker(name, process, log)
    try:
        wait_for(
            lambda: READY in worker.output() or process.poll() is not None,
            READY_TIMEOUT_S,
            "the agent worker to register",
        )
        if process.poll() is not None:
            raise RuntimeError("the agent worker exited:\n" + worker.output()[-3000:])
        yield worker
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def seed_attempt(ledger: Ledger, number: str, *, campaign: str | None = None) -> tuple[int, int]:
    """Campaign, contact and attempt rows for one call (the dialer writes these first);
    returns (contact id, attempt id)."""
    with ledger.session() as session:
        row = Campaign(name=campaign or f"agent-test-{uuid.uuid4().hex[:8]}")
        contact = Contact(campaign=row, e164=number, name="Sam")
        session.add_all([row, contact])
        session.flush()
        attempt = Attempt(campaign_id=row.id, contact_id=contact.id, number=1, is_test=True)
        session.add(attempt)
        session.flush()
        return contact.id, attempt.id


def dial_request(
    contact_id: int, attempt_id: int, number: str, *, script: Script | None = None
) -> DialRequest:
    return DialRequest(
        campaign="agent-test",
        contact_id=contact_id,
        attempt_id=attempt_id,
        phone_masked=number[:5] + "***" + number[-4:],
        name="Sam",
        script=script or Script(),
        is_test=True,
    )


async def place_call(
    env: dict[str, str],
    agent_name: str,
    request: DialRequest,
    number: str,
    *,
    trunk_id: str | None = None,
) -> tuple[str, api.SIPParticipantInfo | None, api.SipCallError | None]:
    """Room, explicit dispatch with the DialRequest, then the SIP call (until answered)
    through `trunk_id` (default: the environment's outbound trunk, to the phones).

    Returns the room name and either the participant or the SIP error."""
    room = f"agent-test-{request.attempt_id}-{uuid.uuid4().hex[:6]}"
    async with api.LiveKitAPI(
        env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"]
    ) as lk:
        await lk.room.create_room(
            api.CreateRoomRequest(name=room, empty_timeout=30, departure_timeout=5)
        )
        await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(
                agent_name=agent_name, room=room, metadata=request.model_dump_json()
            )
        )
        # dial only once the agent is in the room, as the dialer does
        deadline = time.monotonic() + AGENT_JOIN_TIMEOUT_S
        while not await _agent_joined(lk, room):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no agent joined room {room} within {AGENT_JOIN_TIMEOUT_S} s")
            await asyncio.sleep(0.2)
        try:
            participant = await lk.sip.create_sip_participant(
                api.CreateSIPParticipantRequest(
                    sip_trunk_id=trunk_id or env["SIP_OUTBOUND_TRUNK_ID"],
                    sip_call_to=number,
                    room_name=room,
                    participant_identity=f"callee-{request.contact_id}",
                    wait_until_answered=True,
                ),
                timeout=60,
            )
        except api.SipCallError as exc:
            return room, None, exc
    return room, participant, None


async def _agent_joined(lk: api.LiveKitAPI, room: str) -> bool:
    listing = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
    return any(p.kind == api.ParticipantInfo.Kind.AGENT for p in listing.participants)


async def room_exists(env: dict[str, str], room: str) -> bool:
    async with api.LiveKitAPI(
        env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"]
    ) as lk:
        rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
    return bool(rooms.rooms)


@dataclass
class Setup:
    """A ledger and a real agent worker writing its call records into it."""

    ledger: Ledger
    url: str
    worker: AgentWorker
    env: dict[str, str]


@contextmanager
def sqlite_setup(folder: Path, env: dict[str, str]) -> Iterator[Setup]:
    """A SQLite ledger in `folder` and one real agent worker writing into it."""
    url = f"sqlite:///{folder / 'ledger.db'}"
    ledger = open_ledger(url)
    try:
        with start_agent_worker(database_url=url, env=env) as worker:
            yield Setup(ledger, url, worker, env)
    finally:
        ledger.dispose()
