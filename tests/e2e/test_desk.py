"""The desk end to end: `dialer serve` against the devstack with the real agent worker.

The browser test drives a real headless Chromium (Debian's `chromium`, through
`chromium-driver` and Selenium): sign in, upload `campaigns/demo.csv`, see its rejected
row and the reason, create the campaign from the form, add a sheet whose contact is named
`<script>alert(1)</script>`, start, watch the progress reach the end, open an answered
call's transcript, download the workbook and open it. Screenshots of each page are kept
in `test-artifacts/desk/` (git-ignored).

The replica test runs two `dialer serve` processes on one PostgreSQL ledger and starts one
campaign through the API: every contact is dialed exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openpyxl
import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy import func, select

from campaign.store import Attempt, Contact, open_ledger
from campaign.store import users as user_store
from campaign.store.models import CampaignRun
from campaign.telephony import mask_number
from devstack import phones
from devstack.phones import Behaviour
from tests.e2e.agent_worker import start_agent_worker
from tests.pg import create_database
from tests.web.conftest import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "desk"
PASSWORD = "operator-password"
XSS = "<script>alert(1)</script>"


@contextmanager
def dialer_serve(workdir: Path, env: dict[str, str], name: str) -> Iterator[str]:
    """`dialer serve` on a free port; yields its base URL; SIGTERM at the end (exit 0)."""
    port = free_port()
    log_path = workdir / f"{name}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "campaign", "serve", "--port", str(port),
             "--campaigns-dir", str(workdir / "campaigns")],
            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{base}/health", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
        yield base
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(tmp_path / "downloads"),
                  "download.prompt_for_download": False},
    )  # fmt: skip
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: WebDriver, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, min(max(int(height) + 120, 600), 4000))
    driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def no_dialog(driver: WebDriver) -> None:
    """A script smuggled in through a sheet or a transcript would have opened an alert."""
    try:
        text = driver.switch_to.alert.text
    except NoAlertPresentException:
        return
    pytest.fail(f"a dialog opened: {text!r}")


def wait_until(what: str, timeout: float, condition: object) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def page_has(driver: WebDriver, text: str, timeout: float = 30) -> None:
    """Wait for a navigation to land on a page that shows `text`."""
    wait_until(f"a page showing {text!r}", timeout, lambda: text in driver.page_source)


def fill(driver: WebDriver, values: dict[str, str]) -> None:
    for name, value in values.items():
        field = driver.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)


def test_the_desk_in_a_browser(
    browser: WebDriver, tmp_path: Path, devstack_env: dict[str, str]
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    user_store.add_user(ledger, "olga", PASSWORD, user_store.Role.OPERATOR)
    (tmp_path / "campaigns").mkdir()
    env = {**os.environ, **devstack_env, "DIALER_DATABASE_URL": url,
           "DIALER_REPORTS_DIR": str(tmp_path / "reports")}  # fmt: skip
    xss_sheet = tmp_path / "more.csv"
    xss_sheet.write_text(f"Name,Phone,Plan\n{XSS},{phones.number_for(Behaviour.TALKS, 5)},basic\n")
    with (
        start_agent_worker(database_url=url, env=devstack_env) as worker,
        dialer_serve(tmp_path, env, "serve") as base,
    ):
        driver = browser
        driver.get(f"{base}/")  # anonymous: sent to sign in
        assert driver.current_url.endswith("/login")
        shot(driver, "login")
        fill(driver, {"name": "olga", "password": PASSWORD})
        driver.find_element(By.CSS_SELECTOR, "#login button").click()
        page_has(driver, "No campaigns yet")
        shot(driver, "campaigns-empty")

        driver.get(f"{base}/campaigns/new")
        driver.find_element(By.NAME, "sheet").send_keys(str(ROOT / "campaigns" / "demo.csv"))
        driver.find_element(By.CSS_SELECTOR, "#upload button").click()
        page_has(driver, 'id="problems"')
        problems = driver.find_element(By.ID, "problems").text
        assert "call me maybe" in problems and "unparseable" in problems, problems
        assert "1 rejected" in driver.find_element(By.ID, "preview").text
        fill(driver, {
            "name": "desk-demo",
            "time_zone": "America/New_York",
            "calling_hours.start": "00:00",
            "calling_hours.end": "24:00",
            "calling_hours.days": "all",
            "max_concurrent_calls": "4",
            "ringing_timeout": "20s",
            "max_call_duration": "90s",
            "agent_join_timeout": "30s",
            "retry.max_attempts": "1",
            "agent_name": worker.agent_name,
            "script.greeting": "Hello {name}, this is Ada calling about your {Plan} plan.",
            "voicemail_message": "Hello {name}, please call us back. Goodbye.",
        })  # fmt: skip
        driver.find_element(By.NAME, "calling_hours.override_legal_limits").click()
        shot(driver, "new-campaign")
        driver.find_element(By.NAME, "create").click()
        page_has(driver, "Campaign desk-demo created: 8 contact(s) imported")
        assert driver.current_url.endswith("/campaigns/desk-demo")

        driver.get(f"{base}/campaigns/desk-demo/contacts")
        driver.find_element(By.NAME, "sheet").send_keys(str(xss_sheet))
        driver.find_element(By.CSS_SELECTOR, "form[enctype] button").click()
        page_has(driver, "Import 1 contact(s)")
        driver.find_element(By.XPATH, "//button[starts-with(normalize-space(), 'Import')]").click()
        page_has(driver, "1 new contact(s)")
        no_dialog(driver)

        driver.find_element(By.NAME, "start").click()
        page_has(driver, "Start requested")

        def finished() -> bool:
            done = driver.find_element(By.ID, "done").text
            total = driver.find_element(By.ID, "contacts").text
            running = driver.find_element(By.ID, "run-state").text
            return done == total == "9" and running == "not running"

        wait_until("the campaign to reach the end", 420, finished)  # updated by desk.js
        no_dialog(driver)
        driver.refresh()
        shot(driver, "campaign")
        assert XSS in driver.find_element(By.ID, "attempts").text  # shown as text
        no_dialog(driver)

        driver.get(f"{base}/campaigns/desk-demo?outcome=answered")
        driver.find_element(By.CSS_SELECTOR, "#attempts tbody tr td a").click()
        page_has(driver, 'id="transcript"')
        transcript = driver.find_element(By.ID, "transcript").text
        assert "Ada" in transcript, transcript
        assert driver.find_element(By.ID, "outcome").text.startswith("answered")
        shot(driver, "attempt")
        no_dialog(driver)

        # A test call from the campaign page, as `dialer call`: it shows in the attempts.
        driver.get(f"{base}/campaigns/desk-demo")
        busy = phones.number_for(Behaviour.BUSY, 7)
        fill(driver, {"number": busy, "callee": "Tess Call"})
        driver.find_element(By.XPATH, "//button[starts-with(normalize-space(), 'Call it')]").click()
        page_has(driver, f"Test call to {mask_number(busy)}")

        def test_call_done() -> bool:
            driver.get(f"{base}/campaigns/desk-demo?outcome=busy")
            rows = driver.find_element(By.ID, "attempts").text
            return "Tess Call" in rows and "test call" in rows

        wait_until("the test call to end busy", 120, test_call_done)

        driver.get(f"{base}/campaigns/desk-demo")
        driver.find_element(By.ID, "workbook").click()
        downloads = tmp_path / "downloads"
        wait_until("the workbook download", 60, lambda: list(downloads.glob("desk-demo-*.xlsx")))
        (path,) = downloads.glob("desk-demo-*.xlsx")
        book = openpyxl.load_workbook(path, read_only=True)
        assert {"Summary", "Contacts", "Attempts"} <= set(book.sheetnames)
        attempts_sheet = book["Attempts"]
        assert attempts_sheet.max_row >= 10  # a header and nine attempts

        for page in ("schedules", "dnc", "doctor"):
            driver.get(f"{base}/{page}")
            shot(driver, page)
        driver.set_window_size(390, 844)  # a phone
        driver.get(f"{base}/campaigns/desk-demo")
        shot(driver, "campaign-phone")
        driver.get(f"{base}/")
        shot(driver, "campaigns")
        no_dialog(driver)

    with ledger.session() as s:
        per_contact = s.execute(
            select(Attempt.contact_id, func.count())
            .where(Attempt.dial_started_at.is_not(None))
            .group_by(Attempt.contact_id)
        ).all()
    # one dial each, and the test call's contact (kept apart from the campaign's)
    assert len(per_contact) == 10 and all(n == 1 for _, n in per_contact)
    ledger.dispose()


def test_two_replicas_on_postgresql_dial_each_contact_once(
    tmp_path: Path, devstack_env: dict[str, str], postgres_url: str
) -> None:
    url = create_database(postgres_url)
    ledger = open_ledger(url)
    user_store.add_user(ledger, "olga", PASSWORD, user_store.Role.OPERATOR)
    token = user_store.create_token(ledger, "olga", "test")
    auth = {"Authorization": f"Bearer {token}"}
    (tmp_path / "campaigns").mkdir()
    env = {**os.environ, **devstack_env, "DIALER_DATABASE_URL": url,
           "DIALER_REPORTS_DIR": str(tmp_path / "reports")}  # fmt: skip
    behaviours = [Behaviour.BUSY, Behaviour.DECLINES, Behaviour.UNKNOWN_NUMBER]
    rows = [
        {"Name": f"Contact {i}", "Phone": phones.number_for(behaviours[i % 3], 20 + i)}
        for i in range(12)
    ]
    with (
        start_agent_worker(database_url=url, env=devstack_env) as worker,
        dialer_serve(tmp_path, env, "replica-1") as one,
        dialer_serve(tmp_path, env, "replica-2") as two,
    ):
        campaign = {
            "name": "twice",
            "agent_name": worker.agent_name,
            "max_concurrent_calls": 4,
            "calls_per_second": 4,
            "agent_join_timeout": "30s",
            "calling_hours": {"start": "00:00", "end": "24:00", "days": "all",
                              "override_legal_limits": True},
            # no agent free in time (a busy machine): not dialed, tried again soon
            "retry": {"max_attempts": 1, "agent_unavailable": {"delay": "3s", "max_attempts": 20}},
        }  # fmt: skip
        assert requests.post(f"{one}/api/campaigns", json=campaign, headers=auth,
                             timeout=30).status_code == 201  # fmt: skip
        added = requests.post(f"{two}/api/campaigns/twice/contacts", json={"rows": rows},
                              headers=auth, timeout=30).json()  # fmt: skip
        assert added["new"] == 12
        started = requests.post(f"{two}/api/campaigns/twice/start", headers=auth, timeout=30)
        assert started.status_code == 202

        def done() -> bool:
            status = requests.get(f"{one}/api/campaigns/twice/status", headers=auth, timeout=30)
            body = status.json()
            return bool(body["done"] == 12 and not body["running"])

        wait_until("both replicas to finish the campaign", 300, done)

    with ledger.session() as s:
        dialed = select(Attempt).where(Attempt.dial_started_at.is_not(None))
        per_contact = dict(
            s.execute(
                dialed.with_only_columns(Attempt.contact_id, func.count()).group_by(
                    Attempt.contact_id
                )
            ).all()
        )
        contacts = s.scalar(select(func.count()).select_from(Contact))
        runs = s.scalars(select(CampaignRun).where(CampaignRun.campaign == "twice")).all()
        outcomes = sorted({a.outcome or "" for a in s.scalars(dialed)})
    assert contacts == 12
    assert sorted(per_contact.values()) == [1] * 12  # everybody dialed, nobody twice
    assert outcomes == ["busy", "declined", "invalid_number"]
    assert [(r.trigger, r.status) for r in runs] == [("desk", "done")]  # one run, one replica
    ledger.dispose()
