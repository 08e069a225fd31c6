"""`dialer doctor` and `dialer call` against the devstack and the real agent worker.

The CLI runs as a subprocess, as a user runs it. Numbers come from
`devstack.phones.number_for(behaviour, index)` with indexes from 900 up, apart
from the other e2e modules' numbers.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from campaign.store import Attempt, CallRecord, Contact, Ledger, open_ledger
from campaign.store import dialing as store
from devstack.phones import Behaviour, number_for, read_log
from tests.campaigns import campaign_doc
from tests.e2e import agent_worker
from tests.e2e.agent_worker import room_exists, start_agent_worker, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DIALER = str(Path(sys.executable).parent / "dialer")
CAMPAIGN = f"e2e-preflight-{os.getpid()}"
#: doctor's own bound on the agent probe is 20 s; everything else answers in seconds
DOCTOR_TIMEOUT_S = 90
CALL_TIMEOUT_S = 150


@dataclass
class Setup(agent_worker.Setup):
    """The shared setup, and the campaign file its sheet is in."""

    campaign_file: Path

    def run(
        self, *args: str, timeout: float = DOCTOR_TIMEOUT_S, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DIALER, *args],
            cwd=self.campaign_file.parent,
            env=self.full_env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def full_env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            **self.env,
            "DIALER_DATABASE_URL": self.url,
            "AGENT_NAME": self.worker.agent_name,
            "COLUMNS": "250",  # one check, one line
            **extra,
        }


@pytest.fixture(scope="module")
def setup(
    devstack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("preflight-e2e")
    url = f"sqlite:///{tmp / 'ledger.db'}"
    ledger = open_ledger(url)
    sheet = tmp / "contacts.csv"
    sheet.write_text(
        "name,phone\n"
        + "".join(f"P{i},{number_for(b, 900 + i)}\n" for i, b in enumerate(Behaviour))
    )
    campaign_file = tmp / f"{CAMPAIGN}.yaml"
    campaign_file.write_text(
        yaml.safe_dump(
            campaign_doc(
                CAMPAIGN, sheet.name, voicemail_message="Hello {name}, please call us back."
            )
        )
    )
    with start_agent_worker(database_url=url, env=devstack_env) as worker:
        yield Setup(ledger, url, worker, devstack_env, campaign_file)
    ledger.dispose()


def doctor_json(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    report = json.loads(result.stdout)
    assert report["ok"] is (result.returncode == 0)
    return {check["name"]: check for check in report["checks"]}


def count(ledger: Ledger, table: Any) -> int:
    with ledger.session() as session:
        return session.scalar(select(func.count()).select_from(table)) or 0


# --------------------------------------------------------------------------- doctor


def test_doctor_passes_against_the_running_stack(setup: Setup) -> None:
    calls_before, attempts_before = count(setup.ledger, CallRecord), count(setup.ledger, Attempt)
    text = setup.run("doctor", str(setup.campaign_file))
    assert text.returncode == 0, text.stdout + text.stderr
    lines = text.stdout.splitlines()
    names = ["environment", "livekit", "sip trunk", "agent", "ledger", "campaign", "calling hours"]
    for name in names:
        line = next(line for line in lines if line[6:].startswith(name))
        assert line.startswith("PASS"), line
    assert lines[-1] == "All checks passed."
    # Names only: no value of the environment is printed.
    for key in ("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        assert setup.env[key] not in text.stdout + text.stderr

    checks = doctor_json(setup.run("doctor", str(setup.campaign_file), "--format", "json"))
    assert [c["status"] for c in checks.values()] == ["pass"] * len(names)
    trunk = setup.env["SIP_OUTBOUND_TRUNK_ID"]
    assert checks["sip trunk"]["detail"].startswith(f"{trunk} (devstack-phones): 127.0.0.1:5080")
    assert setup.worker.agent_name in checks["agent"]["detail"]
    assert "is reachable and migrated" in checks["ledger"]["detail"]
    assert (
        f"contacts.csv {len(Behaviour)} of {len(Behaviour)} rows dialable"
        in (checks["campaign"]["detail"])
    )
    assert (
        f"open now for {len(Behaviour)} of {len(Behaviour)} contacts"
        in (checks["calling hours"]["detail"])
    )

    # The probe rooms are gone, and the agent wrote nothing for them. The worker logs
    # its join on its own time: the doctor may have seen the agent and left already.
    def probe_rooms() -> list[str]:
        pattern = r"probe dispatch from dialer doctor: joined room (doctor-probe-\w+)"
        return re.findall(pattern, setup.worker.output())

    wait_for(lambda: len(probe_rooms()) >= 2, 20, "the agent's log of both probe rooms")
    rooms = probe_rooms()
    assert len(rooms) == 2
    assert not any(asyncio.run(room_exists(setup.env, room)) for room in rooms)
    assert count(setup.ledger, CallRecord) == calls_before
    assert count(setup.ledger, Attempt) == attempts_before


def test_doctor_fails_when_the_agent_worker_is_down(setup: Setup) -> None:
    nobody = f"nobody-{uuid.uuid4().hex[:8]}"
    result = setup.run("doctor", "--format", "json", AGENT_NAME=nobody)
    assert result.returncode == 1
    checks = doctor_json(result)
    agent = checks["agent"]
    assert agent["status"] == "fail"
    assert agent["detail"] == f"no agent {nobody!r} joined a test dispatch within 20 s"
    assert "python -m agent start" in agent["fix"] and f"AGENT_NAME={nobody}" in agent["fix"]
    assert checks["livekit"]["status"] == checks["sip trunk"]["status"] == "pass"


def test_doctor_fails_on_a_wrong_trunk_id(setup: Setup) -> None:
    result = setup.run("doctor", "--format", "json", SIP_OUTBOUND_TRUNK_ID="ST_doesnotexist")
    assert result.returncode == 1
    checks = doctor_json(result)
    trunk = checks["sip trunk"]
    assert trunk["status"] == "fail"
    assert trunk["detail"].startswith("no outbound trunk ST_doesnotexist on this server; it has:")
    assert setup.env["SIP_OUTBOUND_TRUNK_ID"] in trunk["detail"]
    assert "SIP_OUTBOUND_TRUNK_ID" in trunk["fix"]
    assert checks["agent"]["status"] == "pass"


def test_doctor_fails_on_a_wrong_api_secret(setup: Setup) -> None:
    wrong = "wrong-" + uuid.uuid4().hex * 2
    result = setup.run("doctor", LIVEKIT_API_SECRET=wrong)
    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if line[6:].startswith("livekit"))
    assert line.startswith("FAIL")
    assert "rejected the API key or secret (HTTP 401)" in line
    assert "fix: set LIVEKIT_API_KEY and LIVEKIT_API_SECRET" in line
    for name in ("sip trunk", "agent"):
        skipped = next(line for line in result.stdout.splitlines() if line[6:].startswith(name))
        assert skipped.startswith("SKIP")
    assert wrong not in result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "1 check(s) failed."


# --------------------------------------------------------------------------- call

#: behaviour -> (outcome, SIP status code, progress steps that must be shown, in order)
EXPECTED: dict[Behaviour, tuple[str, int | None, list[str]]] = {
    Behaviour.TALKS: ("answered", None, ["dialing", "answered", "agent speaking"]),
    Behaviour.HANGS_UP: ("answered", None, ["dialing", "answered"]),
    Behaviour.ANSWERING_MACHINE: ("voicemail", None, ["dialing", "answered"]),
    Behaviour.BUSY: ("busy", 486, ["waiting for the agent", "SIP 486 Busy Here"]),
    Behaviour.NO_ANSWER: ("no_answer", None, ["dialing", "ringing"]),
    Behaviour.DECLINES: ("declined", 603, ["waiting for the agent", "SIP 603"]),
    Behaviour.UNKNOWN_NUMBER: ("invalid_number", 404, ["waiting for the agent", "SIP 404"]),
}


def progress(stdout: str) -> list[str]:
    """The live progress lines' texts (`  12.3 s  ringing`)."""
    return [m.group(1) for m in re.finditer(r"^\s*\d+\.\d s  (.+)$", stdout, re.M)]


