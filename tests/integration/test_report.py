"""The campaign workbook, written from a real ledger and read back with openpyxl."""

from __future__ import annotations

import csv
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import openpyxl
import pytest

from campaign.config import get_settings
from campaign.report import ReportError, write_report
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

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 14, 0, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 4, 7, 5, tzinfo=UTC)
PRICING = {
    "llm_prompt_per_1k_tokens": 0.5,
    "llm_completion_per_1k_tokens": 2.0,
    "tts_per_1k_characters": 0.03,
    "stt_per_minute": 0.006,
    "telephony_per_minute": 0.01,
}
#: strings a spreadsheet would take for formulas if they were not written as text
INJECTIONS = [
    "=1+2",
    "+1+2",
    "-1+2",
    "@SUM(1,2)",
    "\t=1+2",
    "\r=1+2",
    '=HYPERLINK("http://example.invalid","x")',
]


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def ledger(any_ledger_url: str) -> Iterator[Ledger]:
    ledger = open_ledger(any_ledger_url)
    yield ledger
    ledger.dispose()


def build_campaign(ledger: Ledger) -> None:
    """A small campaign whose every Summary figure the tests work out by hand."""
    with ledger.session() as s:
        camp = Campaign(
            name="spring-promo",
            status="completed",
            config={
                "name": "spring-promo",
                "max_concurrent_calls": 2,
                "calling_hours": {"start": "09:00", "end": "20:00"},
                "pricing": PRICING,
            },
        )
        s.add(camp)
        s.flush()
        alice = Contact(
            campaign_id=camp.id,
            e164="+14155550101",
            raw_phone="(415) 555-0101",
            name="Alice",
            timezones=["America/New_York"],
            variables={"company": "Acme", "plan": INJECTIONS[6]},
            source_row=2,
            status="completed",
            attempts_count=2,
            last_outcome="answered",
            disposition="interested",
        )
        bob = Contact(
            campaign_id=camp.id,
            e164="+442071838750",
            raw_phone="020 7183 8750",
            name="Bob",
            timezones=["Europe/London"],
            variables={"company": "Bobco"},
            source_row=3,
            status="exhausted",
            attempts_count=2,
            last_outcome="busy",
        )
        carol = Contact(
            campaign_id=camp.id,
            e164="+14155550103",
            raw_phone="+1 415 555 0103",
            name=INJECTIONS[0],
            timezones=["America/Los_Angeles"],
            source_row=4,
            status="dnc",
            attempts_count=2,
        )
        dee = Contact(campaign_id=camp.id, e164="+14155550104", name="Dee", source_row=5)
        tester = Contact(
            campaign_id=camp.id, e164="+14155550199", name="Tester", is_test=True, source_row=6
        )
        s.add_all([alice, bob, carol, dee, tester])
        s.flush()

        def attempt(contact: Contact, number: int, **kw: Any) -> Attempt:
            kw.setdefault("status", "done")
            row = Attempt(
                campaign_id=camp.id,
                contact_id=contact.id,
                number=number,
                room_name=f"spring-promo-{contact.id}-{number}",
                **kw,
            )
            s.add(row)
            s.flush()
            return row

        attempt(
            alice,
            1,
            claimed_at=at(0),
            dial_started_at=at(0) + timedelta(seconds=1),
            ended_at=at(0) + timedelta(seconds=31),
            outcome="no_answer",
            sip_status_code=480,
            sip_status="Temporarily Unavailable",
        )
        a2 = attempt(
            alice,
            2,
            claimed_at=at(60),
            dial_started_at=at(60) + timedelta(seconds=2),
            answered_at=at(60) + timedelta(seconds=6),
            ended_at=at(62) + timedelta(seconds=6),
            outcome="answered",
        )
        a3 = attempt(
            bob,
            1,
            claimed_at=at(120),
            dial_started_at=at(120) + timedelta(seconds=1),
            answered_at=at(120) + timedelta(seconds=3),
            ended_at=at(120) + timedelta(seconds=33),
            outcome="voicemail",
        )
        attempt(
            bob,
            2,
            claimed_at=at(20 * 60),
            dial_started_at=at(20 * 60) + timedelta(seconds=1),
            ended_at=at(20 * 60) + timedelta(seconds=2),
            outcome="busy",
            sip_status_code=486,
            sip_status="Busy Here",
        )
        attempt(
            carol,
            1,
            claimed_at=at(21 * 60),
            ended_at=at(21 * 60) + timedelta(seconds=15),
            outcome="agent_unavailable",
            error="no agent joined within 15 s",
        )
        attempt(
            carol,
            2,
            claimed_at=at(22 * 60),
            dial_started_at=at(22 * 60) + timedelta(seconds=1),
            answered_at=at(22 * 60) + timedelta(seconds=4),
            status="in_call",
        )
        # Test calls: their huge usage must not reach any figure.
        test_a = attempt(
            alice,
            3,
            claimed_at=at(30),
            dial_started_at=at(30),
            answered_at=at(30) + timedelta(seconds=1),
            ended_at=at(40),
            outcome="answered",
            is_test=True,
        )
        test_b = attempt(
            tester,
            1,
            claimed_at=at(31),
            dial_started_at=at(31),
            answered_at=at(31) + timedelta(seconds=1),
            ended_at=at(41),
            outcome="answered",
        )
        for row in (test_a, test_b):
            s.add(
                CallRecord(
                    attempt_id=row.id,
                    amd_result="human",
                    disposition="interested",
                    llm_prompt_tokens=10**6,
                    tts_characters=10**6,
                    stt_audio_seconds=10**5,
                    first_word_latency=99.0,
                )
            )

        call = CallRecord(
            attempt_id=a2.id,
            room_name=a2.room_name,
            amd_result="human",
            disposition="interested",
            end_reason="agent_hangup",
            first_word_latency=0.8,
            llm_prompt_tokens=1000,
            llm_completion_tokens=200,
            tts_characters=500,
            stt_audio_seconds=60.0,
        )
        s.add(call)
        s.add(
            CallRecord(
                attempt_id=a3.id,
                room_name=a3.room_name,
                amd_result="machine",
                end_reason="callee_hangup",
                first_word_latency=1.6,
                llm_prompt_tokens=300,
                llm_completion_tokens=50,
                tts_characters=100,
                stt_audio_seconds=15.0,
            )
        )
        s.flush()
        turns = [
            ("Hello?", "Hi Alice!", 0.5, 0.2, 0.4, 0.3, 1.2),
            (INJECTIONS[2], "Great.", 0.7, 0.3, 0.6, 0.2, 1.5),
            ("Bye", INJECTIONS[3], 0.6, None, 0.5, 0.4, 1.0),
        ]
        for index, (user, agent, eot, tr, ttft, ttfb, total) in enumerate(turns):
            s.add(
                Turn(
                    call_id=call.id,
                    index=index,
                    user_text=user,
                    agent_text=agent,
                    end_of_turn_delay=eot,
                    transcription_delay=tr,
                    llm_ttft=ttft,
                    tts_ttfb=ttfb,
                    total_latency=total,
                )
            )
        rejected = [
            (7, "invalid", "abc", None, {"name": "Xavier", "phone": "abc"}),
            (8, "duplicate", "(415) 555-0101", 2, {"name": "Alice again", "phone": "4155550101"}),
            (9, "do_not_call", "+14155550999", None, {"name": "Nope", "phone": "+14155550999"}),
            (10, "invalid", INJECTIONS[1], None, {"name": INJECTIONS[4], "phone": INJECTIONS[1]}),
            (11, "empty", "", None, {"name": INJECTIONS[5], "phone": ""}),
        ]
        for row_no, reason, raw, dup, cells in rejected:
            s.add(
                Rejection(
                    campaign_id=camp.id,
                    source="contacts.csv",
                    source_row=row_no,
                    reason=reason,
                    raw=raw,
                    e164="+14155550101" if reason == "duplicate" else None,
                    duplicate_of_row=dup,
                    cells=cells,
                )
            )


