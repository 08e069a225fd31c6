"""Campaign files the tests share: one that is already over (the engine runs for real and
stops before its first dial), and, for the e2e tests, a sheet and its YAML dialled around
the clock with the timeouts a busy 2-core machine needs."""

from __future__ import annotations

import csv
from pathlib import Path

import yaml

#: a campaign whose end has passed: the engine runs and dials no one
FINISHED_CAMPAIGN_YAML = """\
name: nightly
contacts: nightly.csv
region: US
trunk_id: ST_test
agent_name: test-agent
time_zone: America/New_York
end_at: 2020-01-01T00:00:00Z  # over: the engine runs and dials no one
"""

#: every hour of every day (the phones are on loopback; no callee sleeps)
ALL_HOURS: dict[str, object] = {
    "start": "00:00",
    "end": "24:00",
    "days": "all",
    "override_legal_limits": True,
}


def campaign_doc(name: str, contacts: str, **fields: object) -> dict[str, object]:
    """A campaign file's fields: all hours, short ringing and calls, and time for the agent
    to join (each call starts an agent job process, which takes a while on a busy machine);
    `fields` add to or replace them."""
    doc: dict[str, object] = {
        "name": name,
        "contacts": contacts,
        "calling_hours": ALL_HOURS,
        "ringing_timeout": "8s",
        "agent_join_timeout": "30s",
        "max_call_duration": "45s",
    }
    doc.update(fields)
    return doc


def write_campaign(
    tmp: Path,
    name: str,
    rows: list[dict[str, str]],
    agent: str,
    retry: dict[str, object] | None = None,
    **fields: object,
) -> Path:
    """The sheet and the YAML. The worker refuses jobs while the machine is busy, so
    `agent_unavailable` (not a dial) is retried soon."""
    sheet = tmp / f"{name}.csv"
    with sheet.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    doc = campaign_doc(name, sheet.name, **{"agent_name": agent, "is_test": True, **fields})
    doc["retry"] = {"agent_unavailable": {"delay": "2s", "max_attempts": 20}, **(retry or {})}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path
