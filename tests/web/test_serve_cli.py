"""`dialer user add`, `dialer token create` and `dialer serve` as a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.web.conftest import free_port

pytestmark = pytest.mark.integration


def dialer(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "campaign", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_users_tokens_and_serve(tmp_path: Path) -> None:
    env = {**os.environ, "DIALER_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}
    added = dialer("user", "add", "olga", "--role", "operator", "--password", "pw-long-enough",
                   env=env, cwd=tmp_path)  # fmt: skip
    assert added.returncode == 0, added.stderr
    twice = dialer("user", "add", "olga", "--password", "pw-long-enough", env=env, cwd=tmp_path)
    assert twice.returncode == 1
    assert "already exists" in twice.stderr
    short = dialer("user", "add", "vic", "--password", "short", env=env, cwd=tmp_path)
    assert short.returncode == 1 and "at least 8" in short.stderr
    created = dialer("token", "create", "--user", "olga", "--label", "crm", env=env, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("dsk_") and "not shown again" in created.stderr
    assert dialer("token", "create", "--user", "nobody", env=env, cwd=tmp_path).returncode == 1

    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "campaign", "serve", "--port", str(port)],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                health = requests.get(f"{base}/health", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline, "dialer serve did not come up"
                time.sleep(0.2)
        assert health.json() == {"ok": True, "ledger": "ok"}
        auth = {"Authorization": f"Bearer {token}"}
        assert requests.get(f"{base}/api/campaigns", headers=auth, timeout=10).json() == []
        assert requests.get(f"{base}/api/campaigns", timeout=10).status_code == 401
        # Behind an HTTPS proxy (on loopback, trusted by default) the cookies are Secure.
        proxied = {"X-Forwarded-Proto": "https"}
        page = requests.get(f"{base}/login", headers=proxied, timeout=10)
        assert "Secure" in page.headers["set-cookie"]
        login_token = page.cookies["desk_login_csrf"]
        signed_in = requests.post(
            f"{base}/login",
            data={"name": "olga", "password": "pw-long-enough", "login_csrf": login_token},
            headers={**proxied, "Cookie": f"desk_login_csrf={login_token}"},
            allow_redirects=False, timeout=10,
        )  # fmt: skip
        assert signed_in.status_code == 303
        assert "Secure" in signed_in.headers["set-cookie"]
        assert "HttpOnly" in signed_in.headers["set-cookie"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, (tmp_path / "serve.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    output = (tmp_path / "serve.log").read_text()
    assert token not in output
    assert "pw-long-enough" not in output


def test_an_unknown_role_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "DIALER_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}"}
    wrong = dialer("user", "add", "olga", "--role", "admin", "--password", "pw-long-enough",
                   env=env, cwd=tmp_path)  # fmt: skip
    assert wrong.returncode == 1
    assert "role 'admin': use operator or viewer" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    listed = dialer("user", "list", env=env, cwd=tmp_path)
    assert "No users" in listed.stdout