def summary(book: Any) -> dict[str, tuple[Any, ...]]:
    """Summary rows keyed by their label in column A."""
    rows: dict[str, tuple[Any, ...]] = {}
    for row in book["Summary"].iter_rows(values_only=True):
        if row and row[0] is not None:
            assert row[0] not in rows, f"duplicate Summary label {row[0]!r}"
            rows[row[0]] = row[1:]
    return rows


def sheet_dicts(book: Any, name: str) -> list[dict[str, Any]]:
    rows = list(book[name].iter_rows(values_only=True))
    header = rows[0]
    return [dict(zip(header, row, strict=True)) for row in rows[1:]]


def test_every_summary_figure_matches_the_ledger(ledger: Ledger, tmp_path: Path) -> None:
    build_campaign(ledger)
    path = write_report(ledger, "spring-promo", tmp_path / "out" / "r.xlsx", now=NOW)
    assert path == tmp_path / "out" / "r.xlsx"
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["Summary", "Contacts", "Attempts", "Turns", "Rejected", "Charts"]
    s = summary(book)

    assert s["Name"][0] == "spring-promo"
    assert s["Status"][0] == "completed"
    assert s["Report written (UTC)"][0] == datetime(2026, 3, 4, 7, 5)
    assert s["Period start (UTC): first attempt claimed"][0] == datetime(2026, 3, 2, 14, 0)
    assert s["Period end (UTC): last call ended"][0] == datetime(2026, 3, 3, 11, 0, 15)
    assert s["Test attempts left out"][0] == 2
    assert s["Setting: max_concurrent_calls"][0] == 2
    assert s["Setting: calling_hours.start"][0] == "09:00"
    assert s["Setting: pricing.stt_per_minute"][0] == 0.006
    assert "This campaign is empty" not in str(list(s))

    # Contacts: 4 real ones (the test contact is left out); 5 sheet rows did not import.
    assert s["Contacts imported"][0] == 4
    assert s["Rows not imported (all reasons)"][0] == 5
    assert s["Not imported: invalid"][:2] == pytest.approx((2, 2 / 5))
    assert s["Not imported: empty"][:2] == pytest.approx((1, 1 / 5))
    assert s["Duplicates (not imported)"][:2] == pytest.approx((1, 1 / 5))
    assert s["Do-not-call at import (not imported)"][:2] == pytest.approx((1, 1 / 5))
    assert s["Do-not-call during the campaign"][0] == 1
    assert s["Contact status: completed"][:2] == pytest.approx((1, 1 / 4))
    assert s["Contact status: exhausted"][:2] == pytest.approx((1, 1 / 4))
    assert s["Contact status: dnc"][:2] == pytest.approx((1, 1 / 4))
    assert s["Contact status: pending"][:2] == pytest.approx((1, 1 / 4))
    assert s["Contact status: retry"][:2] == pytest.approx((0, 0))

    # Attempts: 6 real; 5 placed a SIP call (agent_unavailable did not); 3 were answered.
    assert s["Attempts made"][0] == 6
    assert s["Dialed (SIP call placed)"][:2] == pytest.approx((5, 5 / 6))
    assert s["Answered (by a human or a machine)"][:2] == pytest.approx((3, 3 / 6))
    assert s["Answer rate (answered ÷ dialed)"][0] == pytest.approx(3 / 5)
    for outcome in ("answered", "voicemail", "busy", "no_answer", "agent_unavailable"):
        assert s[f"Outcome: {outcome}"][:2] == pytest.approx((1, 1 / 6)), outcome
    assert s["Outcome: (in progress)"][:2] == pytest.approx((1, 1 / 6))
    assert s["Outcome: declined"][:2] == pytest.approx((0, 0))
    # the answering-machine outcomes have their rows, counted or not
    for outcome in ("screened", "ivr", "no_speech"):
        assert s[f"Outcome: {outcome}"][:2] == pytest.approx((0, 0)), outcome

    assert s["Calls recorded by the agent"][0] == 2
    assert s["AMD: human"][:2] == pytest.approx((1, 0.5))
    assert s["AMD: machine"][:2] == pytest.approx((1, 0.5))
    assert s["AMD: uncertain"][:2] == pytest.approx((0, 0))
    for amd in ("voicemail", "screener", "ivr", "silence"):
        assert s[f"AMD: {amd}"][:2] == pytest.approx((0, 0)), amd
    assert s["Disposition: interested"][:2] == pytest.approx((1, 0.5))
    assert s["Disposition: (none)"][:2] == pytest.approx((1, 0.5))
    # Talk time: 120 s (Alice) + 30 s (Bob's machine); Carol's call has not ended.
    assert s["Talk time, total (answer → hang-up)"][0] == timedelta(seconds=150)
    assert s["Talk time, mean (s)"][0] == pytest.approx(75.0)

    samples = {
        "Post-dial delay (dial start → answer)": [4.0, 2.0, 3.0],
        "First-word latency (answer → agent's first audio)": [0.8, 1.6],
        "End-of-turn delay": [0.5, 0.7, 0.6],
        "Transcription delay": [0.2, 0.3],
        "LLM time to first token": [0.4, 0.6, 0.5],
        "TTS time to first byte": [0.3, 0.2, 0.4],
        "Total response latency (callee stops → agent speaks)": [1.2, 1.5, 1.0],
    }
    for label, values in samples.items():
        median, p95, count = s[label][:3]
        assert median == pytest.approx(float(np.percentile(values, 50))), label
        assert p95 == pytest.approx(float(np.percentile(values, 95))), label
        assert count == len(values)
    assert s["Post-dial delay (dial start → answer)"][:2] == pytest.approx((3.0, 3.9))

    assert s["LLM prompt tokens"][0] == 1300
    assert s["LLM completion tokens"][0] == 250
    assert s["TTS characters"][0] == 600
    assert s["STT audio seconds"][0] == pytest.approx(75.0)
    assert s["Telephony seconds (connected)"][0] == pytest.approx(150.0)
    costs = {
        "LLM prompt tokens": 1300 / 1000 * 0.5,
        "LLM completion tokens": 250 / 1000 * 2.0,
        "TTS characters": 600 / 1000 * 0.03,
        "STT audio seconds": 75 / 60 * 0.006,
        "Telephony seconds (connected)": 150 / 60 * 0.01,
    }
    for label, cost in costs.items():
        assert s[label][3] == pytest.approx(cost), label
    assert s["Estimated cost, total"][3] == pytest.approx(sum(costs.values()))
    assert sum(costs.values()) == pytest.approx(1.2005)
    assert any(str(label).startswith("Cost is an estimate") for label in s)


