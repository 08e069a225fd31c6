"""A throwaway PostgreSQL cluster on loopback, from Debian's binaries, for the tests.

Set DIALER_TEST_POSTGRES_URL to use a server you already run instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed: `apt-get install postgresql` (make setup does it)"
        )
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_owner(cmd: list[str], owner: str | None) -> list[str]:
    # PostgreSQL refuses to run as root; run it as the Debian `postgres` user.
    return ["runuser", "-u", owner, "--", *cmd] if owner else cmd


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield an admin URL (`postgresql://user@127.0.0.1:port/postgres`) of a fresh cluster."""
    external = os.environ.get("DIALER_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    bin_dir = _bin_dir()
    owner = None
    if os.geteuid() == 0:
        owner = "postgres"
        pwd.getpwnam(owner)  # KeyError names the missing user
    root = Path(tempfile.mkdtemp(prefix="dialer-pg-"))
    data = root / "data"
    if owner:
        shutil.chown(root, owner, owner)
    user = owner or pwd.getpwuid(os.geteuid()).pw_name
    port = _free_port()
    subprocess.run(
        _as_owner([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", user], owner),
        check=True,
        capture_output=True,
        timeout=120,
    )
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root}"
    options += " -c fsync=off -c synchronous_commit=off -c max_connections=200"
    subprocess.run(
        _as_owner(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(root / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            owner,
        ),
        check=True,
        capture_output=True,
        timeout=90,
    )
    try:
        yield f"postgresql://{user}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_owner([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], owner),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


def create_database(admin_url: str) -> str:
    """Create an empty database on the server and return its URL."""
    name = f"dialer_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def admin(admin_url: str, sql: str) -> None:
    """Run one statement as the server's owner (outside any transaction)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.encode())


def drop_connections(admin_url: str, database: str) -> None:
    """Kill every backend connected to `database`, as a server restart would."""
    admin(
        admin_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        f" WHERE datname = '{database}' AND pid <> pg_backend_pid()",
    )


@contextmanager
def refused(admin_url: str, database: str) -> Iterator[None]:
    """`database` refuses connections, and loses those it had, for the `with` block."""
    admin(admin_url, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    try:
        drop_connections(admin_url, database)
        yield
    finally:
        admin(admin_url, f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
