"""The doctor's checks that need no server, and `dialer call`'s pure parts."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from campaign.call import CallError, CallReport, next_steps, parse_variables
from campaign.campaign_file import CampaignConfig, parse_campaign
from campaign.preflight import (
    Check,
    DoctorReport,
    SheetSummary,
    Status,
    check_campaign,
    check_environment,
    check_hours,
    describe_trunk,
)
from campaign.store.test_calls import CallResult, TurnLatency
from campaign.telephony import TrunkInfo

pytestmark = pytest.mark.unit

ALL_SET = {
    "LIVEKIT_URL": "wss://example.livekit.cloud",
    "LIVEKIT_API_KEY": "APIkey123",
    "LIVEKIT_API_SECRET": "very-secret-value",
    "SIP_OUTBOUND_TRUNK_ID": "ST_abc",
    "DIALER_DATABASE_URL": "sqlite:///x.db",
    "AGENT_NAME": "caller",
}
DEFAULT_URL = "ws://127.0.0.1:7880"
WED_NOON_NY = datetime(2026, 3, 4, 17, 0, tzinfo=UTC)
WED_NIGHT_NY = datetime(2026, 3, 5, 3, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- environment


def test_environment_passes_naming_variables_never_values() -> None:
    check = check_environment(ALL_SET, trunk_in_campaign=False, default_url=DEFAULT_URL)
    assert check.status is Status.PASS
    assert check.detail == (
        "LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET, SIP_OUTBOUND_TRUNK_ID set"
    )
    for value in ALL_SET.values():
        assert value not in check.detail + check.fix


def test_environment_fails_naming_what_is_missing() -> None:
    env = {k: v for k, v in ALL_SET.items() if k not in ("LIVEKIT_API_SECRET", "AGENT_NAME")}
    env["SIP_OUTBOUND_TRUNK_ID"] = ""  # empty counts as unset
    check = check_environment(env, trunk_in_campaign=False, default_url=DEFAULT_URL)
    assert check.status is Status.FAIL
    assert check.detail == "missing: LIVEKIT_API_SECRET, SIP_OUTBOUND_TRUNK_ID"
    assert ".env" in check.fix


def test_environment_needs_no_trunk_variable_when_the_campaign_names_one() -> None:
    env = {k: v for k, v in ALL_SET.items() if k != "SIP_OUTBOUND_TRUNK_ID"}
    check = check_environment(env, trunk_in_campaign=True, default_url=DEFAULT_URL)
    assert check.status is Status.PASS
    assert "SIP_OUTBOUND_TRUNK_ID" not in check.detail


def test_environment_warns_when_only_the_url_falls_back_to_its_default() -> None:
    env = {k: v for k, v in ALL_SET.items() if k not in ("LIVEKIT_URL", "DIALER_DATABASE_URL")}
    check = check_environment(env, trunk_in_campaign=False, default_url=DEFAULT_URL)
    assert check.status is Status.WARN
    assert check.detail == (
        f"LIVEKIT_URL is not set; using {DEFAULT_URL}; defaults used for DIALER_DATABASE_URL"
    )


# --------------------------------------------------------------------------- report


def test_report_fails_only_on_a_failed_check() -> None:
    passing = DoctorReport(
        [Check("a", Status.PASS, "ok"), Check("b", Status.WARN, "hm"), Check("c", Status.SKIP, "")]
    )
    assert passing.ok
    failing = DoctorReport([*passing.checks, Check("d", Status.FAIL, "broken", "fix it")])
    assert not failing.ok
    assert failing.to_json()["ok"] is False
    assert failing.to_json()["checks"][-1] == {
        "name": "d",
        "status": "fail",
        "detail": "broken",
        "fix": "fix it",
    }


def test_trunk_description_shows_address_transport_and_numbers() -> None:
    trunk = TrunkInfo("ST_1", "carrier", "sip.example.com:5060", "tcp", ("+14155550100",))
    assert describe_trunk(trunk) == (
        "ST_1 (carrier): sip.example.com:5060 over tcp; numbers +14155550100"
    )
    bare = TrunkInfo("ST_2", "", "10.0.0.1", "auto", ())
    assert describe_trunk(bare) == (
        "ST_2: 10.0.0.1 over auto; numbers none (set caller_id in the campaign)"
    )


# --------------------------------------------------------------------------- campaign and hours


def campaign(tmp_path: Path, rows: str, **fields: object) -> CampaignConfig:
    (tmp_path / "c.csv").write_text(rows)
    return parse_campaign(
        {"name": "c", "contacts": "c.csv", **fields}, base_dir=tmp_path, source="c.yaml"
    )


def test_campaign_check_counts_each_sheets_dialable_rows(tmp_path: Path) -> None:
    config = campaign(
        tmp_path, "name,phone\nA,+12127360101\nB,+442079460958\nC,12\nD,+12127360101\n"
    )
    check, sheets = check_campaign(config, Path("campaigns/c.yaml"))
    assert check.status is Status.PASS
    assert check.detail == (
        "campaigns/c.yaml is valid; c.csv 2 of 4 rows dialable (2 rejected: `dialer check SHEET`)"
    )
    assert sheets is not None
    assert sheets.zones == Counter({("America/New_York",): 1, ("Europe/London",): 1})


def test_campaign_check_fails_without_a_dialable_row_or_a_sheet(tmp_path: Path) -> None:
    config = campaign(tmp_path, "name,phone\nA,12\n")
    check, _ = check_campaign(config, Path("c.yaml"))
    assert check.status is Status.FAIL
    assert "`dialer check SHEET`" in check.fix
    (tmp_path / "c.csv").unlink()
    missing, sheets = check_campaign(config, Path("c.yaml"))
    assert (missing.status, sheets) == (Status.FAIL, None)
    assert missing.detail.startswith(f"c.yaml: cannot read {tmp_path / 'c.csv'}")


def hours_config(tmp_path: Path) -> CampaignConfig:
    return campaign(
        tmp_path,
        "name,phone\n",
        calling_hours={"start": "09:00", "end": "20:00", "days": "mon-fri"},
    )


def test_calling_hours_now_in_the_contacts_zones(tmp_path: Path) -> None:
    sheets = SheetSummary(
        rows=3,
        dialable=3,
        rejected=0,
        zones=Counter({("America/New_York",): 2, ("Asia/Tokyo",): 1}),
    )
    check = check_hours(hours_config(tmp_path), sheets, WED_NOON_NY)
    assert check.status is Status.PASS
    assert check.detail == (
        "09:00-20:00 mon,tue,wed,thu,fri local: open now for 2 of 3 contacts"
        " (America/New_York Wed 12:00, Asia/Tokyo Thu 02:00)"
    )


def test_calling_hours_closed_everywhere_warn_with_the_first_opening(tmp_path: Path) -> None:
    sheets = SheetSummary(1, 1, 0, Counter({("America/New_York",): 1}))
    check = check_hours(hours_config(tmp_path), sheets, WED_NIGHT_NY)
    assert check.status is Status.WARN
    assert check.detail.endswith(
        "open now for 0 of 1 contacts (America/New_York Wed 22:00);"
        " first opens 2026-03-05 14:00 UTC"
    )


# --------------------------------------------------------------------------- dialer call


def test_variables_parse_from_key_value_options() -> None:
    assert parse_variables(["plan=gold", " city =New York", "empty="]) == {
        "plan": "gold",
        "city": "New York",
        "empty": "",
    }
    with pytest.raises(CallError, match=r"--var 'oops': use key=value"):
        parse_variables(["oops"])
    with pytest.raises(CallError):
        parse_variables(["=value"])


def test_progress_reports_missed_steps_in_order_and_never_twice() -> None:
    seen: list[str] = []
    for state in [
        "creating the room",
        "waiting for the agent",
        "waiting for the agent",
        "agent listening",  # answered between two looks
        "agent speaking",
        "agent listening",
        "answered",  # the agent already left
    ]:
        seen += next_steps(seen, state)
    assert seen == [
        "creating the room",
        "waiting for the agent",
        "dialing",
        "answered",
        "agent listening",
        "agent speaking",
        "agent listening",
    ]
    assert next_steps(["dialing"], "ringing") == ["ringing"]
    assert next_steps(["waiting for the agent"], "ringing") == ["dialing", "ringing"]


def result(**fields: object) -> CallResult:
    base: dict[str, object] = {
        "attempt_id": 7,
        "room_name": "c-3-1",
        "outcome": "answered",
        "sip_status_code": None,
        "sip_status": None,
        "error": None,
        "claimed_at": datetime(2026, 3, 4, 17, 0, 0, tzinfo=UTC),
        "dial_started_at": datetime(2026, 3, 4, 17, 0, 1, tzinfo=UTC),
        "answered_at": datetime(2026, 3, 4, 17, 0, 4, tzinfo=UTC),
        "ended_at": datetime(2026, 3, 4, 17, 0, 34, tzinfo=UTC),
    }
    return CallResult(**{**base, **fields})  # type: ignore[arg-type]


def test_report_lines_for_an_answered_call() -> None:
    turns = [TurnLatency(0.5, 0.2, 0.3, 0.1, 1.0), TurnLatency(0.7, None, 0.5, 0.3, 2.0)]
    report = CallReport(
        "spring",
        "+1212***0101",
        result(
            has_record=True,
            disposition="interested",
            amd_result="human",
            end_reason="agent_hangup",
            first_word_latency=1.25,
            turns=turns,
        ),
    )
    assert report.lines() == [
        "outcome      answered",
        "disposition  interested  (answering machine detection: human)",
        "duration     30.00 s connected, ended by agent_hangup",
        "latency      room and agent ready in 1.00 s; answered after 3.00 s;"
        " first words 1.25 s after the answer",
        "  turn total           mean 1.50 s, max 2.00 s over 2 turn(s)",
        "  end of turn delay    mean 0.60 s, max 0.70 s over 2 turn(s)",
        "  transcription delay  mean 0.20 s, max 0.20 s over 1 turn(s)",
        "  LLM first token      mean 0.40 s, max 0.50 s over 2 turn(s)",
        "  TTS first byte       mean 0.20 s, max 0.30 s over 2 turn(s)",
        "ledger       test attempt 7 of campaign spring (room c-3-1)",
    ]


def test_report_lines_for_a_sip_failure() -> None:
    report = CallReport(
        "spring",
        "+1212***0103",
        result(outcome="busy", sip_status_code=486, sip_status="Busy Here", answered_at=None),
    )
    assert report.lines()[:4] == [
        "outcome      busy (SIP 486 Busy Here)",
        "disposition  -",
        "duration     - connected",
        "latency      room and agent ready in 1.00 s",
    ]
    bare = CallReport("s", "m", result(outcome="failed", sip_status_code=500, answered_at=None))
    assert bare.lines()[0] == "outcome      failed (SIP 500)"
