"""A real desk for the tests: the FastAPI app on uvicorn, on a free port, on a real ledger."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import uvicorn

from campaign.config import load_settings
from campaign.runner import dial_campaign
from campaign.scheduler import CampaignScheduler
from campaign.store import Ledger, open_ledger
from campaign.store import users as user_store
from campaign.web import create_app

PASSWORD = "correct horse battery"
#: the upload limit of the test desk: small, so the 413 test sends little
MAX_UPLOAD_MB = 0.2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningDesk:
    url: str
    ledger: Ledger
    scheduler: CampaignScheduler

    def client(self, name: str | None = None) -> Client:
        client = Client(self.url)
        if name is not None:
            client.login(name)
        return client


class Client(requests.Session):
    """A browser-like session: cookies, and the CSRF token the pages hand out."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base
        self.csrf = ""
        self.headers["Accept"] = "text/html,application/xhtml+xml,*/*;q=0.8"  # as a browser

    def request(
        self, method: str | bytes, url: str | bytes, *a: object, **kw: object
    ) -> requests.Response:  # type: ignore[override]
        kw.setdefault("timeout", 30)
        kw.setdefault("allow_redirects", False)
        full = url if str(url).startswith("http") else self.base + str(url)
        return super().request(method, full, *a, **kw)  # type: ignore[arg-type]

    def login(self, name: str, password: str = PASSWORD) -> requests.Response:
        page = self.get("/login")
        token = re.search(r'name="login_csrf" value="([^"]+)"', page.text)
        assert token, page.text
        response = self.post(
            "/login", data={"name": name, "password": password, "login_csrf": token.group(1)}
        )
        if response.status_code == 303:
            self.refresh_csrf()
        return response

    def refresh_csrf(self) -> None:
        page = self.get("/")
        found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert found, page.text
        self.csrf = found.group(1)

    def form(self, url: str, data: dict[str, str] | None = None, **kw: object) -> requests.Response:
        """A form post as the pages send it, with the CSRF token."""
        return self.post(url, data={"csrf_token": self.csrf, **(data or {})}, **kw)


def start_desk(ledger_url: str, tmp_path: Path) -> Iterator[RunningDesk]:
    ledger = open_ledger(ledger_url)
    settings = load_settings(DESK_MAX_UPLOAD_MB=MAX_UPLOAD_MB, DESK_LOGIN_ATTEMPTS=3)
    scheduler = CampaignScheduler(
        ledger, campaigns_dir=tmp_path / "campaigns", reports_dir=tmp_path, dialer=dial_campaign
    )
    (tmp_path / "campaigns").mkdir(exist_ok=True)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(ledger, settings, scheduler),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the desk did not start"
        time.sleep(0.05)
    try:
        yield RunningDesk(f"http://127.0.0.1:{port}", ledger, scheduler)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        ledger.dispose()


@pytest.fixture
def desk(any_ledger_url: str, tmp_path: Path) -> Iterator[RunningDesk]:
    """The desk on SQLite and on PostgreSQL, with an operator `olga` and a viewer `victor`."""
    for running in start_desk(any_ledger_url, tmp_path):
        user_store.add_user(running.ledger, "olga", PASSWORD, user_store.Role.OPERATOR)
        user_store.add_user(running.ledger, "victor", PASSWORD, user_store.Role.VIEWER)
        yield running
