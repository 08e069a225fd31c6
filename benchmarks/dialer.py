"""Dialer benchmark: CPU time per call and achieved vs configured calls per second.

Runs on the devstack (`python -m devstack up`) with the real agent worker (local
providers), which this script starts and stops. Two measurements in one run:

- dialer: the real engine (claim in the ledger, room, dispatch, wait for the agent,
  DNC and window re-check, `CreateSIPParticipant`, finalise) dialing the busy phone
  (486 at once, so the call rate, not call length, is what is measured);
- baseline: a bare asyncio loop calling `create_sip_participant` at the same rate,
  to the same phone, with no ledger, room, dispatch or agent.

CPU time is this process's (the agent worker and LiveKit are other processes). The
dialer's LiveKit requests and ledger calls per call, over the same span, say where it
goes.

    .venv/bin/python benchmarks/dialer.py [--seconds 60] [--cps 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values
from livekit import api
from sqlalchemy import event, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from campaign.campaign_file import parse_campaign  # noqa: E402
from campaign.dialer import Dialer, RunOptions  # noqa: E402
from campaign.errors import UserError  # noqa: E402
from campaign.store import Attempt, Contact, open_ledger  # noqa: E402
from campaign.store import dialing as store  # noqa: E402
from campaign.telephony import Telephony, TelephonyError  # noqa: E402
from devstack.phones import Behaviour, number_for  # noqa: E402
from tests.e2e.agent_worker import start_agent_worker  # noqa: E402


def devstack_env() -> dict[str, str]:
    path = ROOT / ".devstack" / "env"
    if not path.exists():
        sys.exit("no .devstack/env: start the stack with `python -m devstack up`")
    return {k: v for k, v in dotenv_values(path).items() if v is not None}


async def _check_stack(env: dict[str, str]) -> None:
    """One line and exit when the devstack's LiveKit does not answer: nothing to measure."""
    try:
        async with Telephony(
            env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"]
        ) as tel:
            await tel.check_access()
    except TelephonyError as exc:
        sys.exit(f"the devstack does not answer ({exc}): start it with `python -m devstack up`")


@dataclass
class Measured:
    calls: int  #: dials placed (the dialer) or calls started (the baseline)
    span: float  #: seconds from the first to the last
    cpu: float  #: CPU seconds from the first call on
    requests: Counter[str] = field(default_factory=Counter)  #: LiveKit requests, by name
    ledger: Counter[str] = field(default_factory=Counter)  #: ledger calls, by store function
    errors: Counter[str] = field(default_factory=Counter)  #: refused calls, by error
    #: CPU seconds of the ledger calls in their worker threads, by store function
    ledger_cpu: dict[str, float] = field(default_factory=dict)
    statements: int = 0  #: SQL statements the dialer sent its ledger

    def per_call(self, counts: Counter[str]) -> float:
        return sum(counts.values()) / max(self.calls - 1, 1)


async def run_dialer(
    env: dict[str, str], db_url: str, agent: str, seconds: float, cps: float
) -> Measured:
    """Dials, their span, CPU and what the engine asked of LiveKit and the ledger."""
    ledger = open_ledger(db_url)
    statements = [0]

    def statement(*_args: object) -> None:
        statements[0] += 1

    event.listen(ledger.engine, "before_cursor_execute", statement)
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
        requests0, ledger_calls0 = Counter(tel.requests), Counter(dialer.db.calls)
        ledger_cpu0, statements0 = dict(dialer.db.cpu), statements[0]
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - start)))
        dialer.drain()
        errors: Counter[str] = Counter()
        try:
            await runner
        except UserError as exc:  # LiveKit or the ledger refused: recorded, not raised
            errors[str(exc)] += 1
        cpu = time.process_time() - cpu0
        elapsed = time.monotonic() - start
        requests, ledger_calls = tel.requests - requests0, dialer.db.calls - ledger_calls0
        ledger_cpu = {k: v - ledger_cpu0.get(k, 0.0) for k, v in dialer.db.cpu.items()}
        sent = statements[0] - statements0
    with ledger.session() as session:
        started = sorted(
            t for t in session.scalars(select(Attempt.dial_started_at)) if t is not None
        )
    ledger.dispose()
    span = (started[-1] - started[0]).total_seconds() if len(started) > 1 else elapsed
    return Measured(len(started), span, cpu, requests, ledger_calls, errors, ledger_cpu, sent)


