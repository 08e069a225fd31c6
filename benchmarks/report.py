"""Benchmark: the campaign workbook against pandas `DataFrame.to_excel(engine="openpyxl")`.

Builds a synthetic campaign in a SQLite ledger (2.5 attempts per contact, a third
of the attempts answered with a call record and four turns), then in the same run:

- ours: `campaign.report.write_report` end to end (ledger reads included);
- baseline: the very same sheet rows (`campaign.report.iter_sheets`) collected into
  DataFrames and written with `to_excel(engine="openpyxl")`, one sheet each. The
  baseline writes no Summary and no charts, so it does less work than ours.

Each writer runs in a fresh process, which reports its wall time and peak RSS
(the interpreter and imports included); ours runs once more under tracemalloc
for its peak Python allocations, apart from the timed run.

    .venv/bin/python benchmarks/report.py                 # 10k and 100k attempts
    .venv/bin/python benchmarks/report.py --sizes 20000   # quicker
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert

from campaign.report import ReportStats, iter_sheets, write_report
from campaign.store import (
    Attempt,
    CallRecord,
    Campaign,
    Contact,
    Ledger,
    Rejection,
    Turn,
    open_ledger,
)
from campaign.store import reporting as q

CAMPAIGN = "bench"
ZONES = ["America/New_York", "America/Chicago", "America/Los_Angeles", "Europe/London"]
OUTCOMES = ["no_answer"] * 4 + ["busy"] * 2 + ["failed", "declined", "agent_unavailable"]


def build_ledger(url: str, attempts: int, seed: int = 7) -> Ledger:
    rnd = random.Random(seed)
    ledger = open_ledger(url)
    contacts = attempts * 2 // 5
    t0 = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)
    with ledger.session() as s:
        camp = Campaign(
            name=CAMPAIGN, status="completed", config={"pricing": {"stt_per_minute": 0.0043}}
        )
        s.add(camp)
        s.flush()
        s.execute(
            insert(Contact),
            [
                {
                    "id": i + 1,
                    "campaign_id": camp.id,
                    "e164": f"+1415{i:07d}",
                    "raw_phone": f"(415) {i:07d}",
                    "name": f"Contact {i}",
                    "timezones": [ZONES[i % len(ZONES)]],
                    "variables": {"company": f"Company {i % 997}", "plan": "gold"},
                    "source_row": i + 2,
                    "status": "completed",
                    "attempts_count": 2,
                }
                for i in range(contacts)
            ],
        )
        s.execute(
            insert(Rejection),
            [
                {
                    "campaign_id": camp.id,
                    "source": "contacts.csv",
                    "source_row": contacts + 2 + i,
                    "reason": "invalid",
                    "raw": "12",
                    "cells": {"name": f"Bad {i}", "phone": "12"},
                }
                for i in range(max(1, contacts // 100))
            ],
        )
        attempt_rows: list[dict[str, Any]] = []
        call_rows: list[dict[str, Any]] = []
        turn_rows: list[dict[str, Any]] = []
        for i in range(attempts):
            contact = i % contacts + 1
            claimed = t0 + timedelta(seconds=i * 2)
            dialed = claimed + timedelta(seconds=1)
            answered = rnd.random() < 0.35
            row: dict[str, Any] = {
                "id": i + 1,
                "campaign_id": camp.id,
                "contact_id": contact,
                "number": i // contacts + 1,
                "status": "done",
                "room_name": f"{CAMPAIGN}-{contact}-{i + 1}",
                "claimed_at": claimed,
                "dial_started_at": dialed,
            }
            if answered:
                answer_at = dialed + timedelta(seconds=rnd.uniform(2, 9))
                row.update(
                    outcome="answered",
                    answered_at=answer_at,
                    ended_at=answer_at + timedelta(seconds=rnd.uniform(20, 180)),
                )
                call_id = len(call_rows) + 1
                call_rows.append(
                    {
                        "id": call_id,
                        "attempt_id": i + 1,
                        "room_name": row["room_name"],
                        "amd_result": "human",
                        "disposition": rnd.choice(["interested", "not_interested", "callback"]),
                        "end_reason": "agent_hangup",
                        "first_word_latency": rnd.uniform(0.3, 1.5),
                        "llm_prompt_tokens": 1200,
                        "llm_completion_tokens": 150,
                        "tts_characters": 400,
                        "stt_audio_seconds": 45.0,
                    }
                )
                for index in range(4):
                    turn_rows.append(
                        {
                            "call_id": call_id,
                            "index": index,
                            "user_text": "Yes, I might be interested, tell me more.",
                            "agent_text": "Great, our spring offer gives you two months free.",
                            "end_of_turn_delay": rnd.uniform(0.2, 1.0),
                            "transcription_delay": rnd.uniform(0.05, 0.4),
                            "llm_ttft": rnd.uniform(0.2, 0.9),
                            "tts_ttfb": rnd.uniform(0.1, 0.5),
                            "total_latency": rnd.uniform(0.6, 2.5),
                        }
                    )
            else:
                outcome = rnd.choice(OUTCOMES)
                row.update(
                    outcome=outcome,
                    sip_status_code={"busy": 486, "no_answer": 480, "declined": 603}.get(outcome),
                    ended_at=dialed + timedelta(seconds=rnd.uniform(1, 30)),
                )
                if outcome == "agent_unavailable":
                    row["dial_started_at"] = None
            attempt_rows.append(row)
        for table, rows in ((Attempt, attempt_rows), (CallRecord, call_rows), (Turn, turn_rows)):
            for start in range(0, len(rows), 20_000):
                s.execute(insert(table), rows[start : start + 20_000])
    return ledger


def ours(ledger: Ledger, out: Path) -> float:
    write_report(ledger, CAMPAIGN, out)
    return 0.0


def baseline(ledger: Ledger, out: Path) -> float:
    """Same rows through pandas + openpyxl; returns the seconds spent in to_excel alone."""
    import pandas as pd  # here, so the measurement of ours does not carry pandas' memory

    in_excel = 0.0
    with ledger.session() as session, pd.ExcelWriter(out, engine="openpyxl") as writer:
        campaign = q.find_campaign(session, CAMPAIGN)
        assert campaign is not None
        for sheet in iter_sheets(session, campaign, ReportStats()):
            frame = pd.DataFrame(list(sheet.rows), columns=[c.header for c in sheet.columns])
            started = time.perf_counter()
            frame.to_excel(writer, sheet_name=sheet.name, index=False)
            in_excel += time.perf_counter() - started
        started = time.perf_counter()
    return in_excel + time.perf_counter() - started  # closing the writer saves the file


WRITERS: dict[str, Callable[[Ledger, Path], float]] = {"ours": ours, "pandas": baseline}


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM; unlike ru_maxrss it does not inherit the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def child(mode: str, url: str, out: Path, traced: bool) -> None:
    """One measurement in a fresh process, so peak RSS belongs to this writer alone."""
    ledger = open_ledger(url, migrate=False)
    if traced:
        tracemalloc.start()
    started = time.perf_counter()
    in_excel = WRITERS[mode](ledger, out)
    seconds = time.perf_counter() - started
    result = {
        "seconds": seconds,
        "excel_seconds": in_excel,
        "rss_mib": peak_rss_mib(),
        "traced_mib": tracemalloc.get_traced_memory()[1] / 2**20 if traced else None,
        "bytes": out.stat().st_size,
    }
    print(json.dumps(result))


def measure(mode: str, url: str, out: Path, *, traced: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", mode, "--ledger", url, "--out", str(out)]
    done = subprocess.run(
        [*cmd, "--traced"] if traced else cmd, capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="attempt counts, comma-separated")
    parser.add_argument("--child", choices=sorted(WRITERS), help=argparse.SUPPRESS)
    parser.add_argument("--ledger", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.ledger, args.out, args.traced)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        for size in [int(size) for size in args.sizes.split(",")]:
            url = f"sqlite:///{tmp}/ledger-{size}.db"
            started = time.perf_counter()
            build_ledger(url, size).dispose()
            print(f"{size:,} attempts: ledger built in {time.perf_counter() - started:.1f} s")
            mine = measure("ours", url, Path(tmp, f"ours-{size}.xlsx"))
            theirs = measure("pandas", url, Path(tmp, f"pandas-{size}.xlsx"))
            traced = measure("ours", url, Path(tmp, f"ours-{size}.xlsx"), traced=True)
            speedup = theirs["seconds"] / mine["seconds"]
            print(
                f"  ours {mine['seconds']:.2f} s, pandas+openpyxl {theirs['seconds']:.2f} s "
                f"(to_excel alone {theirs['excel_seconds']:.2f} s): {speedup:.1f}x faster; "
                f"peak RSS ours {mine['rss_mib']:.0f} MiB, pandas {theirs['rss_mib']:.0f} MiB; "
                f"ours traced peak {traced['traced_mib']:.1f} MiB; "
                f"workbook {mine['bytes'] / 2**20:.1f} MiB (pandas {theirs['bytes'] / 2**20:.1f})",
                flush=True,
            )
            rows.append((size, mine, theirs, traced, speedup))
    print()
    print(
        "| attempts | ours (s) | pandas+openpyxl (s) | to_excel alone (s) | speed-up "
        "| peak RSS ours (MiB) | peak RSS pandas (MiB) | ours traced peak (MiB) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, mine, theirs, traced, speedup in rows:
        print(
            f"| {size:,} | {mine['seconds']:.2f} | {theirs['seconds']:.2f} "
            f"| {theirs['excel_seconds']:.2f} | {speedup:.1f}x | {mine['rss_mib']:.0f} "
            f"| {theirs['rss_mib']:.0f} | {traced['traced_mib']:.1f} |"
        )


if __name__ == "__main__":
    main()