def test_data_sheets_hold_every_row(ledger: Ledger, tmp_path: Path) -> None:
    build_campaign(ledger)
    path = write_report(ledger, "spring-promo", tmp_path / "r.xlsx", now=NOW)
    book = openpyxl.load_workbook(path)

    contacts = sheet_dicts(book, "Contacts")
    assert [c["Name"] for c in contacts] == ["Alice", "Bob", "=1+2", "Dee"]
    alice = contacts[0]
    assert alice["E.164"] == "+14155550101"
    assert alice["Phone as given"] == "(415) 555-0101"
    assert alice["Time zone"] == "America/New_York"
    assert (alice["Attempts"], alice["Final status"], alice["Disposition"]) == (
        2,
        "completed",
        "interested",
    )
    assert (alice["company"], alice["plan"]) == ("Acme", INJECTIONS[6])

    attempts = sheet_dicts(book, "Attempts")
    assert len(attempts) == 6
    a2 = attempts[1]
    # 15:00:02 UTC is 10:00:02 in New York (EST, before the March change).
    assert a2["Dialed (UTC)"] == datetime(2026, 3, 2, 15, 0, 2)
    assert a2["Dialed (local)"] == datetime(2026, 3, 2, 10, 0, 2)
    assert a2["Answered (local)"] == datetime(2026, 3, 2, 10, 0, 6)
    assert a2["Post-dial delay (s)"] == pytest.approx(4.0)
    assert a2["Talk time (s)"] == pytest.approx(120.0)
    assert (a2["AMD result"], a2["Disposition"], a2["End reason"]) == (
        "human",
        "interested",
        "agent_hangup",
    )
    assert attempts[2]["Ended (local)"] == datetime(2026, 3, 2, 16, 0, 33)  # London = UTC
    assert (attempts[0]["SIP status code"], attempts[0]["SIP status"]) == (
        480,
        "Temporarily Unavailable",
    )
    assert attempts[4]["Dialed (UTC)"] is None
    assert attempts[4]["Error"] == "no agent joined within 15 s"
    assert attempts[5]["Outcome"] is None and attempts[5]["Status"] == "in_call"

    turns = sheet_dicts(book, "Turns")
    assert [t["Turn #"] for t in turns] == [0, 1, 2]
    assert turns[2]["Transcription delay (s)"] is None
    assert turns[1]["Total latency (s)"] == pytest.approx(1.5)

    rejected = sheet_dicts(book, "Rejected")
    assert [r["Sheet row"] for r in rejected] == [7, 8, 9, 10, 11]
    assert rejected[1]["Reason"] == "duplicate" and rejected[1]["Duplicate of row"] == 2
    assert rejected[0]["name"] == "Xavier" and rejected[0]["phone"] == "abc"

    for name, rows in (("Contacts", 5), ("Attempts", 7), ("Turns", 4), ("Rejected", 6)):
        ws = book[name]
        assert ws.freeze_panes == "A2", name
        assert ws.auto_filter.ref == f"A1:{openpyxl.utils.get_column_letter(ws.max_column)}{rows}"
        assert ws["A1"].font.b, name
        assert ws.max_row == rows, name
    assert book["Attempts"]["G3"].number_format == "yyyy-mm-dd hh:mm:ss"
    assert book["Attempts"]["D2"].data_type == "s"  # E.164 is text

    with zipfile.ZipFile(path) as z:
        charts = [n for n in z.namelist() if n.startswith("xl/charts/chart")]
    assert len(charts) == 3  # outcomes, latency distribution, calls over time
    # The charts' data: outcome counts, a latency histogram, attempts per bucket of time.
    table = list(book["Charts"].iter_rows(values_only=True))
    assert table[0][:9] == (
        "Outcome",
        "Attempts",
        None,
        "Response latency (s)",
        "Turns",
        None,
        "Hour (UTC)",
        "Dialed",
        "Answered",
    )
    assert sum(row[1] or 0 for row in table[1:]) == 6
    assert sum(row[4] or 0 for row in table[1:]) == 3
    assert sum(row[7] or 0 for row in table[1:]) == 5
    assert sum(row[8] or 0 for row in table[1:]) == 3
    assert table[1][6] == "2026-03-02 14:00"


