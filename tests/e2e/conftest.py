"""The devstack (Redis, livekit-server, livekit-sip, sipp phones) for tests marked e2e.

The stack comes up once per session, on first use. A stack that is already up and
healthy (another session's, or one started by hand with `python -m devstack up`) is
reused and left running; only the parts this session started are stopped at its end,
and not even those when DEVSTACK_KEEP=1.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

import devstack
from devstack import stack


@pytest.fixture(scope="session")
def devstack_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET, SIP_OUTBOUND_TRUNK_ID of the stack,
    also set in os.environ for the session so settings read from the environment see it."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    # The first run builds LiveKit for minutes: let its progress lines through.
    quiet = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    try:
        with quiet:
            started = stack.up()
    except devstack.DevstackError as exc:
        pytest.fail(f"devstack did not come up: {exc}", pytrace=False)
    values = devstack.env()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in values.items():
            patch.setenv(key, value)
        yield values
    if started and os.environ.get("DEVSTACK_KEEP") != "1":
        stack.down(started)


@pytest.fixture(autouse=True)
def _stack_for_e2e(request: pytest.FixtureRequest) -> None:
    """Every test marked e2e gets the stack, whether or not it asks for devstack_env."""
    if request.node.get_closest_marker("e2e") is not None:
        request.getfixturevalue("devstack_env")