def test_call_reaches_each_phone_behaviour(setup: Setup) -> None:
    numbers = {b: number_for(b, 950 + i) for i, b in enumerate(Behaviour)}
    since = time.time()
    config = str(setup.campaign_file)
    procs = {
        b: subprocess.Popen(
            [DIALER, "call", n, "--config", config, "--name", "Sam", "--var", "plan=gold"],
            cwd=setup.campaign_file.parent,
            env=setup.full_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for b, n in numbers.items()
    }
    outputs: dict[Behaviour, tuple[int, str, str]] = {}
    try:
        for b, proc in procs.items():
            out, err = proc.communicate(timeout=CALL_TIMEOUT_S)
            outputs[b] = (proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()

    for behaviour, (outcome, code, steps) in EXPECTED.items():
        rc, out, err = outputs[behaviour]
        assert rc == 0, (behaviour, out, err)
        shown = progress(out)
        assert shown[-1] == f"ended: {outcome}", (behaviour, shown)
        at = [next(i for i, s in enumerate(shown) if s.startswith(step)) for step in steps]
        assert at == sorted(at), (behaviour, shown)
        assert re.search(rf"^outcome +{outcome}\b", out, re.M), out
        if code is not None:
            assert f"(SIP {code}" in out
    talks = outputs[Behaviour.TALKS][1]
    assert re.search(r"^disposition +\w+", talks, re.M) and "disposition  -" not in talks
    assert re.search(r"^duration +\d+\.\d\d s connected", talks, re.M)
    assert "first words" in talks and "turn total" in talks

    with setup.ledger.session() as session:
        rows = {
            e164: (attempt, contact)
            for attempt, contact, e164 in session.execute(
                select(Attempt, Contact, Contact.e164).join(
                    Contact, Contact.id == Attempt.contact_id
                )
            )
            if e164 in numbers.values()
        }
        talked = session.scalar(
            select(CallRecord).where(CallRecord.attempt_id == rows[numbers[Behaviour.TALKS]][0].id)
        )
        assert talked is not None and talked.disposition and talked.turns
    for behaviour, number in numbers.items():
        attempt, contact = rows[number]
        assert attempt.is_test and contact.is_test
        assert attempt.outcome == EXPECTED[behaviour][0]
        assert attempt.room_name == f"{CAMPAIGN}-{contact.id}-{attempt.number}"
        assert contact.status not in ("pending", "retry", "in_progress"), behaviour
        assert read_log(number=number, since=since)
    # The agent's record was written (above); the contact carries --name and --var.
    assert rows[numbers[Behaviour.TALKS]][1].name == "Sam"
    assert rows[numbers[Behaviour.TALKS]][1].variables == {"plan": "gold"}
    # Test calls stay out of the campaign's counts.
    summary = store.summary(setup.ledger, CAMPAIGN)
    assert summary.attempts == 0 and not summary.contacts and not summary.outcomes


def test_call_follows_a_stored_campaign(setup: Setup) -> None:
    """--campaign NAME: the campaign file stored by an earlier run (or call) is followed."""
    number = number_for(Behaviour.DECLINES, 970)
    setup.run("call", number_for(Behaviour.BUSY, 971), "--config", str(setup.campaign_file))
    result = setup.run("call", number, "--campaign", CAMPAIGN, timeout=CALL_TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^outcome +declined \(SIP 603", result.stdout, re.M)
    assert f"of campaign {CAMPAIGN}" in result.stdout


def test_call_refuses_a_number_on_the_do_not_call_list(setup: Setup) -> None:
    number = number_for(Behaviour.TALKS, 980)
    since = time.time()
    assert setup.run("dnc", "add", number).returncode == 0
    result = setup.run("call", number, "--config", str(setup.campaign_file))
    assert result.returncode == 1
    assert "is on the do-not-call list" in result.stderr
    assert not read_log(number=number, since=since)