def test_text_that_looks_like_a_formula_stays_text(ledger: Ledger, tmp_path: Path) -> None:
    build_campaign(ledger)
    path = write_report(ledger, "spring-promo", tmp_path / "r.xlsx", now=NOW)
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if name.startswith("xl/worksheets/"):
                assert b"<f>" not in z.read(name) and b"<f " not in z.read(name), name

    book = openpyxl.load_workbook(path)
    found = {}
    for ws in book.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                if cell.value in INJECTIONS:
                    found[cell.value] = cell
    assert set(found) == set(INJECTIONS)
    for text, cell in found.items():
        assert cell.data_type == "s", text
        assert cell.quotePrefix, text
    e164 = book["Contacts"]["C2"]
    assert (e164.value, e164.data_type, e164.quotePrefix) == ("+14155550101", "s", True)
    assert book["Contacts"]["B2"].quotePrefix is False  # plain text is left alone


def test_empty_campaign_gives_a_valid_workbook_that_says_so(ledger: Ledger, tmp_path: Path) -> None:
    with ledger.session() as session:
        session.add(Campaign(name="quiet"))
    path = write_report(ledger, "quiet", tmp_path / "quiet.xlsx", now=NOW)
    book = openpyxl.load_workbook(path)
    s = summary(book)
    assert any(str(label).startswith("This campaign is empty") for label in s)
    assert s["Contacts imported"][0] == 0
    assert s["Attempts made"][0] == 0
    assert s["Answer rate (answered ÷ dialed)"][0] is None
    assert s["Estimated cost, total"][3] == 0
    assert s["Total response latency (callee stops → agent speaks)"][:3] == (None, None, 0)
    for name in ("Contacts", "Attempts", "Turns", "Rejected"):
        assert book[name].max_row == 1, name
    assert book["Charts"]["A1"].value.startswith("No attempts yet")


