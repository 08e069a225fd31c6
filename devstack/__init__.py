"""A real LiveKit stack on loopback: Redis, livekit-server, livekit-sip and sipp phones.

`python -m devstack up|down|status|env|install`; from Python, `env()` gives the
variables the dialer, the agent and the tests need, and `devstack.phones` the number
table and the phones' log. See docs/devstack.md.
"""

from __future__ import annotations

from dotenv import dotenv_values

from devstack import config
from devstack.errors import DevstackError

__all__ = ["DevstackError", "config", "env"]


def env() -> dict[str, str]:
    """The variables in `.devstack/env` (LIVEKIT_URL, keys, SIP_OUTBOUND_TRUNK_ID)."""
    if not config.ENV_FILE.is_file():
        raise DevstackError(
            f"{config.ENV_FILE} not found: start the stack with `python -m devstack up`"
        )
    return {key: value or "" for key, value in dotenv_values(config.ENV_FILE).items()}
