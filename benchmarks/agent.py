"""Agent response latency on the local stack, and how many calls one worker holds.

Needs the devstack (`python -m devstack up`). Starts one real worker with the local
providers, calls the phone that talks (it says "Hello?", then that it is interested),
and reads each call's turns from the ledger. Response latency is the framework's
`e2e_latency`: from the end of the callee's speech to the agent's first audio; it
includes the end-of-turn wait. The baseline is one call at a time; then N calls at
once for growing N, until the median latency doubles (or a call fails).

    .venv/bin/python -m benchmarks.agent [--levels 1,2,4,6,8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import devstack
from campaign.store import Ledger, open_ledger
from campaign.store.calls import get_call_record
from devstack.phones import Behaviour, number_for
from tests.e2e.agent_worker import (
    dial_request,
    place_call,
    seed_attempt,
    start_agent_worker,
    wait_for,
)

RECORD_TIMEOUT_S = 180.0


@dataclass
class Sample:
    """One answered turn: latency from end of speech, and the part after the turn ended."""

    total: float
    after_turn: float
    first_word: float | None


def run_calls(env: dict[str, str], ledger: Ledger, agent_name: str, n: int) -> list[Sample]:
    """Place n calls at once to the talking phone; the answered turns' latencies."""
    numbers = [number_for(Behaviour.TALKS, random.randrange(10, 990)) for _ in range(n)]
    seeded = [seed_attempt(ledger, number) for number in numbers]

    async def place_all() -> None:
        results = await asyncio.gather(
            *(
                place_call(env, agent_name, dial_request(contact, attempt, number), number)
                for (contact, attempt), number in zip(seeded, numbers, strict=True)
            )
        )
        failed = [str(error) for _, _, error in results if error is not None]
        if failed:
            raise RuntimeError(f"{len(failed)} of {n} calls failed: {failed[0]}")

    asyncio.run(place_all())
    samples: list[Sample] = []
    for _, attempt in seeded:
        wait_for(
            lambda a=attempt: get_call_record(ledger, a) is not None,  # type: ignore[misc]
            RECORD_TIMEOUT_S,
            f"the call record of attempt {attempt}",
        )
        record = get_call_record(ledger, attempt)
        assert record is not None
        for turn in record.turns:
            if turn.user_text is not None and turn.total_latency is not None:
                samples.append(
                    Sample(
                        total=turn.total_latency,
                        after_turn=turn.total_latency - (turn.end_of_turn_delay or 0.0),
                        first_word=record.first_word_latency,
                    )
                )
    return samples


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,2,4,6,8", help="concurrent calls per step")
    parser.add_argument("--rounds", type=int, default=2, help="baseline rounds (1 call each)")
    args = parser.parse_args()
    levels = [int(level) for level in args.levels.split(",")]

    env = devstack.env()
    url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='bench-agent-')) / 'ledger.db'}"
    ledger = open_ledger(url)
    with start_agent_worker(database_url=url, env=env) as worker:
        baseline: list[Sample] = []
        for _ in range(args.rounds):
            baseline += run_calls(env, ledger, worker.agent_name, 1)
        base = median([s.total for s in baseline])
        base_after = median([s.after_turn for s in baseline])
        print(
            f"baseline (1 call, {len(baseline)} turns): response {base:.3f} s "
            f"(after end of turn {base_after:.3f} s), first word "
            f"{median([s.first_word for s in baseline if s.first_word is not None]):.2f} s"
        )
        print("calls  turns  response_s  ratio  after_turn_s  ratio  first_word_s")
        for n in levels:
            try:
                samples = run_calls(env, ledger, worker.agent_name, n)
            except (RuntimeError, TimeoutError) as exc:
                print(f"{n:5d}  failed: {exc}")
                break
            total = median([s.total for s in samples])
            after = median([s.after_turn for s in samples])
            first = median([s.first_word for s in samples if s.first_word is not None])
            print(
                f"{n:5d}  {len(samples):5d}  {total:10.3f}  {total / base:5.2f}"
                f"  {after:12.3f}  {after / base_after:5.2f}  {first:12.2f}"
            )
            if total >= 2 * base or len(samples) < n:
                print(f"latency doubled (or turns were lost) at {n} concurrent calls")
                break
    ledger.dispose()


if __name__ == "__main__":
    main()
