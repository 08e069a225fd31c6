"""A campaign's inbox folder: sheets dropped into `campaigns/<name>/inbox/` are imported once.

An imported sheet moves to `processed/`; a sheet that fails for any reason (unreadable,
too big, refused by the ledger, a bug) moves to `failed/` beside a `<file>.error.txt`
saying why, so it never blocks the runs after it. Only a fault of the environment the
importer names (the ledger unreachable) leaves it in the inbox for the next run.

Both get a UTC time-stamp prefix taken from the file's modification time, so the same
file name dropped every day never collides and a pick-up interrupted between import and
move is retried under the same name (the import is idempotent). Hidden and temporary
names are left alone, and so is a file modified in the last few seconds: it may still be
being copied in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Generic, TypeVar

from campaign.errors import UserError

logger = logging.getLogger(__name__)

#: Leave files younger than this alone: a copy into the inbox may still be in progress.
DEFAULT_MIN_AGE_SECONDS = 10.0
_TEMPORARY_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", ".swp")

T = TypeVar("T")


@dataclass(frozen=True)
class InboxPaths:
    """The three folders of one campaign's inbox."""

    root: Path  # campaigns/<name>

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def processed(self) -> Path:
        return self.root / "processed"

    @property
    def failed(self) -> Path:
        return self.root / "failed"


@dataclass
class PickUp(Generic[T]):
    """What one pick-up did: each imported sheet's result, each failed sheet's reason."""

    imported: list[tuple[Path, T]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def waiting_sheets(inbox: Path, *, min_age_seconds: float, now: float | None = None) -> list[Path]:
    """Files ready to import, oldest first."""
    if not inbox.is_dir():
        return []
    now = time.time() if now is None else now
    ready = []
    for path in inbox.iterdir():
        name = path.name
        if not path.is_file() or name.startswith((".", "~$")):
            continue
        if name.lower().endswith(_TEMPORARY_SUFFIXES):
            continue
        if now - path.stat().st_mtime < min_age_seconds:
            logger.info("inbox: %s is still being written; next run picks it up", name)
            continue
        ready.append(path)
    return sorted(ready, key=lambda p: (p.stat().st_mtime, p.name))


def stamped_name(path: Path) -> str:
    """`20261125T190000Z-contacts.csv`: the time stamp is the file's mtime, so it is stable."""
    mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return f"{mtime:%Y%m%dT%H%M%SZ}-{path.name}"


def pick_up(
    paths: InboxPaths,
    importer: Callable[[Path, str], T],
    *,
    min_age_seconds: float = DEFAULT_MIN_AGE_SECONDS,
    keep_on: tuple[type[Exception], ...] = (),
) -> PickUp[T]:
    """Import every waiting sheet with `importer(path, source)`, then move it.

    `source` is the path the sheet will have afterwards (in `processed/`), so the
    ledger's rows point at a file that exists. Any exception from the importer sends
    the sheet to `failed/` with its reason, except those in `keep_on` (the ledger is
    down, say): they leave it in the inbox for the next run and propagate.
    """
    result: PickUp[T] = PickUp()
    for sheet in waiting_sheets(paths.inbox, min_age_seconds=min_age_seconds):
        stamped = stamped_name(sheet)
        source = str(paths.processed / stamped)
        try:
            imported = importer(sheet, source)
        except keep_on:
            raise
        except Exception as exc:
            result.failed.append((_fail(paths, sheet, stamped, exc), _reason(exc)))
            continue
        paths.processed.mkdir(parents=True, exist_ok=True)
        target = paths.processed / stamped
        sheet.replace(target)
        logger.info("inbox: imported %s (moved to %s)", sheet.name, target)
        result.imported.append((target, imported))
    return result


def _reason(exc: Exception) -> str:
    """One line: a user error's message; anything else also names its type."""
    text = " ".join(str(exc).split())
    if isinstance(exc, UserError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fail(paths: InboxPaths, sheet: Path, stamped: str, exc: Exception) -> Path:
    reason = _reason(exc)
    paths.failed.mkdir(parents=True, exist_ok=True)
    target = paths.failed / stamped
    sheet.replace(target)
    target.with_name(target.name + ".error.txt").write_text(reason + "\n")
    if isinstance(exc, UserError):
        logger.warning("inbox: %s failed: %s (moved to %s)", sheet.name, reason, target)
    else:  # a bug or a library's surprise: keep the traceback for whoever fixes it
        logger.error("inbox: %s failed: %s (moved to %s)", sheet.name, reason, target, exc_info=exc)
    return target
