"""The one error devstack raises, and the log tail it carries."""

from __future__ import annotations

from pathlib import Path


class DevstackError(RuntimeError):
    """A part of the stack could not be installed or started; the message says which."""


def tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"  (no log at {path})"
    return "\n".join("  " + line for line in text.splitlines()[-lines:])