def test_two_writers_of_one_path_both_succeed(ledger: Ledger, tmp_path: Path) -> None:
    """Two dialers of one campaign can finish in the same minute and write the same file."""
    build_campaign(ledger)
    out = tmp_path / "same.xlsx"
    with ThreadPoolExecutor(max_workers=2) as pool:
        paths = list(pool.map(lambda _: write_report(ledger, "spring-promo", out, now=NOW), [0, 1]))
    assert paths == [out, out]
    assert summary(openpyxl.load_workbook(out))["Contacts imported"][0] > 0
    assert not list(tmp_path.glob("*.part"))  # no part files left behind


def test_unknown_campaign_is_a_report_error(ledger: Ledger, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no campaign named 'nope'"):
        write_report(ledger, "nope", tmp_path / "x.xlsx")
    assert not (tmp_path / "x.xlsx").exists()


def test_bad_pricing_is_a_report_error(ledger: Ledger, tmp_path: Path) -> None:
    with ledger.session() as s:
        s.add(Campaign(name="pricey", config={"pricing": {"stt_per_minute": -1}}))
    with pytest.raises(ReportError, match=r"pricing.stt_per_minute must be a number >= 0"):
        write_report(ledger, "pricey", tmp_path / "x.xlsx")


def test_default_path_is_under_the_reports_dir(
    sqlite_ledger_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIALER_REPORTS_DIR", str(tmp_path / "reports"))
    get_settings.cache_clear()
    ledger = open_ledger(sqlite_ledger_url)
    try:
        with ledger.session() as s:
            s.add(Campaign(name="spring-promo"))
        path = write_report(ledger, "spring-promo", now=NOW)
    finally:
        ledger.dispose()
        get_settings.cache_clear()
    assert path == tmp_path / "reports" / "spring-promo-20260304-0705.xlsx"
    assert path.is_file()
    assert list(path.parent.iterdir()) == [path]  # no partial file left behind


def _libreoffice(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("libreoffice") or shutil.which("soffice")
    if binary is None:
        pytest.skip("LibreOffice is not installed (Debian: apt-get install libreoffice-calc)")
    profile = (tmp_path / "lo-profile").as_uri()
    return subprocess.run(
        [binary, f"-env:UserInstallation={profile}", "--headless", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("campaign", ["spring-promo", "quiet"])
def test_libreoffice_opens_the_workbook(
    campaign: str, sqlite_ledger_url: str, tmp_path: Path
) -> None:
    ledger = open_ledger(sqlite_ledger_url)
    try:
        if campaign == "quiet":
            with ledger.session() as s:
                s.add(Campaign(name="quiet"))
        else:
            build_campaign(ledger)
        path = write_report(ledger, campaign, tmp_path / f"{campaign}.xlsx", now=NOW)
    finally:
        ledger.dispose()
    out = tmp_path / "pdf"
    done = _libreoffice(["--convert-to", "pdf", "--outdir", str(out), str(path)], tmp_path)
    assert done.returncode == 0, done.stderr
    pdf = out / f"{campaign}.pdf"
    assert pdf.is_file() and pdf.read_bytes().startswith(b"%PDF"), done.stdout + done.stderr


def test_libreoffice_reads_formula_like_text_as_text(
    sqlite_ledger_url: str, tmp_path: Path
) -> None:
    ledger = open_ledger(sqlite_ledger_url)
    try:
        build_campaign(ledger)
        path = write_report(ledger, "spring-promo", tmp_path / "r.xlsx", now=NOW)
    finally:
        ledger.dispose()
    out = tmp_path / "csv"
    # Filter options: comma, double quote, UTF-8, from row 1, ..., -1 = every sheet.
    csv_filter = "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,false,false,false,-1"
    done = _libreoffice(["--convert-to", csv_filter, "--outdir", str(out), str(path)], tmp_path)
    assert done.returncode == 0, done.stderr
    with (out / "r-Contacts.csv").open(encoding="utf-8", newline="") as fh:
        contacts = list(csv.DictReader(fh))
    # Evaluated as formulas these would read 3 and a hyperlink's text "x".
    assert [c["Name"] for c in contacts] == ["Alice", "Bob", "=1+2", "Dee"]
    assert contacts[0]["plan"] == INJECTIONS[6]
    assert contacts[0]["E.164"] == "+14155550101"
    with (out / "r-Turns.csv").open(encoding="utf-8", newline="") as fh:
        turns = list(csv.DictReader(fh))
    assert turns[1]["Callee said"] == "-1+2"
    assert turns[2]["Agent said"] == "@SUM(1,2)"


def test_a_test_campaign_reports_its_test_calls(ledger: Ledger, tmp_path: Path) -> None:
    build_campaign(ledger)
    with ledger.session() as session:
        camp = session.query(Campaign).filter_by(name="spring-promo").one()
        camp.config = {**camp.config, "is_test": True}
    book = openpyxl.load_workbook(write_report(ledger, "spring-promo", tmp_path / "t.xlsx"))
    s = summary(book)
    assert any(str(label).startswith("Test campaign") for label in s)
    assert s["Contacts imported"][0] == 5  # the test contact too
    assert s["Attempts made"][0] == 8  # and both test attempts
    assert s["Calls recorded by the agent"][0] == 4
    assert s["LLM prompt tokens"][0] == 1300 + 2 * 10**6
    assert s["Test attempts left out"][0] == 0
    assert book["Attempts"].max_row == 9


def test_dialer_report_command(sqlite_ledger_url: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from campaign.cli import app

    ledger = open_ledger(sqlite_ledger_url)
    try:
        build_campaign(ledger)
    finally:
        ledger.dispose()
    target = tmp_path / "book.xlsx"
    runner = CliRunner()
    done = runner.invoke(
        app, ["report", "spring-promo", "--out", str(target), "--db", sqlite_ledger_url]
    )
    assert done.exit_code == 0, done.output
    assert str(target) in done.output.replace("\n", "")
    assert summary(openpyxl.load_workbook(target))["Attempts made"][0] == 6

    missing = runner.invoke(app, ["report", "nope", "--db", sqlite_ledger_url])
    assert missing.exit_code == 1
    assert "no campaign named 'nope'" in missing.output
    assert "Traceback" not in missing.output
