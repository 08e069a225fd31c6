"""`python -m campaign` runs the `dialer` command."""

from __future__ import annotations

from campaign.cli import main

main()
