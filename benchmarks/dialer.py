"""Dialer benchmark: CPU time per call and achieved vs configured calls per second.

Runs on the devstack (`python -m devstack up`) with the real agent worker (local
providers), which this script starts and stops. Two measurements in one run:

- dialer: the real engine (claim in the ledger, room, dispatch, wait for the agent,
  DNC and window re-check, `CreateSIPParticipant`, finalise) dialing the busy phone
  (486 at once, so the call rate, not call length, is what is measured);
- baseline: a bare asyncio loop calling `create_sip_participant` at the same rate,
  to the same phone, with no ledger, room, dispatch or agent.

CPU time is this process's (the agent worker and LiveKit are other processes).

    .venv/bin/python benchmarks/dialer.py [--seconds 60] [--cps 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
import uuid
from pathlib import Path

from livekit import api
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from campaign.campaign_file import parse_campaign  # noqa: E402
from campaign.dialer import Dialer, RunOptions  # noqa: E402
from campaign.store import Attempt, Contact, open_ledger  # noqa: E402
from campaign.store import dialing as store  # noqa: E402
from campaign.telephony import Telephony  # noqa: E402
from devstack.phones import Behaviour, number_for  # noqa: E402
from tests.e2e.agent_worker import start_agent_worker  # noqa: E402


def devstack_env() -> dict[str, str]:
    path = ROOT / ".devstack" / "env"
    if not path.exists():
        sys.exit("no .devstack/env: start the stack with `python -m devstack up`")
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


async def run_dialer(
    env: dict[str, str], db_url: str, agent: str, seconds: float, cps: float
) -> tuple[int, float, float]:
    """(dials, span of dial timestamps in seconds, CPU seconds) for the real engine."""
    ledger = open_ledger(db_url)
    contacts = min(600, int(seconds * cps * 1.5) + 10)
    config = parse_campaign(
        {
            "name": "bench",
            "contacts": "unused.csv",
            "trunk_id": env["SIP_OUTBOUND_TRUNK_ID"],
            "agent_name": agent,
            "max_concurrent_calls": 20,
            "calls_per_second": cps,
            "calling_hours": {
                "start": "00:00",
                "end": "24:00",
                "days": "all",
                "override_legal_limits": True,
            },
            "retry": {"busy": "never"},
            "ringing_timeout": "10s",
            "agent_join_timeout": "30s",
            "is_test": True,
        },
        base_dir=ROOT,
        source="bench",
    )
    campaign, _ = store.ensure_campaign(ledger, "bench", region="US", config={})
    with ledger.session() as session:
        for i in range(contacts):
            session.add(
                Contact(
                    campaign_id=campaign,
                    e164=number_for(Behaviour.BUSY, 300 + i % 600),
                    timezones=["America/New_York"],
                )
            )
    async with Telephony(
        env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"]
    ) as tel:
        start = time.monotonic()
        dialer = Dialer(ledger, config, tel, options=RunOptions(max_wait=0))
        runner = asyncio.ensure_future(dialer.run())
        # Steady state: CPU from the first dial on (start-up and imports left out).
        while not dialer.stats.dials and time.monotonic() - start < seconds:
            await asyncio.sleep(0.01)
        cpu0 = time.process_time()
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - start)))
        dialer.drain()
        await runner
        cpu = time.process_time() - cpu0
        elapsed = time.monotonic() - start
    with ledger.session() as session:
        started = sorted(
            t for t in session.scalars(select(Attempt.dial_started_at)) if t is not None
        )
    ledger.dispose()
    span = (started[-1] - started[0]).total_seconds() if len(started) > 1 else elapsed
    return len(started), span, cpu


async def run_baseline(env: dict[str, str], seconds: float, cps: float) -> tuple[int, float, float]:
    """(calls, span in seconds, CPU seconds) for a bare create_sip_participant loop."""
    lk = api.LiveKitAPI(
        env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"], failover=False
    )
    interval = 1.0 / cps
    stamps: list[float] = []
    pending: set[asyncio.Task[None]] = set()

    async def one(i: int) -> None:
        request = api.CreateSIPParticipantRequest(
            sip_trunk_id=env["SIP_OUTBOUND_TRUNK_ID"],
            sip_call_to=number_for(Behaviour.BUSY, 300 + i % 600),
            room_name=f"bench-base-{uuid.uuid4().hex[:8]}",
            participant_identity="callee",
            wait_until_answered=True,
        )
        with contextlib.suppress(api.TwirpError):  # 486 Busy Here is the expected answer
            await lk.sip.create_sip_participant(request)

    cpu0 = 0.0
    start = time.monotonic()
    i = 0
    while time.monotonic() - start < seconds:
        stamps.append(time.monotonic())
        if i == 1:
            cpu0 = time.process_time()  # steady state, as for the dialer
        task = asyncio.ensure_future(one(i))
        pending.add(task)
        task.add_done_callback(pending.discard)
        i += 1
        await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))
    if pending:
        await asyncio.wait(pending, timeout=30)
    cpu = time.process_time() - cpu0
    await lk.aclose()
    return len(stamps), stamps[-1] - stamps[0], cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    # Every call starts an agent job process; 0.5/s is what one worker on 2 cores sustains.
    parser.add_argument("--cps", type=float, default=0.5, help="configured calls per second")
    args = parser.parse_args()
    env = devstack_env()
    tmp = Path(tempfile.mkdtemp(prefix="dialer-bench-"))
    db_url = f"sqlite:///{tmp / 'ledger.db'}"
    open_ledger(db_url).dispose()
    with start_agent_worker(database_url=db_url, env=env) as worker:
        dials, span, cpu = asyncio.run(
            run_dialer(env, db_url, worker.agent_name, args.seconds, args.cps)
        )
    base_calls, base_span, base_cpu = asyncio.run(run_baseline(env, args.seconds, args.cps))
    rate = (dials - 1) / span if dials > 1 else 0.0
    base_rate = (base_calls - 1) / base_span if base_calls > 1 else 0.0
    # CPU was measured from the first call on: it covers the calls after it.
    per_call = cpu / max(dials - 1, 1) * 1000
    base_per_call = base_cpu / max(base_calls - 1, 1) * 1000
    rate_ratio = rate / base_rate if base_rate else 0.0
    cpu_ratio = per_call / base_per_call if base_per_call else 0.0
    print(f"configured rate  {args.cps:.2f} calls/s over {args.seconds:.0f} s")
    print(f"dialer     {rate:.3f} calls/s achieved ({dials} dials), {per_call:.2f} ms CPU/call")
    print(
        f"baseline   {base_rate:.3f} calls/s achieved ({base_calls}),"
        f" {base_per_call:.2f} ms CPU/call"
    )
    print(f"ratio      rate {rate_ratio:.3f}x the baseline, CPU per call {cpu_ratio:.1f}x")
    print(f"ledger in {tmp}")


if __name__ == "__main__":
    main()
