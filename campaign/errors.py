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

from pydantic import ValidationError


class UserError(Exception):
    """An error the user can fix; its message is one line that says what and how."""

    exit_code: int = 1


def validation_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """Each problem pydantic found, once, as (where, message) for a one-line error.

    `where` is the dotted location ("" for the whole input) without the names pydantic
    gives the branches of a union (`RetryRule`, `literal['never']`); the message loses
    pydantic's "Value error, " prefix. A rule-or-"never" field reports both branches: the
    "should be 'never'" one is dropped when the rule's own error is already there.
    """
    problems: list[tuple[str, str]] = []
    for err in exc.errors():
        message = str(err["msg"]).removeprefix("Value error, ")
        loc = [str(part) for part in err["loc"] if not str(part).startswith(_BRANCH_NAMES)]
        where = ".".join(loc)
        if message == "Input should be 'never'" and any(
            earlier.startswith(where) for earlier, _ in problems
        ):
            continue
        if (where, message) not in problems:
            problems.append((where, message))
    return problems


_BRANCH_NAMES = ("RetryRule", "literal[")
