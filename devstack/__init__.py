"""A real LiveKit stack on loopback: Redis, livekit-server, livekit-sip and sipp phones.

`python -m devstack up|down|status|env|install`; from Python, `env()` gives the
variables the dialer, the agent and the tests need, and `devstack.phones` the number
table and the phones' log. See docs/devstack.md.
"""

from __future__ import annotations

from devstack import config
from devstack.errors import DevstackError

__all__ = ["DevstackError", "config", "env"]


def env() -> dict[str, str]:
    """The variables in `.devstack/env` (LIVEKIT_URL, keys, SIP_OUTBOUND_TRUNK_ID)."""
    try:
        text = config.ENV_FILE.read_text()
    except FileNotFoundError:
        raise DevstackError(
            f"{config.ENV_FILE} not found: start the stack with `python -m devstack up`"
        ) from None
    values = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values[key.strip()] = value.strip()
    return values
