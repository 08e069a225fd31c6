"""The one error a contact sheet (or an option about it) raises."""

from __future__ import annotations

from campaign.errors import UserError


class SheetError(UserError, ValueError):
    """The sheet (or an option about it) cannot be used; the message is for the user.

    `line` is the line of a text file the problem is on, when there is one."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line