async def run_baseline(env: dict[str, str], seconds: float, cps: float) -> Measured:
    """Calls, their span and CPU for a bare create_sip_participant loop."""
    lk = api.LiveKitAPI(
        env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"], failover=False
    )
    interval = 1.0 / cps
    stamps: list[float] = []
    pending: set[asyncio.Task[None]] = set()
    errors: Counter[str] = Counter()

    async def one(i: int) -> None:
        request = api.CreateSIPParticipantRequest(
            sip_trunk_id=env["SIP_OUTBOUND_TRUNK_ID"],
            sip_call_to=number_for(Behaviour.BUSY, 300 + i % 600),
            room_name=f"bench-base-{uuid.uuid4().hex[:8]}",
            participant_identity="callee",
            wait_until_answered=True,
        )
        try:
            await lk.sip.create_sip_participant(request)
        except api.SipCallError:
            pass  # 486 Busy Here is the expected answer
        except Exception as exc:  # refused or unreachable: recorded, not raised
            errors[type(exc).__name__] += 1

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
    calls = len(stamps)
    return Measured(
        calls, stamps[-1] - stamps[0], cpu, Counter(CreateSIPParticipant=calls - 1), errors=errors
    )


def _rate(m: Measured) -> float:
    return (m.calls - 1) / m.span if m.calls > 1 and m.span > 0 else 0.0


def _cpu_ms(m: Measured) -> float:
    # CPU was measured from the first call on: it covers the calls after it.
    return m.cpu / max(m.calls - 1, 1) * 1000


def _each(m: Measured, counts: Counter[str]) -> str:
    return ", ".join(f"{name} {n / max(m.calls - 1, 1):.2f}" for name, n in counts.most_common())


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
    asyncio.run(_check_stack(env))
    try:
        with start_agent_worker(database_url=db_url, env=env) as worker:
            dialer = asyncio.run(run_dialer(env, db_url, worker.agent_name, args.seconds, args.cps))
    except TimeoutError as exc:  # the worker never registered: its log says why
        sys.exit(f"no measurement: {exc}")
    base = asyncio.run(run_baseline(env, args.seconds, args.cps))
    rate, base_rate = _rate(dialer), _rate(base)
    per_call, base_per_call = _cpu_ms(dialer), _cpu_ms(base)
    rate_ratio = rate / base_rate if base_rate else 0.0
    cpu_ratio = per_call / base_per_call if base_per_call else 0.0
    print(f"configured rate  {args.cps:.2f} calls/s over {args.seconds:.0f} s")
    print(
        f"dialer     {rate:.3f} calls/s achieved ({dialer.calls} dials),"
        f" {per_call:.2f} ms CPU/call,"
        f" {dialer.per_call(dialer.requests):.2f} LiveKit requests"
        f" and {dialer.per_call(dialer.ledger):.2f} ledger calls per call"
    )
    print(
        f"baseline   {base_rate:.3f} calls/s achieved ({base.calls}),"
        f" {base_per_call:.2f} ms CPU/call, {base.per_call(base.requests):.2f} requests per call"
    )
    print(f"ratio      rate {rate_ratio:.3f}x the baseline, CPU per call {cpu_ratio:.1f}x")
    print(f"dialer's requests per call      {_each(dialer, dialer.requests)}")
    print(f"dialer's ledger calls per call  {_each(dialer, dialer.ledger)}")
    calls = max(dialer.calls - 1, 1)
    ledger_ms = sum(dialer.ledger_cpu.values()) / calls * 1000
    each = ", ".join(
        f"{name} {seconds / calls * 1000:.2f}"
        for name, seconds in sorted(dialer.ledger_cpu.items(), key=lambda kv: -kv[1])
    )
    print(f"dialer's ledger CPU per call    {ledger_ms:.2f} ms in its threads: {each}")
    print(f"dialer's SQL statements per call {dialer.statements / calls:.2f}")
    for which, m in (("dialer", dialer), ("baseline", base)):
        for error, n in m.errors.most_common():
            print(f"{which} refused {n}x: {error}")
    print(f"ledger in {tmp}")


if __name__ == "__main__":
    main()
