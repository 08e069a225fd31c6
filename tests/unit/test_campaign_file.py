"""The campaign YAML: defaults, validation errors that name the field, shipped examples."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from campaign.campaign_file import CampaignFileError, load_campaign
from campaign.retry import RetryRule

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_minimal_file_gets_the_documented_defaults(tmp_path: Path) -> None:
    config = load_campaign(write(tmp_path, "name: spring\ncontacts: sheet.csv\n"))
    assert config.contacts == [(tmp_path / "sheet.csv").resolve()]
    assert config.region == "US"
    assert config.window.describe() == "09:00-20:00 mon,tue,wed,thu,fri,sat"
    assert config.retry.max_attempts == 3
    assert config.retry.busy == RetryRule(delay=900.0)
    assert config.retry.no_answer == RetryRule(delay=7200.0)
    assert config.retry.voicemail == RetryRule(delay="next_day")
    assert config.retry.failed == RetryRule(delay=300.0, backoff=2.0)
    assert config.retry.declined == config.retry.invalid_number == "never"
    assert config.trunk_id is None and config.agent_name is None


def test_full_file(tmp_path: Path) -> None:
    config = load_campaign(
        write(
            tmp_path,
            """
name: full
contacts: [a.csv, b.xlsx]
trunk_id: ST_abc
agent_name: caller
caller_id: "+15550000000"
max_concurrent_calls: 4
calls_per_second: 0.5
calling_hours: {start: 10:00, end: "18:30", days: [mon, tue]}
time_zone: Europe/Paris
ringing_timeout: 20s
max_call_duration: 5m
retry: {max_attempts: 2, busy: {delay: 30s, backoff: 2}}
script: {greeting: "Hi {name}"}
voicemail_message: Call us back
dispositions: [keen, later]
start_at: 2026-03-04 09:00
end_at: 2026-03-04T18:00:00Z
""",
        )
    )
    assert config.calls_per_second == 0.5
    assert config.ringing_timeout == 20 and config.max_call_duration == 300
    assert config.window.describe() == "10:00-18:30 mon,tue"
    assert config.window.fallback_zone == "Europe/Paris"
    assert config.start_at == datetime(2026, 3, 4, 8, 0, tzinfo=UTC)  # naive: read in Paris time
    assert config.agent_script.voicemail_message == "Call us back"
    assert config.agent_script.dispositions == ["keen", "later"]
    assert config.agent_script.greeting == "Hi {name}"


BASE = "name: x\ncontacts: a.csv\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("contacts: a.csv", "name: Field required"),
        ("name: x", "contacts: Field required"),
        (
            "name: x\ncontacts: a.csv\ncalls_per_second: 0",
            "calls_per_second: Input should be greater",
        ),
        (BASE + "max_concurrent_calls: -1", "max_concurrent_calls:"),
        (
            "name: x\ncontacts: a.csv\ncalling_hours: {start: '07:00'}",
            "outside the legal 08:00-21:00",
        ),
        (
            "name: x\ncontacts: a.csv\ncalling_hours: {end: '25:00'}",
            "calling_hours: '25:00' is not",
        ),
        (BASE + "calling_hours: {days: [someday]}", "calling_hours: 'someday'"),
        (BASE + "time_zone: Mars/Base", "time_zone: unknown time zone"),
        (
            "name: x\ncontacts: a.csv\nringing_timeout: soon",
            "ringing_timeout: 'soon' is not a duration",
        ),
        (BASE + "retry: {busy: {delay: 5x}}", "retry.busy.delay:"),
        (BASE + "retry: {bussy: {delay: 5m}}", "retry.bussy: Extra inputs"),
        (BASE + "max_calls: 3", "max_calls: Extra inputs are not permitted"),
        (
            "name: x\ncontacts: a.csv\nstart_at: 2026-03-05\nend_at: 2026-03-04",
            "end_at must be after",
        ),
        ("name: bad name\ncontacts: a.csv", "name: campaign name 'bad name': use 1-100 letters"),
        ("- a\n- b", "expected a mapping"),
        ("name: [unclosed", "not valid YAML at line 1"),
    ],
)
def test_errors_name_the_field(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(CampaignFileError) as raised:
        load_campaign(write(tmp_path, body))
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_override_allows_any_hour(tmp_path: Path) -> None:
    config = load_campaign(
        write(
            tmp_path,
            "name: x\ncontacts: a.csv\n"
            "calling_hours: {start: '00:00', end: '24:00', days: all, override_legal_limits: true}",
        )
    )
    assert config.window.is_open([], datetime(2026, 3, 8, 3, 0, tzinfo=UTC))


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CampaignFileError, match="no such campaign file"):
        load_campaign(tmp_path / "nope.yaml")


def test_trunk_and_agent_from_the_environment(tmp_path: Path) -> None:
    config = load_campaign(write(tmp_path, "name: x\ncontacts: a.csv\n"))
    filled = config.with_defaults(trunk_id="ST_env", agent_name="env-agent")
    assert (filled.trunk_id, filled.agent_name) == ("ST_env", "env-agent")
    with pytest.raises(CampaignFileError, match="SIP_OUTBOUND_TRUNK_ID"):
        config.with_defaults(trunk_id="", agent_name="a")


@pytest.mark.parametrize("name", ["example.yaml", "demo.yaml"])
def test_shipped_campaigns_validate(name: str) -> None:
    config = load_campaign(ROOT / "campaigns" / name)
    assert all(sheet.exists() for sheet in config.contacts)


def test_pricing_is_validated_and_kept(tmp_path: Path) -> None:
    config = load_campaign(
        write(tmp_path, "name: x\ncontacts: a.csv\npricing:\n  stt_per_minute: 0.0043\n")
    )
    assert config.pricing.stt_per_minute == 0.0043
    assert config.pricing.tts_per_1k_characters == 0.0
    assert config.model_dump(mode="json")["pricing"]["stt_per_minute"] == 0.0043
    with pytest.raises(CampaignFileError, match=r"pricing\.stt_per_minute: .*>= 0"):
        load_campaign(write(tmp_path, "name: x\ncontacts: a.csv\npricing:\n  stt_per_minute: -1\n"))
    with pytest.raises(CampaignFileError, match=r"pricing\.gpu_per_hour"):
        load_campaign(write(tmp_path, "name: x\ncontacts: a.csv\npricing:\n  gpu_per_hour: 1\n"))


# --------------------------------------------------------------------------- bad input


def test_a_key_written_twice_is_an_error_naming_it(tmp_path: Path) -> None:
    text = "name: spring\ncontacts: a.csv\nregion: US\nregion: GB\n"
    with pytest.raises(CampaignFileError, match="duplicate key 'region' at line 4"):
        load_campaign(write(tmp_path, text))


def test_a_nested_key_written_twice_is_an_error_too(tmp_path: Path) -> None:
    text = "name: spring\ncontacts: a.csv\ncalling_hours:\n  start: '10:00'\n  start: '11:00'\n"
    with pytest.raises(CampaignFileError, match="duplicate key 'start' at line 5"):
        load_campaign(write(tmp_path, text))


def with_sheet(tmp_path: Path, script: str) -> Path:
    (tmp_path / "leads.csv").write_text("Name,Phone,Plan,City\nAda,+1 212-736-0101,gold,NY\n")
    return write(tmp_path, f"name: spring\ncontacts: leads.csv\nscript:\n{script}")


def test_a_placeholder_naming_no_column_is_an_error_listing_the_columns(tmp_path: Path) -> None:
    path = with_sheet(tmp_path, '  greeting: "Hello {name}, about your {plann} plan"\n')
    with pytest.raises(CampaignFileError) as refused:
        load_campaign(path)
    message = str(refused.value)
    assert "script.greeting: no column 'plann' in leads.csv" in message
    assert "placeholders: name, Plan, City" in message


def test_placeholders_match_columns_ignoring_case(tmp_path: Path) -> None:
    config = load_campaign(with_sheet(tmp_path, '  greeting: "Hi {NAME}, your {plan} plan"\n'))
    script = config.agent_script
    assert script.placeholders() == {"NAME": "greeting", "plan": "greeting"}
    # the agent fills `{plan}` from the `Plan` column
    assert (
        script.render(script.greeting, {"NAME": "Ada", "Plan": "gold"}) == "Hi Ada, your gold plan"
    )


def test_a_voicemail_placeholder_is_checked_too(tmp_path: Path) -> None:
    path = with_sheet(tmp_path, "  voicemail_message: 'Call {company} back'\n")
    with pytest.raises(CampaignFileError, match=r"script\.voicemail_message: no column 'company'"):
        load_campaign(path)


def test_a_brace_that_is_no_placeholder_is_an_error(tmp_path: Path) -> None:
    path = with_sheet(tmp_path, "  greeting: 'Hi {name'\n")
    with pytest.raises(CampaignFileError, match=r"script\.greeting: .*literal brace"):
        load_campaign(path)


def test_a_sheet_not_there_yet_leaves_placeholders_to_the_import(tmp_path: Path) -> None:
    text = "name: spring\ncontacts: later.csv\nscript: {greeting: 'Hi {plan}'}\n"
    assert load_campaign(write(tmp_path, text)).name == "spring"


def test_a_disposition_longer_than_the_ledger_keeps_is_an_error(tmp_path: Path) -> None:
    text = f"name: spring\ncontacts: a.csv\ndispositions: [ok, {'x' * 51}]\n"
    with pytest.raises(CampaignFileError, match="give 1 to 50 characters"):
        load_campaign(write(tmp_path, text))
