"""The root of every error a user can act on.

Each user-facing error class derives from `UserError` and carries its own exit code, so
the CLI (and the web desk) print one line and exit with that code without mapping
anything by hand. Exit codes:

| code | meaning |
|---:|---|
| 1 | bad input: a sheet, a campaign file, a setting, a name, a number |
| 2 | command-line usage (typer's own) |
| 3 | LiveKit unreachable, hung or refusing the credentials |
| 4 | the ledger unreachable or unusable |
| 5 | a run gave up waiting for a part that stayed down (`--max-wait`) |
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix; its message is one line that says what and how."""

    exit_code: int = 1
