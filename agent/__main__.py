"""`python -m agent [--env-file PATH] start|dev|...`: run the worker with the framework's CLI.

Reads `.env` (or PATH) without overriding the environment, checks settings and
brings the ledger schema up to date once, then hands over to LiveKit's CLI.
"""

from __future__ import annotations

import sys
import warnings

from dotenv import load_dotenv
from livekit.agents import cli

from agent.worker import build_server
from campaign.config import ProviderMode, SettingsError, load_settings
from campaign.store import LedgerError, open_ledger

#: Commands that run jobs; only these need settings and the ledger.
_RUN_COMMANDS = frozenset({"start", "dev", "console", "connect"})


def main() -> None:
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "--env-file":
        load_dotenv(args[1])
        del sys.argv[1:3]
    else:
        load_dotenv()
    try:
        settings = load_settings()
        if sys.argv[1:2] and sys.argv[1] in _RUN_COMMANDS:
            if settings.agent_providers is ProviderMode.CLOUD:
                settings.require("deepgram_api_key", "openai_api_key", "cartesia_api_key")
            open_ledger(settings.database_url).dispose()
    except (SettingsError, LedgerError) as exc:
        sys.stderr.write(f"agent: {exc}\n")
        raise SystemExit(2) from None
    # `python -m agent start|dev` is the entry point the project documents
    warnings.filterwarnings("ignore", "the built-in Python CLI is deprecated", DeprecationWarning)
    cli.run_app(build_server(settings))


if __name__ == "__main__":
    main()
